//! `ByteSize`: a size in the config file, as a number of bytes or with a unit. A leaf
//! module, so every section's config (also `catalog::config`) may use it.

use serde::Deserialize;

/// A size in bytes written as a number or as "512MiB", "2GiB", "100MB".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = (s[..split].trim(), s[split..].trim());
        let n: f64 = num.parse().map_err(|_| format!("invalid size '{s}'"))?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            "tib" | "t" => 1 << 40,
            _ => {
                return Err(format!(
                    "unknown size unit '{unit}' in '{s}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB)"
                ))
            }
        };
        if !(n.is_finite() && n >= 0.0) {
            return Err(format!("invalid size '{s}'"));
        }
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("2GiB"), Ok(ByteSize(2 << 30)));
        assert_eq!(ByteSize::parse("512 MiB"), Ok(ByteSize(512 << 20)));
        assert_eq!(ByteSize::parse("100MB"), Ok(ByteSize(100_000_000)));
        assert_eq!(ByteSize::parse("42"), Ok(ByteSize(42)));
        assert!(ByteSize::parse("-1GiB").is_err());
        assert!(ByteSize::parse("GiB").is_err());
    }
}
