//! Distributed execution.
//!
//! A query with exchanges (joins, grouped and global aggregates) is cut into
//! *stages* at them (`stages.rs`); the scheduler (`scheduler.rs`) runs each
//! stage's tasks on workers, which pass rows to the next stage through exchange
//! files (`quiver_worker::exchange`), or stream them while both stages run
//! (`streamed_run.rs`). `query_run.rs` holds where a running query's outputs are;
//! `runs.rs` starts a query's run for its root's partitions and moves it to files
//! when a streamed run fails before its first row; `root_fragments.rs` turns the
//! root's worker part into fragments. `distributed_query_exec.rs` ties it
//! together; `EXPLAIN` shows its stages (`stage_exec.rs`) and the part of the
//! root that workers run (`worker_fragments_exec.rs`). What is left, the root,
//! runs as *fragments* streamed to the coordinator (`remote_fragment_exec.rs`):
//! each is one partition of a subtree that reads scans or exchanges, and the
//! merge above them runs on the coordinator.
//!
//! The physical optimizer rule that decides all this is `distribute_fragments.rs`;
//! `plan_shape.rs` answers what a plan reads and where it can run. Plans that
//! cannot be cut (an order-preserving exchange, a scalar subquery, a node no
//! worker can decode) fall back to fragments over the scans only, with everything
//! above them on the coordinator. A pool scaled to zero starts a worker for a
//! plan that needs one (`wake.rs`). A root whose partitions need no merge can be
//! handed to a Flight SQL client as endpoints on the workers (`endpoints.rs`),
//! or relayed to it as the workers' Flight messages, never re-encoded (`relay.rs`).
//! File scans' partitions are evened out before they are placed
//! (`scan_ranges.rs`). A partitioned join's build-side keys filter the stage
//! that produces its probe side (`dynamic_filters.rs`).

mod adaptive;
mod distribute_fragments;
mod distributed_query_exec;
mod dynamic_filters;
pub mod endpoints;
mod explain_runs;
mod plan_shape;
mod query_run;
pub mod relay;
mod remote_fragment_exec;
mod root_fragments;
mod runs;
mod scan_ranges;
mod scheduler;
mod stage_exec;
mod stages;
mod streamed_run;
pub mod wake;
mod worker_fragments_exec;

pub use distribute_fragments::DistributeFragments;
pub use remote_fragment_exec::RemoteFragmentExec;
pub use scheduler::{Scheduler, SchedulerSettings};
