//! The Quiver coordinator: the front doors (Flight SQL, PostgreSQL, HTTP with the
//! web console), planning over the virtual schema with the users' access rules,
//! virtual datasets (views, accelerated copies, the results cache), writes,
//! distribution of stages and fragments to workers, and the worker pool.
//! docs/architecture.md maps the folders; `engine::statement` lists the steps a
//! statement takes.

mod admission;
mod balance;
mod cache;
mod catalog;
mod config;
mod distributed;
mod engine;
mod frontends;
mod observe;
mod pg_booleans;
mod pg_spelling;
mod placeholders;
mod pool;
mod reserved;
mod result_schema;
mod security;
mod server;
pub mod tpch;
mod writes;

// What the `quiver` binary, the benches and the end-to-end tests use; everything
// else is the crate's own.
pub use config::QuiverConfig;
pub use frontends::flight_sql::{ACTION_PROGRESS, QUERY_ID_HEADER};
pub use security::authn::hash_password;
pub use security::cluster::for_worker as worker_cluster_secret;
pub use security::scram::Verifier as ScramVerifier;
pub use server::{quiver_codec, shutdown_signal, start, CoordinatorError, RunningCoordinator};
