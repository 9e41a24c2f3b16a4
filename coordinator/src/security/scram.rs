//! SCRAM-SHA-256 (RFC 5802, RFC 7677), the password exchange of the PostgreSQL
//! protocol, with PostgreSQL's own verifier format
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (what `quiver passwd
//! --scram` prints, and what a PostgreSQL server keeps in `pg_authid`). The server
//! keeps only StoredKey and ServerKey: neither the password nor a key that logs in.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

pub const ITERATIONS: u32 = 4096;

#[derive(Clone, Debug, PartialEq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

fn salted(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        n,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

impl Verifier {
    /// A new verifier for `password` with a random salt.
    pub fn new(password: &str) -> Result<Self, String> {
        let mut salt = vec![0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| "no system randomness".to_string())?;
        Ok(Self::with_salt(password, salt, ITERATIONS))
    }

    pub fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted(password, &salt, iterations);
        let client_key = mac(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key)
            .as_ref()
            .to_vec();
        let server_key = mac(&salted, b"Server Key");
        Self {
            iterations,
            salt,
            stored_key,
            server_key,
        }
    }

    /// Parses PostgreSQL's format; None when `text` is not a SCRAM verifier.
    pub fn parse(text: &str) -> Option<Result<Self, String>> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let parse = || -> Result<Self, String> {
            let (params, keys) = rest.split_once('$').ok_or("no '$' before the keys")?;
            let (iterations, salt) = params
                .split_once(':')
                .ok_or("no ':' between iterations and salt")?;
            let (stored, server) = keys
                .split_once(':')
                .ok_or("no ':' between StoredKey and ServerKey")?;
            let b64 = |s: &str, what: &str| {
                B64.decode(s)
                    .map_err(|e| format!("{what} is not base64: {e}"))
            };
            let v = Self {
                iterations: iterations
                    .parse()
                    .map_err(|_| format!("iterations '{iterations}' is not a number"))?,
                salt: b64(salt, "the salt")?,
                stored_key: b64(stored, "StoredKey")?,
                server_key: b64(server, "ServerKey")?,
            };
            if v.stored_key.len() != 32 || v.server_key.len() != 32 || v.iterations == 0 {
                return Err(
                    "StoredKey and ServerKey must be 32 bytes and iterations positive".into(),
                );
            }
            Ok(v)
        };
        Some(parse())
    }

    /// Checks a password given in the clear (HTTP Basic, Flight SQL handshake).
    pub fn matches(&self, password: &str) -> bool {
        let other = Self::with_salt(password, self.salt.clone(), self.iterations);
        same(&other.stored_key, &self.stored_key)
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }
}

/// The server's half of one exchange, between its first message and the client's last.
pub struct Exchange {
    verifier: Verifier,
    /// client-first-message-bare + "," + server-first-message
    transcript: String,
    nonce: String,
    gs2_header: String,
}

/// Answers the client's first message (`n,,n=user,r=<nonce>`): returns the server's
/// first message and the state to check the client's proof with.
pub fn server_first(verifier: &Verifier, client_first: &str) -> Result<(String, Exchange), String> {
    // gs2 header: channel binding flag and authzid, then the bare message.
    let mut parts = client_first.splitn(3, ',');
    let (flag, authzid, bare) = (
        parts.next().unwrap_or(""),
        parts.next().ok_or("no gs2 header")?,
        parts.next().ok_or("no bare message")?,
    );
    if flag.starts_with('p') {
        return Err("channel binding is not supported; use SCRAM-SHA-256".into());
    }
    let client_nonce = bare
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or("the client's first message has no nonce")?;
    let mut ours = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut ours)
        .map_err(|_| "no system randomness".to_string())?;
    let nonce = format!("{client_nonce}{}", B64.encode(ours));
    let first = format!(
        "r={nonce},s={},i={}",
        B64.encode(&verifier.salt),
        verifier.iterations
    );
    let exchange = Exchange {
        verifier: verifier.clone(),
        transcript: format!("{bare},{first}"),
        nonce,
        gs2_header: format!("{flag},{authzid},"),
    };
    Ok((first, exchange))
}

impl Exchange {
    /// Checks the client's final message (`c=..,r=..,p=<proof>`); returns the
    /// server's final message (`v=<signature>`) when the proof holds.
    pub fn server_final(&self, client_final: &str) -> Result<String, String> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or("the client's final message has no proof")?;
        let attr = |k: &str| without_proof.split(',').find_map(|a| a.strip_prefix(k));
        if attr("r=") != Some(self.nonce.as_str()) {
            return Err("the nonce changed during the exchange".into());
        }
        if attr("c=") != Some(B64.encode(self.gs2_header.as_bytes()).as_str()) {
            return Err("the channel binding data does not match".into());
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| "the proof is not base64".to_string())?;
        let auth_message = format!("{},{without_proof}", self.transcript);
        let signature = mac(&self.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err("wrong password".into());
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let stored = digest::digest(&digest::SHA256, &client_key);
        if !same(stored.as_ref(), &self.verifier.stored_key) {
            return Err("wrong password".into());
        }
        Ok(format!(
            "v={}",
            B64.encode(mac(&self.verifier.server_key, auth_message.as_bytes()))
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: user "user", password "pencil".
    #[test]
    fn rfc7677_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let v = Verifier::with_salt("pencil", salt, 4096);
        let transcript = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let exchange = Exchange {
            verifier: v.clone(),
            transcript: transcript.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            gs2_header: "n,,".into(),
        };
        let last = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            exchange.server_final(last).expect("proof holds"),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let forged = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVR=";
        assert!(exchange.server_final(forged).is_err());
    }

    #[test]
    fn verifier_text_round_trips_and_checks_passwords() {
        let v = Verifier::new("s3cret").expect("verifier");
        let text = v.to_string();
        let back = Verifier::parse(&text).expect("is scram").expect("parses");
        assert_eq!(back, v);
        assert!(back.matches("s3cret"));
        assert!(!back.matches("s3cret "));
        assert!(Verifier::parse("$argon2id$v=19$...").is_none());
        assert!(Verifier::parse("SCRAM-SHA-256$x:abc$def")
            .expect("scram")
            .is_err());
    }

    /// The client's side of RFC 5802, for the round trip below.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let attr = |k: &str| {
            server_first
                .split(',')
                .find_map(|a| a.strip_prefix(k))
                .expect("attribute")
                .to_string()
        };
        let (nonce, salt, iterations) = (
            attr("r="),
            B64.decode(attr("s=")).expect("salt"),
            attr("i=").parse().expect("i"),
        );
        let salted = salted(password, &salt, iterations);
        let client_key = mac(&salted, b"Client Key");
        let stored = digest::digest(&digest::SHA256, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mac(stored.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    proptest::proptest! {
        /// Whatever a config or a client sends, parsing and the exchange answer
        /// with a value or an error, never a panic; only the right password passes.
        #[test]
        fn garbage_never_panics_and_only_the_password_passes(text in ".{0,120}", password in "[ -~]{1,24}", other in "[ -~]{1,24}") {
            let _ = Verifier::parse(&text);
            let _ = Verifier::parse(&format!("SCRAM-SHA-256${text}"));
            let v = Verifier::with_salt(&password, b"0123456789abcdef".to_vec(), 2);
            let _ = server_first(&v, &text);
            let bare = "n=,r=clientnonce";
            let (first, exchange) = server_first(&v, &format!("n,,{bare}")).expect("first");
            proptest::prop_assert!(exchange.server_final(&text).is_err());
            proptest::prop_assert!(exchange.server_final(&client_final(&password, bare, &first)).is_ok());
            if other != password {
                proptest::prop_assert!(exchange.server_final(&client_final(&other, bare, &first)).is_err());
            }
        }
    }

    #[test]
    fn first_message_needs_a_nonce_and_no_channel_binding() {
        let v = Verifier::new("x").expect("verifier");
        assert!(server_first(&v, "n,,n=,r=abc").is_ok());
        assert!(server_first(&v, "n,,n=").is_err());
        assert!(server_first(&v, "p=tls-server-end-point,,n=,r=abc").is_err());
    }
}
