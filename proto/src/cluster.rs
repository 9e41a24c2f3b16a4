//! Cluster authentication: one shared secret authenticates every call between the
//! coordinator and its workers (and between workers), and seals the tickets they carry.
//!
//! - Each call carries `x-quiver-cluster: <expiry-ms>.<nonce>.<mac>`, an HMAC-SHA256
//!   of expiry and nonce. A worker refuses an expired token and a nonce it has already
//!   seen ([`CallVerifier`]), so a captured header cannot be used again.
//! - A ticket is sealed as `QVT1 | expiry-ms (8 bytes, big-endian) | mac (32) | payload`,
//!   the mac covering everything but itself: a changed byte or an old ticket is refused
//!   before the payload is decoded.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The metadata key of the per-call token.
pub const CLUSTER_HEADER: &str = "x-quiver-cluster";
/// How long a call token or a sealed ticket stays valid after it is made.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// A token claiming to live longer than this is refused (its clock is wrong or it is forged).
const MAX_FUTURE: Duration = Duration::from_secs(600);
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

const TICKET_MAGIC: &[u8; 4] = b"QVT1";
const MAC_LEN: usize = 32;
const TICKET_HEADER: usize = TICKET_MAGIC.len() + 8 + MAC_LEN;
/// Domain separation: a call token's mac can never pass as a ticket's.
const CALL_CONTEXT: &[u8] = b"quiver-call\0";

/// Why a call or a ticket was refused. The messages name the problem, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterAuthError {
    #[error(
        "cluster secret must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
    )]
    WeakSecret,
    #[error("missing cluster credentials: only members of this Quiver cluster may call a worker")]
    Missing,
    #[error("malformed cluster credentials")]
    Malformed,
    #[error("invalid cluster credentials")]
    BadSignature,
    #[error("expired cluster credentials (check the clocks of coordinator and workers)")]
    Expired,
    #[error("cluster credentials were already used: a replayed call is refused")]
    Replayed,
    #[error("ticket is not sealed for this cluster")]
    Unsealed,
    #[error("ticket signature is invalid: the ticket was altered or sealed with another secret")]
    TicketSignature,
    #[error("ticket expired: a captured ticket cannot be replayed")]
    TicketExpired,
    #[error("cannot draw random bytes from the system")]
    Random,
}

/// The cluster's shared key. Its `Debug` shows nothing of the secret.
#[derive(Clone)]
pub struct ClusterKey {
    key: hmac::Key,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl ClusterKey {
    /// A key from the configured secret.
    pub fn from_secret(secret: &str) -> Result<Self, ClusterAuthError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ClusterAuthError::WeakSecret);
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        })
    }

    /// A fresh random secret (64 hex digits) for a cluster that has none configured.
    pub fn generate_secret() -> Result<String, ClusterAuthError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ClusterAuthError::Random)?;
        Ok(hex(&bytes))
    }

    /// A token for one call (the value of [`CLUSTER_HEADER`]).
    pub fn call_token(&self) -> Result<String, ClusterAuthError> {
        let mut nonce = [0u8; 16];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| ClusterAuthError::Random)?;
        let expiry = now_ms() + TOKEN_TTL.as_millis() as u64;
        let tag = hmac::sign(&self.key, &call_message(expiry, &nonce));
        Ok(format!("{expiry}.{}.{}", hex(&nonce), hex(tag.as_ref())))
    }

    /// Checks a call token's signature and age; returns its nonce and expiry.
    fn check_call_token(&self, token: &str, now: u64) -> Result<([u8; 16], u64), ClusterAuthError> {
        let mut parts = token.trim().split('.');
        let (Some(expiry), Some(nonce), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ClusterAuthError::Malformed);
        };
        let expiry: u64 = expiry.parse().map_err(|_| ClusterAuthError::Malformed)?;
        let nonce: [u8; 16] = unhex(nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or(ClusterAuthError::Malformed)?;
        let mac = unhex(mac).ok_or(ClusterAuthError::Malformed)?;
        hmac::verify(&self.key, &call_message(expiry, &nonce), &mac)
            .map_err(|_| ClusterAuthError::BadSignature)?;
        check_expiry(expiry, now).map_err(|_| ClusterAuthError::Expired)?;
        Ok((nonce, expiry))
    }

    /// Seals a ticket payload for [`TOKEN_TTL`].
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        self.seal_until(payload, now_ms() + TOKEN_TTL.as_millis() as u64)
    }

    /// Seals a ticket payload for `ttl` (at most ten minutes count as valid).
    pub fn seal_for(&self, payload: &[u8], ttl: Duration) -> Vec<u8> {
        self.seal_until(payload, now_ms() + ttl.as_millis() as u64)
    }

    /// Seals a ticket payload valid until `expiry_ms` (milliseconds since the epoch).
    pub fn seal_until(&self, payload: &[u8], expiry_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(TICKET_HEADER + payload.len());
        out.extend_from_slice(TICKET_MAGIC);
        out.extend_from_slice(&expiry_ms.to_be_bytes());
        out.extend_from_slice(&[0u8; MAC_LEN]);
        out.extend_from_slice(payload);
        let tag = hmac::sign(&self.key, &ticket_message(&out));
        out[12..TICKET_HEADER].copy_from_slice(tag.as_ref());
        out
    }

    /// The payload of a sealed ticket, once its signature and age are checked.
    pub fn open<'a>(&self, sealed: &'a [u8]) -> Result<&'a [u8], ClusterAuthError> {
        if sealed.len() < TICKET_HEADER || &sealed[..4] != TICKET_MAGIC {
            return Err(ClusterAuthError::Unsealed);
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&sealed[4..12]);
        let expiry = u64::from_be_bytes(expiry);
        hmac::verify(
            &self.key,
            &ticket_message(sealed),
            &sealed[12..TICKET_HEADER],
        )
        .map_err(|_| ClusterAuthError::TicketSignature)?;
        check_expiry(expiry, now_ms()).map_err(|_| ClusterAuthError::TicketExpired)?;
        Ok(&sealed[TICKET_HEADER..])
    }
}

fn check_expiry(expiry: u64, now: u64) -> Result<(), ()> {
    if expiry < now || expiry > now + MAX_FUTURE.as_millis() as u64 {
        return Err(());
    }
    Ok(())
}

fn call_message(expiry: u64, nonce: &[u8; 16]) -> Vec<u8> {
    let mut m = CALL_CONTEXT.to_vec();
    m.extend_from_slice(&expiry.to_be_bytes());
    m.extend_from_slice(nonce);
    m
}

/// The signed bytes of a sealed ticket: everything but the mac itself.
fn ticket_message(sealed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(sealed.len() - MAC_LEN);
    m.extend_from_slice(&sealed[..12]);
    m.extend_from_slice(&sealed[TICKET_HEADER..]);
    m
}

/// Checks call tokens on a worker and remembers their nonces until they expire, so
/// each token works once.
#[derive(Debug)]
pub struct CallVerifier {
    key: ClusterKey,
    seen: Mutex<Seen>,
}

/// Nonces of unexpired tokens, pruned when the map doubles (so pruning costs O(1) a call).
#[derive(Debug)]
struct Seen {
    nonces: HashMap<[u8; 16], u64>,
    prune_at: usize,
}

impl CallVerifier {
    pub fn new(key: ClusterKey) -> Self {
        Self {
            key,
            seen: Mutex::new(Seen {
                nonces: HashMap::new(),
                prune_at: 4096,
            }),
        }
    }

    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    /// Accepts a call's token (the header value, None when absent) once.
    pub fn verify(&self, token: Option<&str>) -> Result<(), ClusterAuthError> {
        let token = token.ok_or(ClusterAuthError::Missing)?;
        let now = now_ms();
        let (nonce, expiry) = self.key.check_call_token(token, now)?;
        let mut seen = self.seen.lock();
        // Expired nonces can go: their tokens fail the expiry check anyway.
        if seen.nonces.len() >= seen.prune_at {
            seen.nonces.retain(|_, e| *e >= now);
            seen.prune_at = (seen.nonces.len() * 2).max(4096);
        }
        if seen.nonces.insert(nonce, expiry).is_some() {
            return Err(ClusterAuthError::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::from_secret("0123456789abcdef0123").expect("key")
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            ClusterKey::from_secret("short").unwrap_err(),
            ClusterAuthError::WeakSecret
        );
        let generated = ClusterKey::generate_secret().expect("secret");
        assert_eq!(generated.len(), 64);
        assert!(ClusterKey::from_secret(&generated).is_ok());
    }

    #[test]
    fn a_call_token_works_once() {
        let v = CallVerifier::new(key());
        let token = key().call_token().expect("token");
        assert_eq!(v.verify(Some(&token)), Ok(()));
        assert_eq!(v.verify(Some(&token)), Err(ClusterAuthError::Replayed));
        assert_eq!(v.verify(None), Err(ClusterAuthError::Missing));
        assert_eq!(v.verify(Some("1.2.3")), Err(ClusterAuthError::Malformed));
    }

    #[test]
    fn tokens_of_another_secret_or_altered_are_refused() {
        let v = CallVerifier::new(key());
        let other = ClusterKey::from_secret("another secret of the cluster").expect("key");
        assert_eq!(
            v.verify(Some(&other.call_token().expect("token"))),
            Err(ClusterAuthError::BadSignature)
        );
        let token = key().call_token().expect("token");
        let (expiry, rest) = token.split_once('.').expect("dot");
        let later = format!("{}.{rest}", expiry.parse::<u64>().expect("ms") + 1000);
        assert_eq!(v.verify(Some(&later)), Err(ClusterAuthError::BadSignature));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let k = key();
        let nonce = [7u8; 16];
        let expiry = now_ms() - 1;
        let tag = hmac::sign(&k.key, &call_message(expiry, &nonce));
        let token = format!("{expiry}.{}.{}", hex(&nonce), hex(tag.as_ref()));
        assert_eq!(
            CallVerifier::new(k).verify(Some(&token)),
            Err(ClusterAuthError::Expired)
        );
    }

    #[test]
    fn tickets_round_trip_and_every_altered_byte_is_caught() {
        let k = key();
        let sealed = k.seal(b"plan bytes");
        assert_eq!(k.open(&sealed), Ok(&b"plan bytes"[..]));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(k.open(&bad).is_err(), "byte {i} altered unnoticed");
        }
        assert_eq!(k.open(b"plan bytes"), Err(ClusterAuthError::Unsealed));
        let old = k.seal_until(b"plan", now_ms() - 1);
        assert_eq!(k.open(&old), Err(ClusterAuthError::TicketExpired));
        let other = ClusterKey::from_secret("another secret of the cluster").expect("key");
        assert_eq!(other.open(&sealed), Err(ClusterAuthError::TicketSignature));
    }
}
