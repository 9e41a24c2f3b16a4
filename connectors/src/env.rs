//! `${VAR}` references in configuration values, so secrets live in the
//! environment and never in the file (nor, therefore, in logs of the file).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// Expands every `${NAME}` in `raw` from `lookup`. `$${` is a literal `${`.
pub fn expand_with(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find("${") {
        if rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated '${{' in \"{raw}\""))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid environment variable name '{name}'"));
        }
        let value =
            lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands `${NAME}` from the process environment.
pub fn expand(raw: &str) -> Result<String, String> {
    expand_with(raw, |name| std::env::var(name).ok())
}

/// A string config value with `${ENV}` references expanded when the file is read.
/// Its `Debug` output never shows the value: it may be a secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EnvString(String);

impl EnvString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EnvString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvString(***)")
    }
}

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand(&raw)
            .map(EnvString)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER" => Some("ann".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references() {
        assert_eq!(
            expand_with("a ${USER} b ${EMPTY}c", env).as_deref(),
            Ok("a ann b c")
        );
        assert_eq!(expand_with("no refs", env).as_deref(), Ok("no refs"));
        assert_eq!(expand_with("$${USER}", env).as_deref(), Ok("${USER}"));
    }

    #[test]
    fn missing_or_bad_references_fail_by_name() {
        assert_eq!(
            expand_with("${NOPE}", env),
            Err("environment variable NOPE is not set".into())
        );
        assert!(expand_with("${USER", env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(expand_with("${a-b}", env).unwrap_err().contains("invalid"));
    }

    #[test]
    fn debug_hides_the_value() {
        assert_eq!(format!("{:?}", EnvString::new("hunter2")), "EnvString(***)");
    }

    #[test]
    fn expansion_never_panics_and_keeps_plain_text() {
        // A small exhaustive property check over short strings from a hostile alphabet.
        let alphabet = ['$', '{', '}', 'U', 'S', 'E', 'R', 'x', ' '];
        let mut stack = vec![String::new()];
        while let Some(s) = stack.pop() {
            let r = expand_with(&s, env);
            if !s.contains("${") {
                assert_eq!(r.as_deref(), Ok(s.as_str()));
            }
            if s.len() < 6 {
                for c in alphabet {
                    stack.push(format!("{s}{c}"));
                }
            }
        }
    }
}
