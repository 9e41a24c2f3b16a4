//! Who a request is: the authenticated user that authentication (passwords,
//! JWTs) attaches to a request, and the error of an authentication config that
//! cannot be used. A leaf module under `authn` and `jwt`.

/// The authenticated user, attached to requests by the interceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
}

/// Errors building the authenticator from the config.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("server.auth.users.{user}: the password hash is not a valid argon2 PHC string or SCRAM-SHA-256 verifier: {message}")]
    BadHash { user: String, message: String },
    #[error("server.auth.jwt: {0}")]
    Jwt(String),
}
