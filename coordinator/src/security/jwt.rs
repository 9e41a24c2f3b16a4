//! Bearer JWTs from a site's identity provider (`[server.auth.jwt]`): HS256 with a
//! shared secret, RS256 and ES256 with the keys of a JWKS file. The key decides the
//! algorithm, so an RSA or EC public key is never taken as an HMAC secret.

use std::path::PathBuf;

use quiver_connectors::env::EnvString;
use serde::Deserialize;
use tonic::Status;

use super::identity::{AuthConfigError, User};

/// `[server.auth.jwt]`: which JWTs are accepted as bearer tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 key shared with the identity provider (use `${ENV}`).
    #[serde(default)]
    pub hs256_secret: Option<EnvString>,
    /// A JWKS document (JSON) with the provider's RS256/ES256 public keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// The claim that names the user.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim that lists the user's roles (an array of strings, or one string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_user_claim() -> String {
    "sub".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_leeway() -> u64 {
    30
}

/// Checks JWTs against the configured keys and claims.
pub(super) struct JwtVerifier {
    config: JwtConfig,
    hs256: Option<jsonwebtoken::DecodingKey>,
    jwks: Option<jsonwebtoken::jwk::JwkSet>,
}

impl JwtVerifier {
    pub(super) fn new(config: &JwtConfig) -> Result<Self, AuthConfigError> {
        let hs256 = config
            .hs256_secret
            .as_ref()
            .map(|s| jsonwebtoken::DecodingKey::from_secret(s.expose().as_bytes()));
        let jwks = match &config.jwks_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    AuthConfigError::Jwt(format!("cannot read jwks_file {}: {e}", path.display()))
                })?;
                Some(
                    serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(&text).map_err(|e| {
                        AuthConfigError::Jwt(format!(
                            "jwks_file {} is not a JWKS document: {e}",
                            path.display()
                        ))
                    })?,
                )
            }
            None => None,
        };
        if hs256.is_none() && jwks.is_none() {
            return Err(AuthConfigError::Jwt("set hs256_secret or jwks_file".into()));
        }
        Ok(Self {
            config: config.clone(),
            hs256,
            jwks,
        })
    }

    pub(super) fn verify(&self, token: &str) -> Result<User, Status> {
        use jsonwebtoken::Algorithm;
        let refused = |why: String| Status::unauthenticated(format!("invalid JWT: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(e.to_string()))?;
        // The key decides the algorithm: an RSA/EC key is never used as an HMAC secret.
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .clone()
                .ok_or_else(|| refused("HS256 tokens are not accepted".into()))?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self
                    .jwks
                    .as_ref()
                    .ok_or_else(|| refused(format!("{:?} tokens are not accepted", header.alg)))?;
                let jwk = match &header.kid {
                    Some(kid) => jwks
                        .find(kid)
                        .ok_or_else(|| refused(format!("unknown key id '{kid}'")))?,
                    None if jwks.keys.len() == 1 => &jwks.keys[0],
                    None => return Err(refused("the token names no key id (kid)".into())),
                };
                jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| refused(e.to_string()))?
            }
            other => return Err(refused(format!("algorithm {other:?} is not accepted"))),
        };
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        match &self.config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| refused(e.to_string()))?;
        let claims = data.claims;
        let name = claims
            .get(&self.config.user_claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                refused(format!(
                    "no '{}' claim names the user",
                    self.config.user_claim
                ))
            })?;
        let roles = match claims.get(&self.config.roles_claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => s
                .split([' ', ','])
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect(),
            _ => vec![],
        };
        Ok(User {
            name: name.to_string(),
            roles,
        })
    }
}
