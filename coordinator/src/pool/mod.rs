//! The worker pool: which workers exist, which are healthy, and a Flight client to each.
//!
//! Workers come from a provisioner chosen by `workers.mode` (`embedded`: Flight
//! servers inside this process on loopback ports; `static`: addresses from the
//! config). A health loop asks every worker's `health` action and takes the ones
//! that do not answer out of planning until they answer again.

mod embedded;
mod health;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use quiver_connectors::SourceConfig;
use quiver_proto::QuiverCodec;
use tonic::transport::{Channel, Endpoint};

use crate::config::{WorkerMode, WorkersConfig};

pub use embedded::EmbeddedWorkers;

/// Largest gRPC message exchanged with workers.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("invalid worker address '{address}': {message}")]
    Address { address: String, message: String },
    #[error("cannot start embedded worker: {0}")]
    Embedded(#[from] quiver_worker::WorkerError),
}

/// One worker as the coordinator sees it.
#[derive(Debug)]
pub struct Worker {
    pub id: String,
    pub address: String,
    client: FlightServiceClient<Channel>,
    healthy: AtomicBool,
    /// Fragments this coordinator is currently reading from the worker.
    running: AtomicU32,
}

impl Worker {
    fn connect_lazy(id: String, address: String) -> Result<Self, PoolError> {
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| PoolError::Address { address: address.clone(), message: e.to_string() })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let client = FlightServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { id, address, client, healthy: AtomicBool::new(false), running: AtomicU32::new(0) })
    }

    /// A client for one call; clones share the connection.
    pub fn client(&self) -> FlightServiceClient<Channel> {
        self.client.clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            if healthy {
                tracing::info!(worker = %self.id, address = %self.address, "worker is healthy");
            } else {
                tracing::warn!(worker = %self.id, address = %self.address, "worker is unreachable; not planning on it");
            }
        }
    }

    pub fn running_fragments(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// Counts a fragment as running until the returned guard drops.
    pub fn track_fragment(self: &Arc<Self>) -> RunningFragment {
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningFragment(self.clone())
    }
}

/// Keeps a fragment counted on its worker while alive.
pub struct RunningFragment(Arc<Worker>);

impl Drop for RunningFragment {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All workers known to the coordinator.
pub struct WorkerPool {
    workers: RwLock<Vec<Arc<Worker>>>,
    embedded: Option<EmbeddedWorkers>,
    fragment_memory_limit: u64,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool").field("workers", &self.all().len()).finish()
    }
}

impl WorkerPool {
    /// Starts (embedded) or connects to (static) the configured workers and runs one
    /// health round, so the first query is planned on workers that answer.
    pub async fn start(
        config: &WorkersConfig,
        sources: &[SourceConfig],
        codec: QuiverCodec,
    ) -> Result<Arc<Self>, PoolError> {
        let (workers, embedded) = match config.mode {
            WorkerMode::Embedded => {
                let embedded = EmbeddedWorkers::start(config.count, sources, codec).await?;
                let workers = embedded
                    .addresses()
                    .map(|(id, addr)| Worker::connect_lazy(id, addr))
                    .collect::<Result<Vec<_>, _>>()?;
                (workers, Some(embedded))
            }
            WorkerMode::Static => {
                let workers = config
                    .addresses
                    .iter()
                    .enumerate()
                    .map(|(i, a)| Worker::connect_lazy(format!("worker-{}", i + 1), normalize_address(a)))
                    .collect::<Result<Vec<_>, _>>()?;
                (workers, None)
            }
        };
        let pool = Arc::new(Self {
            workers: RwLock::new(workers.into_iter().map(Arc::new).collect()),
            embedded,
            fragment_memory_limit: config.fragment_memory_limit.0,
        });
        pool.check_health().await;
        Ok(pool)
    }

    /// Every worker, healthy or not.
    pub fn all(&self) -> Vec<Arc<Worker>> {
        self.workers.read().map(|w| w.clone()).unwrap_or_default()
    }

    /// Workers that answered their last health check, least busy first.
    pub fn healthy(&self) -> Vec<Arc<Worker>> {
        let mut healthy: Vec<_> = self.all().into_iter().filter(|w| w.is_healthy()).collect();
        healthy.sort_by_key(|w| w.running_fragments());
        healthy
    }

    pub fn fragment_memory_limit(&self) -> u64 {
        self.fragment_memory_limit
    }

    /// Stops embedded workers.
    pub fn shutdown(&self) {
        if let Some(embedded) = &self.embedded {
            embedded.shutdown();
        }
    }
}

/// Accepts `host:port` as well as `http://host:port`.
fn normalize_address(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}
