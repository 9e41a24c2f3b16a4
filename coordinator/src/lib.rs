//! The Quiver coordinator: Flight SQL endpoint, planning over the virtual schema,
//! distribution of fragments to workers, and the worker pool.

pub mod admission;
pub mod balance;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod distributed;
pub mod engine;
pub mod fragments;
pub mod frontends;
pub mod metrics;
mod pg_booleans;
mod pg_spelling;
pub mod placeholders;
pub mod pool;
pub mod queries;
mod result_schema;
pub mod security;
pub mod server;
pub mod system;
pub mod tpch;
pub mod usage;
pub mod writes;

pub use config::QuiverConfig;
pub use server::{start, CoordinatorError, RunningCoordinator};
