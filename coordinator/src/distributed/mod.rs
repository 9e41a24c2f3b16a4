//! Distributed execution.
//!
//! A query with exchanges (joins, grouped and global aggregates) is cut into
//! *stages* at them (`stages.rs`); the scheduler (`scheduler.rs`) runs each
//! stage's tasks on workers, which pass rows to the next stage through exchange
//! files (`quiver_worker::exchange`); `query_exec.rs` ties it together and shows
//! it in `EXPLAIN`. What is left, the root, runs as *fragments* streamed to the
//! coordinator (`remote_exec.rs`): each is one partition of a subtree that reads
//! scans or exchanges, and the merge above them runs on the coordinator.
//!
//! Plans that cannot be cut (an order-preserving exchange, a scalar subquery, a
//! node no worker can decode) fall back to fragments over the scans only, with
//! everything above them on the coordinator (`rule.rs`). A pool scaled to zero
//! starts a worker for a plan that needs one (`wake.rs`). A root whose partitions
//! need no merge can be handed to a Flight SQL client as endpoints on the workers
//! (`endpoints.rs`). File scans' partitions are evened out before they are placed
//! (`scan_ranges.rs`).

mod adaptive;
pub mod endpoints;
mod query_exec;
mod remote_exec;
mod rule;
mod scan_ranges;
mod scheduler;
mod stages;
pub mod wake;

pub use query_exec::DistributedQueryExec;
pub use remote_exec::RemoteFragmentExec;
pub use rule::DistributeFragments;
pub use scheduler::{Scheduler, SchedulerSettings};
