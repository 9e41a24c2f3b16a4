//! Who a client is. Flight SQL's handshake takes a username and password (HTTP Basic)
//! and answers with a bearer token that later calls carry; a bearer JWT from a site's
//! identity provider works in its place. Enforced by a tonic interceptor in front of
//! the whole client service.
//!
//! Passwords in the config are argon2id hashes (`quiver passwd` prints one) or
//! SCRAM-SHA-256 verifiers (`quiver passwd --scram`, needed for SCRAM on the
//! PostgreSQL port); plaintext ones still work, with a warning at start. A verified
//! argon2 password is remembered for a few minutes by its SHA-256, so clients that
//! send Basic credentials on every call do not pay for argon2 each time.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use quiver_connectors::env::EnvString;
use serde::Deserialize;
use tonic::{Request, Status};

use super::audit::AuditLog;
pub use super::jwt::JwtConfig;
use super::jwt::JwtVerifier;

pub use super::identity::{AuthConfigError, User};

const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How long a verified password is remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// `[server.auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// user name -> password hash (or plaintext), or `{ password = "...", roles = [...] }`.
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    /// Lifetime of bearer tokens issued by the handshake, in seconds.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
    /// Bearer JWTs from an identity provider.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
}

fn default_token_ttl() -> u64 {
    12 * 3600
}

/// One user: a password alone, or a password with roles.
#[derive(Debug, Clone)]
pub struct UserConfig {
    pub password: Option<EnvString>,
    pub roles: Vec<String>,
}

impl<'de> Deserialize<'de> for UserConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Raw strings first, expanded after: an error of `${VAR}` must not read as a shape error.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            #[serde(default)]
            password: Option<String>,
            #[serde(default)]
            roles: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Password(String),
            Full(Full),
        }
        let expand = |raw: String| {
            quiver_connectors::env::expand(&raw)
                .map(EnvString::new)
                .map_err(serde::de::Error::custom)
        };
        match Raw::deserialize(d) {
            Ok(Raw::Password(p)) => Ok(Self {
                password: Some(expand(p)?),
                roles: vec![],
            }),
            Ok(Raw::Full(f)) => Ok(Self {
                password: f.password.map(expand).transpose()?,
                roles: f.roles,
            }),
            Err(_) => Err(serde::de::Error::custom(
                "a user is a password string or a table { password = \"...\", roles = [\"...\"] }",
            )),
        }
    }
}

enum Credential {
    /// An argon2 PHC string.
    Hash(String),
    /// A SCRAM-SHA-256 verifier (PostgreSQL's format).
    Scram(super::scram::Verifier),
    Plain(EnvString),
    /// No password: the user logs in with JWTs only.
    None,
}

struct Account {
    credential: Credential,
    roles: Vec<String>,
}

#[derive(Clone)]
pub struct Authenticator {
    accounts: Arc<BTreeMap<String, Account>>,
    jwt: Option<Arc<JwtVerifier>>,
    tokens: Arc<Mutex<HashMap<String, (User, Instant)>>>,
    verified: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
    ttl: Duration,
    audit: Arc<AuditLog>,
}

impl Authenticator {
    /// Builds the authenticator; returns it with warnings for the log (plaintext passwords).
    pub fn new(
        config: &AuthConfig,
        audit: Arc<AuditLog>,
    ) -> Result<(Self, Vec<String>), AuthConfigError> {
        let mut warnings = vec![];
        let mut accounts = BTreeMap::new();
        for (name, user) in &config.users {
            let credential = match &user.password {
                None => Credential::None,
                Some(p) if p.expose().starts_with("$argon2") => {
                    let hash =
                        PasswordHash::new(p.expose()).map_err(|e| AuthConfigError::BadHash {
                            user: name.clone(),
                            message: e.to_string(),
                        })?;
                    if hash.salt.is_none() || hash.hash.is_none() {
                        let message = "it has no salt or no hash; paste the whole line `quiver passwd` prints".to_string();
                        return Err(AuthConfigError::BadHash {
                            user: name.clone(),
                            message,
                        });
                    }
                    Credential::Hash(p.expose().to_string())
                }
                Some(p) if p.expose().starts_with("SCRAM-SHA-256$") => {
                    match super::scram::Verifier::parse(p.expose()) {
                        Some(Ok(v)) => Credential::Scram(v),
                        Some(Err(message)) => {
                            return Err(AuthConfigError::BadHash {
                                user: name.clone(),
                                message,
                            })
                        }
                        None => unreachable!("starts with the SCRAM prefix"),
                    }
                }
                Some(p) => {
                    warnings.push(format!(
                        "server.auth.users.{name} has a plaintext password; store the hash `quiver passwd` prints instead"
                    ));
                    Credential::Plain(p.clone())
                }
            };
            accounts.insert(
                name.clone(),
                Account {
                    credential,
                    roles: user.roles.clone(),
                },
            );
        }
        let jwt = config
            .jwt
            .as_ref()
            .map(JwtVerifier::new)
            .transpose()?
            .map(Arc::new);
        let auth = Self {
            accounts: Arc::new(accounts),
            jwt,
            tokens: Arc::default(),
            verified: Arc::default(),
            ttl: Duration::from_secs(config.token_ttl_secs),
            audit,
        };
        Ok((auth, warnings))
    }

    /// The interceptor: Basic credentials are checked against the users, Bearer
    /// tokens against those issued or as JWTs; anything else is refused.
    pub fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let client = request.remote_addr();
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "authentication required: handshake with a username and password",
                )
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let user = self.check_header(header, client)?;
        request.extensions_mut().insert(user);
        Ok(request)
    }

    /// Checks an `Authorization` header value (Basic or Bearer), as HTTP sends it too.
    pub fn check_header(&self, header: &str, client: Option<SocketAddr>) -> Result<User, Status> {
        if let Some(basic) = strip_scheme(header, "basic") {
            self.check_password(basic, client)
        } else if let Some(token) = strip_scheme(header, "bearer") {
            self.check_token(token.trim(), client)
        } else {
            Err(Status::unauthenticated(
                "unsupported authorization scheme (use Basic or Bearer)",
            ))
        }
    }

    /// Checks a username and a password given in the clear (PostgreSQL cleartext login).
    pub fn login(
        &self,
        name: &str,
        password: &str,
        client: Option<SocketAddr>,
    ) -> Result<User, Status> {
        match self.accounts.get(name) {
            Some(account) if self.password_matches(name, &account.credential, password) => {
                Ok(User {
                    name: name.to_string(),
                    roles: account.roles.clone(),
                })
            }
            _ => {
                self.audit
                    .login_failed(name, client, "invalid username or password");
                Err(Status::unauthenticated("invalid username or password"))
            }
        }
    }

    /// How a user logs in on the PostgreSQL port: with SCRAM when the server holds
    /// a SCRAM verifier (or the plaintext password), else with the password in the
    /// clear (argon2 hashes cannot answer SCRAM; use TLS). Unknown users get a
    /// SCRAM exchange that cannot succeed, so the answer does not tell who exists.
    pub fn pg_login(&self, name: &str) -> PgLogin {
        match self.accounts.get(name).map(|a| &a.credential) {
            Some(Credential::Scram(v)) => PgLogin::Scram(v.clone()),
            Some(Credential::Plain(p)) => {
                let salt = ring::digest::digest(&ring::digest::SHA256, name.as_bytes()).as_ref()
                    [..16]
                    .to_vec();
                PgLogin::Scram(super::scram::Verifier::with_salt(
                    p.expose(),
                    salt,
                    super::scram::ITERATIONS,
                ))
            }
            Some(Credential::Hash(_)) => PgLogin::Cleartext,
            Some(Credential::None) | None => {
                let mut random = [0u8; 32];
                let _ =
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
                PgLogin::Scram(super::scram::Verifier::with_salt(
                    &format!("{random:?}"),
                    random[..16].to_vec(),
                    super::scram::ITERATIONS,
                ))
            }
        }
    }

    /// The user `name` after a successful SCRAM exchange.
    pub fn user(&self, name: &str) -> Option<User> {
        self.accounts.get(name).map(|a| User {
            name: name.to_string(),
            roles: a.roles.clone(),
        })
    }

    /// Records a refused login (audit log).
    pub fn refused(&self, name: &str, client: Option<SocketAddr>, why: &str) {
        self.audit.login_failed(name, client, why);
    }

    fn check_password(&self, encoded: &str, client: Option<SocketAddr>) -> Result<User, Status> {
        let invalid = || Status::unauthenticated("invalid username or password");
        // Clients differ on padding (Go's Flight client sends none).
        let decoded = BASE64_LENIENT
            .decode(encoded.trim())
            .map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        let (name, password) = decoded.split_once(':').ok_or_else(invalid)?;
        match self.accounts.get(name) {
            Some(account) if self.password_matches(name, &account.credential, password) => {
                Ok(User {
                    name: name.to_string(),
                    roles: account.roles.clone(),
                })
            }
            _ => {
                self.audit
                    .login_failed(name, client, "invalid username or password");
                Err(invalid())
            }
        }
    }

    fn password_matches(&self, name: &str, credential: &Credential, password: &str) -> bool {
        match credential {
            Credential::None => false,
            Credential::Scram(v) => v.matches(password),
            Credential::Plain(expected) => {
                constant_time_eq(expected.expose().as_bytes(), password.as_bytes())
            }
            Credential::Hash(phc) => {
                let digest = ring::digest::digest(
                    &ring::digest::SHA256,
                    format!("{name}\0{phc}\0{password}").as_bytes(),
                );
                let mut key = [0u8; 32];
                key.copy_from_slice(digest.as_ref());
                let now = Instant::now();
                {
                    let mut verified = self.verified.lock();
                    verified.retain(|_, until| *until > now);
                    if verified.contains_key(&key) {
                        return true;
                    }
                }
                let ok = PasswordHash::new(phc)
                    .map(|hash| {
                        Argon2::default()
                            .verify_password(password.as_bytes(), &hash)
                            .is_ok()
                    })
                    .unwrap_or(false);
                if ok {
                    {
                        let mut verified = self.verified.lock();
                        verified.insert(key, now + VERIFIED_TTL);
                    }
                }
                ok
            }
        }
    }

    fn check_token(&self, token: &str, client: Option<SocketAddr>) -> Result<User, Status> {
        {
            let mut tokens = self.tokens.lock();
            let now = Instant::now();
            tokens.retain(|_, (_, expiry)| *expiry > now);
            if let Some((user, _)) = tokens.get(token) {
                return Ok(user.clone());
            }
        }
        match &self.jwt {
            Some(jwt) if token.matches('.').count() == 2 => {
                jwt.verify(token).inspect_err(|status| {
                    self.audit.login_failed("-", client, status.message());
                })
            }
            _ => Err(Status::unauthenticated(
                "invalid or expired token: handshake again",
            )),
        }
    }

    /// Issues a bearer token for `user`.
    pub fn issue(&self, user: &User) -> Result<String, Status> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut tokens = self.tokens.lock();
        tokens.insert(token.clone(), (user.clone(), Instant::now() + self.ttl));
        Ok(token)
    }
}

/// How a user proves who they are on the PostgreSQL port.
pub enum PgLogin {
    Scram(super::scram::Verifier),
    Cleartext,
}

/// An argon2id hash of `password` in the PHC string format, for the config.
pub fn hash_password(password: &str) -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "cannot draw random bytes".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
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

    fn config(users: &[(&str, &str, &[&str])]) -> AuthConfig {
        AuthConfig {
            users: users
                .iter()
                .map(|(u, p, r)| {
                    let roles = r.iter().map(|s| s.to_string()).collect();
                    (
                        u.to_string(),
                        UserConfig {
                            password: Some(EnvString::new(*p)),
                            roles,
                        },
                    )
                })
                .collect(),
            token_ttl_secs: 60,
            jwt: None,
        }
    }

    fn auth() -> Authenticator {
        Authenticator::new(
            &config(&[("ann", "s3cret", &[])]),
            Arc::new(AuditLog::disabled()),
        )
        .expect("auth")
        .0
    }

    fn request(header: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", header.parse().expect("header"));
        r
    }

    fn basic(user_password: &str) -> String {
        format!("Basic {}", BASE64_STANDARD.encode(user_password))
    }

    #[test]
    fn basic_then_bearer() {
        let a = auth();
        let ok = a.check(request(&basic("ann:s3cret"))).expect("login");
        let user = ok.extensions().get::<User>().cloned().expect("user");
        assert_eq!(user.name, "ann");
        let token = a.issue(&user).expect("token");
        assert!(a.check(request(&format!("Bearer {token}"))).is_ok());
        assert!(a.check(request("Bearer nope")).is_err());
        // Unpadded base64, as Go clients send it.
        let unpadded = BASE64_STANDARD
            .encode("ann:s3cret")
            .trim_end_matches('=')
            .to_string();
        assert!(a.check(request(&format!("Basic {unpadded}"))).is_ok());
    }

    #[test]
    fn wrong_password_and_missing_header_are_unauthenticated() {
        let a = auth();
        let err = a.check(request(&basic("ann:wrong"))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("invalid username or password"));
        assert!(a.check(Request::new(())).is_err());
        assert!(a.check(request("Basic !!!")).is_err());
    }

    #[test]
    fn hashed_passwords_verify_and_plaintext_ones_warn() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let cfg = config(&[("bob", &hash, &["analyst"]), ("ann", "plain", &[])]);
        let (a, warnings) = Authenticator::new(&cfg, Arc::new(AuditLog::disabled())).expect("auth");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("users.ann has a plaintext password"),
            "{warnings:?}"
        );
        let ok = a
            .check(request(&basic("bob:correct horse")))
            .expect("login");
        assert_eq!(
            ok.extensions().get::<User>().map(|u| u.roles.clone()),
            Some(vec!["analyst".to_string()])
        );
        // Remembered the second time; a wrong password is still wrong.
        assert!(a.check(request(&basic("bob:correct horse"))).is_ok());
        assert!(a.check(request(&basic("bob:correct horsE"))).is_err());
        let bad = config(&[("eve", "$argon2id$garbage", &[])]);
        assert!(Authenticator::new(&bad, Arc::new(AuditLog::disabled())).is_err());
    }

    fn jwt(claims: serde_json::Value, secret: &str) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &key,
        )
        .expect("jwt")
    }

    #[test]
    fn jwts_are_checked_for_key_expiry_issuer_and_audience() {
        let mut cfg = config(&[]);
        cfg.jwt = Some(JwtConfig {
            hs256_secret: Some(EnvString::new("jwt-test-secret")),
            jwks_file: None,
            issuer: Some("https://idp.test".into()),
            audience: Some("quiver".into()),
            user_claim: "sub".into(),
            roles_claim: "roles".into(),
            leeway_secs: 0,
        });
        let (a, _) = Authenticator::new(&cfg, Arc::new(AuditLog::disabled())).expect("auth");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = |exp: u64, aud: &str| serde_json::json!({"sub": "carol", "roles": ["analyst"], "iss": "https://idp.test", "aud": aud, "exp": exp});
        let good = a
            .check(request(&format!(
                "Bearer {}",
                jwt(claims(now + 60, "quiver"), "jwt-test-secret")
            )))
            .expect("valid");
        assert_eq!(
            good.extensions()
                .get::<User>()
                .map(|u| (u.name.clone(), u.roles.clone())),
            Some(("carol".into(), vec!["analyst".into()]))
        );
        let expired = a
            .check(request(&format!(
                "Bearer {}",
                jwt(claims(now - 60, "quiver"), "jwt-test-secret")
            )))
            .unwrap_err();
        assert!(
            expired.message().contains("ExpiredSignature"),
            "{expired:?}"
        );
        let aud = a
            .check(request(&format!(
                "Bearer {}",
                jwt(claims(now + 60, "other"), "jwt-test-secret")
            )))
            .unwrap_err();
        assert!(aud.message().contains("InvalidAudience"), "{aud:?}");
        let key = a
            .check(request(&format!(
                "Bearer {}",
                jwt(claims(now + 60, "quiver"), "wrong-secret")
            )))
            .unwrap_err();
        assert!(key.message().contains("InvalidSignature"), "{key:?}");
    }

    /// RS256 against a JWKS file, with a key made by the openssl command line.
    #[test]
    fn rs256_jwts_verify_against_a_jwks_file_and_hs256_is_not_accepted_instead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("key.pem").display().to_string();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        run(&["genrsa", "-out", &pem, "2048"]);
        let der = run(&["rsa", "-in", &pem, "-outform", "DER", "-traditional"]);
        let modulus =
            String::from_utf8(run(&["rsa", "-in", &pem, "-noout", "-modulus"])).expect("text");
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&n);
        let jwks = dir.path().join("jwks.json");
        let doc = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": n, "e": "AQAB"}]});
        std::fs::write(&jwks, doc.to_string()).expect("write jwks");
        let mut cfg = config(&[]);
        cfg.jwt = Some(JwtConfig {
            hs256_secret: None,
            jwks_file: Some(jwks),
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            roles_claim: "roles".into(),
            leeway_secs: 0,
        });
        let (a, _) = Authenticator::new(&cfg, Arc::new(AuditLog::disabled())).expect("auth");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = serde_json::json!({"sub": "dave", "roles": "admin ops", "exp": now + 60});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_der(&der),
        )
        .expect("sign");
        let ok = a
            .check(request(&format!("Bearer {token}")))
            .expect("valid RS256 token");
        assert_eq!(
            ok.extensions().get::<User>().map(|u| u.roles.clone()),
            Some(vec!["admin".to_string(), "ops".to_string()])
        );
        // The same claims as HS256, keyed with the public modulus: refused, no HMAC secret is configured.
        let forged = jwt(claims, &n);
        let err = a.check(request(&format!("Bearer {forged}"))).unwrap_err();
        assert!(
            err.message().contains("HS256 tokens are not accepted"),
            "{err:?}"
        );
    }

    #[test]
    fn users_are_strings_or_tables() {
        let cfg: AuthConfig = toml::from_str(
            "[users]\nann = \"pw\"\nbob = { password = \"pw2\", roles = [\"admin\"] }\njwt_only = { roles = [\"x\"] }\n",
        )
        .expect("parses");
        assert_eq!(cfg.users["bob"].roles, vec!["admin".to_string()]);
        assert!(cfg.users["jwt_only"].password.is_none());
        let err = toml::from_str::<AuthConfig>("[users]\nann = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a user is a password string or a table"),
            "{err}"
        );
        // An unset variable is named as such, in both forms.
        for text in [
            "[users]\nann = \"${QUIVER_TEST_SURELY_UNSET}\"\n",
            "[users]\nann = { password = \"${QUIVER_TEST_SURELY_UNSET}\" }\n",
        ] {
            let err = toml::from_str::<AuthConfig>(text).unwrap_err().to_string();
            assert!(err.contains("QUIVER_TEST_SURELY_UNSET is not set"), "{err}");
        }
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
