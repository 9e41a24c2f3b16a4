//! What an operator can see of the coordinator, read with SQL or Prometheus:
//!
//! - [`queries`]: queries running and recently run (`system.queries`), with what
//!   each used;
//! - [`fragments`]: their stage tasks, attempt by attempt (`system.fragments`);
//! - [`usage`]: cost per query and its sum per user and hour (`system.usage`);
//! - [`system`]: the `system` schema that serves these and the pool's tables;
//! - [`counters`]: the atomics the query path and the pool bump;
//! - [`metrics`]: those counters and gauges as Prometheus text (`GET /metrics`).

pub mod counters;
pub mod fragments;
pub mod metrics;
pub mod queries;
pub mod system;
pub mod usage;
