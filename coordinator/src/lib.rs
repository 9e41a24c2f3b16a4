//! The Quiver coordinator: Flight SQL endpoint, planning over the virtual schema,
//! distribution of fragments to workers, and the worker pool.

pub mod admission;
pub mod balance;
pub mod config;
pub mod distributed;
pub mod engine;
pub mod flight_sql;
pub mod fragments;
pub mod metrics;
pub mod pool;
pub mod queries;
pub mod security;
pub mod server;
pub mod system;
pub mod tpch;

pub use config::QuiverConfig;
pub use server::{start, CoordinatorError, RunningCoordinator};
