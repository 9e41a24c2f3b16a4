//! Wire messages shared by the coordinator and the workers, and the
//! datafusion-proto codec that carries Quiver's own plan nodes.
//!
//! The messages are declared with `prost` derives instead of generated from a
//! `.proto` file: that keeps `protoc`/`protox` out of the build, and the field
//! numbers below are the contract (documented in `fragment.proto` for non-Rust peers).

pub mod client_types;
pub mod cluster;
mod codec;
mod messages;
pub mod plan_nodes;

pub use cluster::{CallVerifier, ClusterAuthError, ClusterKey, CLUSTER_HEADER};
pub use codec::{NodeCodec, QuiverCodec};
pub use messages::{FragmentStats, FragmentTicket, SourceRead, WorkerInstance, WorkerStats};

/// Name of the worker's health action.
pub const ACTION_HEALTH: &str = "health";
/// Name of the worker's load-statistics action.
pub const ACTION_STATS: &str = "stats";
/// Name of the worker's identity action ([`WorkerInstance`]). Open to anyone for
/// reading; a body (the caller's coordinator instance id) records a heartbeat of
/// that owner and needs the cluster's credentials.
pub const ACTION_INSTANCE: &str = "instance";

/// Errors decoding Quiver wire messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("malformed {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}
