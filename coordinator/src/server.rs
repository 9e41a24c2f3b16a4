//! Starting the coordinator: worker pool, engine, and the Flight SQL endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use quiver_proto::QuiverCodec;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::config::QuiverConfig;
use crate::engine::QueryEngine;
use crate::flight_sql::{Authenticator, QuiverFlightSql};
use crate::pool::{PoolError, WorkerPool, MAX_MESSAGE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("worker pool: {0}")]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Source(#[from] quiver_connectors::ConnectorError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: cannot read {path}: {source}")]
    TlsFile { path: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(tonic::transport::Error),
    #[error("Flight SQL service: {0}")]
    Service(String),
    #[error("{0}")]
    Cluster(String),
}

/// A coordinator that is serving.
pub struct RunningCoordinator {
    pub addr: SocketAddr,
    pub pool: Arc<WorkerPool>,
    pub tls: bool,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl RunningCoordinator {
    /// Serves until the process is told to stop (Ctrl-C or SIGTERM).
    pub async fn serve_until_signal(self) -> Result<(), tonic::transport::Error> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }

    pub async fn shutdown(self) -> Result<(), tonic::transport::Error> {
        let _ = self.stop.send(());
        let result = self.task.await.unwrap_or(Ok(()));
        self.pool.shutdown().await;
        result
    }
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The plan codec of coordinator and workers: Quiver's own nodes, with database
/// scans resolved against the sources of `sources`.
pub fn quiver_codec(sources: &[quiver_connectors::SourceConfig]) -> QuiverCodec {
    QuiverCodec::new()
        .with_node(Arc::new(quiver_connectors::SourceScanCodec::new(sources.to_vec())))
        .with_node(Arc::new(quiver_worker::exchange::ShuffleWriteCodec))
        .with_node(Arc::new(quiver_worker::exchange::ShuffleReadCodec))
}

/// Starts workers, registers sources and begins serving Flight SQL.
pub async fn start(config: QuiverConfig) -> Result<RunningCoordinator, CoordinatorError> {
    let codec = quiver_codec(&config.source);
    let secret = crate::security::cluster::for_coordinator(&config.cluster, config.workers.mode)
        .map_err(CoordinatorError::Cluster)?;
    let pool =
        WorkerPool::start(&config.workers, &config.source, codec.clone(), config.text.as_deref(), secret.as_ref()).await?;
    pool.spawn_health_loop(Duration::from_secs_f64(config.workers.health_interval_secs));
    let healthy = pool.healthy().len();
    tracing::info!(workers = pool.all().len(), healthy, mode = ?config.workers.mode, "worker pool ready");

    let (engine, warnings) = QueryEngine::new(&config, pool.clone(), codec).await?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let auth = match &config.server.auth {
        Some(a) => {
            let (auth, warnings) =
                Authenticator::new(a, engine.queries().audit().clone()).map_err(|e| CoordinatorError::Service(e.to_string()))?;
            for w in warnings {
                tracing::warn!("{w}");
            }
            Some(auth)
        }
        None => None,
    };
    let service = QuiverFlightSql::new(Arc::new(engine), auth.clone()).map_err(|s| CoordinatorError::Service(s.message().into()))?;
    let service = FlightServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let service = InterceptedService::new(service, move |req| match &auth {
        Some(a) => a.check(req),
        None => Ok(req),
    });

    if let Some(addr) = config.server.metrics_listen {
        let bound = crate::metrics::serve(addr, pool.clone())
            .await
            .map_err(|source| CoordinatorError::Listen { addr, source })?;
        tracing::info!(%bound, "Prometheus metrics at /metrics");
    }
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen).await.map_err(|source| CoordinatorError::Listen { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| CoordinatorError::Listen { addr: listen, source })?;

    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    let tls = config.server.tls.is_some();
    if let Some(tls) = &config.server.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| CoordinatorError::TlsFile { path: p.display().to_string(), source })
        };
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity)).map_err(CoordinatorError::Tls)?;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = builder.add_service(service);
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(quiver_worker::nodelay(TcpListenerStream::new(listener)), async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningCoordinator { addr, pool, tls, task, stop })
}
