//! Security of the coordinator:
//! - [`cluster`]: the secret coordinator and workers authenticate each other with;
//! - [`authn`]: who a client is (passwords, issued tokens, JWTs);
//! - [`access`]: who may read what (rules, column masks, row filters), applied to
//!   plans by [`enforce`] and to listings by [`catalog_view`];
//! - [`audit`]: a JSON line per query and per failed login.

pub mod access;
pub mod audit;
pub mod authn;
pub mod catalog_view;
pub mod cluster;
pub mod enforce;
