//! The Quiver worker: an Arrow Flight server that executes plan fragments.
//!
//! `do_get(ticket)` decodes a [`quiver_proto::FragmentTicket`], runs one partition
//! of its DataFusion physical plan under a memory limit and streams the batches.
//! `do_action("health")`, `do_action("stats")` and `do_action("instance")` let the
//! coordinator's pool watch it; on shutdown it drains ([`WorkerService::drain`]).
//! Every call but `health` must carry the cluster's credentials ([`cluster_auth`]).

pub mod batches;
mod cancel;
pub mod cluster_auth;
mod compression;
mod compute;
mod cost;
pub mod exchange;
mod executor;
pub mod functions;
mod lifecycle;
mod partition_exec;
pub mod peer_data;
mod service;
pub mod status;
mod usage;
pub mod write;

/// Largest gRPC message accepted or sent: plans of tables with many files are big.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

pub use cluster_auth::{ClusterCredentials, WorkerClient};
pub use compression::LinkCompression;
pub use executor::{FragmentExecutor, WorkerOptions};
pub use lifecycle::Drained;
pub use service::{nodelay, serve, WorkerService};

/// Errors starting a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("worker transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Connector(#[from] quiver_connectors::ConnectorError),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}
