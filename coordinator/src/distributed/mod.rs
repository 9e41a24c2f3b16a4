//! Distributed execution: the planner rule that cuts fragments out of a physical
//! plan, and the node that runs them on workers.
//!
//! A *fragment* is a subtree that needs no data from other partitions: a file scan
//! with the filters, projections, per-partition sorts/limits and partial
//! aggregates above it. Each of its partitions runs on a worker; everything above
//! (final aggregates, joins, merges) runs on the coordinator, fed by the streams.

mod remote_exec;
mod rule;

pub use remote_exec::RemoteFragmentExec;
pub use rule::DistributeFragments;
