//! Security of the coordinator:
//! - [`cluster`]: the secret coordinator and workers authenticate each other with;
//! - [`authn`]: who a client is (passwords, issued tokens, [`jwt`]s), with [`scram`]
//!   for the PostgreSQL port's SCRAM-SHA-256 exchange; both produce an
//!   [`identity::User`];
//! - [`access`]: who may read what (rules, column masks, row filters), applied to
//!   plans by [`enforce`] and to listings by [`catalog_view`];
//! - [`audit`]: a JSON line per query and per failed login.

pub mod access;
pub mod audit;
pub mod authn;
pub mod catalog_view;
pub mod cluster;
pub mod enforce;
pub mod identity;
pub mod jwt;
pub mod scram;
