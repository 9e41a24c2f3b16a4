//! Client authentication: Flight SQL's handshake with username/password (HTTP
//! Basic) answered by a bearer token; every other call carries the token.
//! Enforced by a tonic interceptor in front of the whole service.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
use quiver_connectors::env::EnvString;
use tonic::{Request, Status};

/// The authenticated user, attached to requests by the interceptor.
#[derive(Debug, Clone)]
pub struct User(pub String);

#[derive(Clone)]
pub struct Authenticator {
    users: Arc<BTreeMap<String, EnvString>>,
    tokens: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    ttl: Duration,
}

impl Authenticator {
    pub fn new(users: BTreeMap<String, EnvString>, ttl: Duration) -> Self {
        Self { users: Arc::new(users), tokens: Arc::default(), ttl }
    }

    /// The interceptor: Basic credentials are checked against the users, Bearer
    /// tokens against those issued; anything else is refused.
    pub fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("authentication required: handshake with a username and password"))?
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let user = if let Some(basic) = strip_scheme(header, "basic") {
            self.check_password(basic)?
        } else if let Some(token) = strip_scheme(header, "bearer") {
            self.check_token(token)?
        } else {
            return Err(Status::unauthenticated("unsupported authorization scheme (use Basic or Bearer)"));
        };
        request.extensions_mut().insert(User(user));
        Ok(request)
    }

    fn check_password(&self, encoded: &str) -> Result<String, Status> {
        let invalid = || Status::unauthenticated("invalid username or password");
        // Clients differ on padding (Go's Flight client sends none).
        let decoded = BASE64_LENIENT.decode(encoded.trim()).map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
        match self.users.get(user) {
            Some(expected) if constant_time_eq(expected.expose().as_bytes(), password.as_bytes()) => {
                Ok(user.to_string())
            }
            _ => {
                tracing::warn!(user, "failed login");
                Err(invalid())
            }
        }
    }

    fn check_token(&self, token: &str) -> Result<String, Status> {
        let mut tokens = self.tokens.lock().map_err(|_| Status::internal("token store poisoned"))?;
        let now = Instant::now();
        tokens.retain(|_, (_, expiry)| *expiry > now);
        tokens
            .get(token.trim())
            .map(|(user, _)| user.clone())
            .ok_or_else(|| Status::unauthenticated("invalid or expired token: handshake again"))
    }

    /// Issues a bearer token for `user`.
    pub fn issue(&self, user: &str) -> Result<String, Status> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut tokens = self.tokens.lock().map_err(|_| Status::internal("token store poisoned"))?;
        tokens.insert(token.clone(), (user.to_string(), Instant::now() + self.ttl));
        Ok(token)
    }
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Compares without an early exit, so timing does not reveal how much of a password matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff)) as usize;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::prelude::BASE64_STANDARD;

    fn auth() -> Authenticator {
        let users = BTreeMap::from([("ann".to_string(), EnvString::new("s3cret"))]);
        Authenticator::new(users, Duration::from_secs(60))
    }

    fn request(header: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut().insert("authorization", header.parse().expect("header"));
        r
    }

    #[test]
    fn basic_then_bearer() {
        let a = auth();
        let ok = a.check(request(&format!("Basic {}", BASE64_STANDARD.encode("ann:s3cret")))).expect("login");
        assert_eq!(ok.extensions().get::<User>().map(|u| u.0.as_str()), Some("ann"));
        let token = a.issue("ann").expect("token");
        assert!(a.check(request(&format!("Bearer {token}"))).is_ok());
        assert!(a.check(request("Bearer nope")).is_err());
        // Unpadded base64, as Go clients send it.
        let unpadded = BASE64_STANDARD.encode("ann:s3cret").trim_end_matches('=').to_string();
        assert!(a.check(request(&format!("Basic {unpadded}"))).is_ok());
    }

    #[test]
    fn wrong_password_and_missing_header_are_unauthenticated() {
        let a = auth();
        let err = a.check(request(&format!("Basic {}", BASE64_STANDARD.encode("ann:wrong")))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("invalid username or password"));
        assert!(a.check(Request::new(())).is_err());
        assert!(a.check(request("Basic !!!")).is_err());
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
