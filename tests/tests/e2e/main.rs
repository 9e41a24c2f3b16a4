//! The end-to-end tests, one module per topic, linked into one test binary: each
//! binary links all of Quiver and its dependencies, so one binary instead of one per
//! file saves minutes of linking and gigabytes of disk in every build.
//!
//! Run one topic with `cargo test --workspace --locked --test e2e -- sqlite::`.
//! `tests/tests/postgres.rs` and `tests/tests/datasets.rs` are binaries of their own:
//! they stop the shared PostgreSQL server, and cargo runs test binaries one after
//! another, so no test here finds it stopped.

mod adbc;
mod cli;
mod client_endpoints;
mod cluster_auth;
mod compression;
mod console;
mod dbt;
mod delta;
mod distributed;
mod docker;
mod examples;
mod federated_tpch;
mod files;
mod flight_sql;
mod flight_sql_source;
mod hostile;
mod http;
mod iceberg;
mod keda;
mod lakehouse;
mod limits;
mod mysql;
mod pgwire;
mod plans;
mod relay;
mod s3;
mod security;
mod session_ddl;
mod sqlite;
mod sqlstates;
mod startup;
mod superset;
mod tpch;
mod usage;
mod workers;
mod writes;
