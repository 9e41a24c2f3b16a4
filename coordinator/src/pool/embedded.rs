//! Embedded workers: real Flight servers on loopback ports inside the coordinator
//! process, so the demo exercises exactly the code path of remote workers. They
//! listen on loopback ports any local user can reach, so they require the cluster's
//! credentials like any other worker.

use parking_lot::Mutex;

use quiver_connectors::SourceConfig;
use quiver_proto::QuiverCodec;
use quiver_worker::{WorkerError, WorkerOptions, WorkerService};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct EmbeddedWorkers {
    addresses: Vec<(String, String)>,
    stops: Mutex<Vec<oneshot::Sender<()>>>,
}

impl EmbeddedWorkers {
    /// `cluster`: the key the workers require of every call (None: an insecure cluster).
    pub async fn start(
        count: usize,
        sources: &[SourceConfig],
        codec: QuiverCodec,
        cluster: Option<quiver_proto::ClusterKey>,
        join_keys: quiver_connectors::join_keys::JoinKeyLimits,
        compression: quiver_worker::LinkCompression,
    ) -> Result<Self, WorkerError> {
        let mut addresses = vec![];
        let mut stops = vec![];
        for i in 1..=count {
            let id = format!("embedded-{i}");
            let listener =
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|source| WorkerError::Listen {
                        addr: "127.0.0.1:0".into(),
                        source,
                    })?;
            let addr = listener
                .local_addr()
                .map_err(|source| WorkerError::Listen {
                    addr: "127.0.0.1:0".into(),
                    source,
                })?;
            let options = WorkerOptions {
                id: id.clone(),
                sources: sources.to_vec(),
                cluster: cluster.clone(),
                join_keys,
                compression,
                ..Default::default()
            };
            let service = WorkerService::new(options, codec.clone())?;
            let (stop, stopped) = oneshot::channel::<()>();
            let worker_id = id.clone();
            tokio::spawn(async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(e) = quiver_worker::serve(listener, service, shutdown).await {
                    tracing::error!(worker = %worker_id, error = %e, "embedded worker stopped");
                }
            });
            tracing::info!(worker = %id, %addr, "embedded worker listening");
            let address = format!("http://{addr}");
            // Streams between embedded workers pass in memory, never through Flight.
            quiver_worker::exchange::streams().mark_local(&address);
            addresses.push((id, address));
            stops.push(stop);
        }
        Ok(Self {
            addresses,
            stops: Mutex::new(stops),
        })
    }

    pub fn addresses(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.addresses.iter().cloned()
    }

    pub fn shutdown(&self) {
        {
            let mut stops = self.stops.lock();
            for stop in stops.drain(..) {
                let _ = stop.send(());
            }
        }
    }
}
