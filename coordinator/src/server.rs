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
use crate::frontends::flight_sql::{Authenticator, QuiverFlightSql};
use crate::pool::{PoolError, WorkerPool, MAX_MESSAGE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    // Not a `source`: the message already holds it, and `{:#}` would print it twice.
    #[error("worker pool: {0}")]
    Pool(PoolError),
    #[error(transparent)]
    Source(#[from] quiver_connectors::ConnectorError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: cannot read {path}: {source}")]
    TlsFile {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(tonic::transport::Error),
    #[error("Flight SQL service: {0}")]
    Service(String),
    #[error("{0}")]
    Cluster(String),
}

impl From<PoolError> for CoordinatorError {
    fn from(e: PoolError) -> Self {
        Self::Pool(e)
    }
}

/// A coordinator that is serving.
pub struct RunningCoordinator {
    pub addr: SocketAddr,
    /// `server.http_listen`, bound (console, `/v1/sql`, metrics); HTTPS when `tls`.
    pub http: Option<SocketAddr>,
    /// `server.postgres_listen`, bound.
    pub postgres: Option<SocketAddr>,
    /// `server.keda_listen`, bound.
    pub keda: Option<SocketAddr>,
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
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
        .with_node(Arc::new(quiver_connectors::SourceScanCodec::new(
            sources.to_vec(),
        )))
        .with_node(Arc::new(quiver_worker::exchange::ShuffleWriteCodec))
        .with_node(Arc::new(quiver_worker::exchange::ShuffleReadCodec))
        .with_node(Arc::new(quiver_worker::write::WriteFilesCodec))
        .with_node(Arc::new(
            quiver_connectors::lakehouse::iceberg::IcebergDeletesCodec,
        ))
        .with_node(Arc::new(
            quiver_connectors::lakehouse::delta_write::DeltaWriteCodec,
        ))
}

/// Binds `addr`; the error names it.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), CoordinatorError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| CoordinatorError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| CoordinatorError::Listen { addr, source })?;
    Ok((listener, bound))
}

/// Binds every listener, starts workers, registers sources and begins serving
/// Flight SQL, and the PostgreSQL and HTTP doors when configured. Listeners are
/// bound first: a port in use fails the start before any worker exists.
pub async fn start(config: QuiverConfig) -> Result<RunningCoordinator, CoordinatorError> {
    let (listener, addr) = bind(config.server.listen).await?;
    let http_listener = match config.server.http_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let pg_listener = match config.server.postgres_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let keda_listener = match config.server.keda_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let pg_tls = match (&config.server.tls, &pg_listener) {
        (Some(tls), Some(_)) => Some(
            crate::frontends::pgwire::tls_acceptor(&tls.cert, &tls.key)
                .map_err(CoordinatorError::Service)?,
        ),
        _ => None,
    };
    let http_tls = match (&config.server.tls, &http_listener) {
        (Some(tls), Some(_)) => Some(
            crate::frontends::tls::acceptor(&tls.cert, &tls.key, &[b"http/1.1"])
                .map_err(CoordinatorError::Service)?,
        ),
        _ => None,
    };

    // The Flight SQL certificate too is read before any worker exists.
    let flight_identity = match &config.server.tls {
        Some(tls) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|source| CoordinatorError::TlsFile {
                    path: p.display().to_string(),
                    source,
                })
            };
            Some(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
        }
        None => None,
    };

    let codec = quiver_codec(&config.source);
    let secret = crate::security::cluster::for_coordinator(&config.cluster, config.workers.mode)
        .map_err(CoordinatorError::Cluster)?;
    let pool = WorkerPool::start(
        &config.workers,
        &config.source,
        codec.clone(),
        config.text.as_deref(),
        secret.as_ref(),
    )
    .await?;
    pool.spawn_health_loop(Duration::from_secs_f64(config.workers.health_interval_secs));
    let healthy = pool.healthy().len();
    tracing::info!(workers = pool.all().len(), healthy, mode = ?config.workers.mode, "worker pool ready");
    let listeners = Listeners {
        listener,
        addr,
        http_listener,
        http_tls,
        pg_listener,
        pg_tls,
        keda_listener,
        flight_identity,
    };
    // Whatever fails from here on, the workers started for this run go again.
    match serve(config, pool.clone(), codec, listeners).await {
        Ok(running) => Ok(running),
        Err(e) => {
            tracing::error!(error = %e, "start failed; removing the workers it started");
            pool.shutdown().await;
            Err(e)
        }
    }
}

/// What `start` bound and read before the pool started.
struct Listeners {
    listener: TcpListener,
    addr: SocketAddr,
    http_listener: Option<(TcpListener, SocketAddr)>,
    http_tls: Option<tokio_rustls::TlsAcceptor>,
    pg_listener: Option<(TcpListener, SocketAddr)>,
    pg_tls: Option<pgwire::tokio::TlsAcceptor>,
    keda_listener: Option<(TcpListener, SocketAddr)>,
    flight_identity: Option<Identity>,
}

/// Registers sources and begins serving on the bound listeners.
async fn serve(
    config: QuiverConfig,
    pool: Arc<WorkerPool>,
    codec: QuiverCodec,
    listeners: Listeners,
) -> Result<RunningCoordinator, CoordinatorError> {
    let Listeners {
        listener,
        addr,
        http_listener,
        http_tls,
        pg_listener,
        pg_tls,
        keda_listener,
        flight_identity,
    } = listeners;
    let per_door = crate::frontends::limits::per_door(
        config.server.max_connections,
        crate::frontends::limits::raise_fd_limit(),
    );
    let handshake = Duration::from_secs_f64(config.server.handshake_timeout_secs.max(0.1));
    let door = |name| crate::frontends::limits::Door::new(name, per_door, handshake);
    let keda = keda_listener.map(|(listener, bound)| {
        crate::pool::keda::serve(listener, pool.clone());
        tracing::info!(%bound, "KEDA external scaler");
        bound
    });
    let (engine, warnings) = QueryEngine::new(&config, pool.clone(), codec).await?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let auth = match &config.server.auth {
        Some(a) => match Authenticator::new(a, engine.queries().audit().clone()) {
            Ok((auth, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                Some(auth)
            }
            Err(e) => return Err(CoordinatorError::Service(e.to_string())),
        },
        None => None,
    };
    let engine = Arc::new(engine);
    let mut http = None;
    if let Some((listener, bound)) = http_listener {
        let https = http_tls.is_some();
        crate::frontends::http::serve(
            listener,
            engine.clone(),
            auth.clone(),
            http_tls,
            config.server.http_allowed_origins.clone(),
            door("HTTP"),
        );
        tracing::info!(%bound, https, "HTTP: web console at /, SQL at /v1/sql, Prometheus metrics at /metrics");
        http = Some(bound);
    }
    let mut postgres = None;
    if let Some((listener, bound)) = pg_listener {
        crate::frontends::pgwire::serve(
            listener,
            engine.clone(),
            auth.clone(),
            pg_tls,
            door("PostgreSQL"),
        );
        tracing::info!(%bound, tls = config.server.tls.is_some(), "PostgreSQL protocol");
        postgres = Some(bound);
    }
    let service = QuiverFlightSql::new(engine, auth.clone())
        .map_err(|s| CoordinatorError::Service(s.message().into()))?;
    let service = FlightServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let service = InterceptedService::new(service, move |req| match &auth {
        Some(a) => a.check(req),
        None => Ok(req),
    });

    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    let tls = flight_identity.is_some();
    if let Some(identity) = flight_identity {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(CoordinatorError::Tls)?;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = builder.add_service(service);
    let incoming = flight_incoming(listener, door("Flight SQL"));
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningCoordinator {
        addr,
        http,
        postgres,
        keda,
        pool,
        tls,
        task,
        stop,
    })
}

/// Flight SQL's connections: each holds a place at its door and must speak
/// within the handshake timeout; one over the limit is closed at once (gRPC has
/// no way to say why before the HTTP/2 preface).
fn flight_incoming(
    listener: TcpListener,
    door: crate::frontends::limits::Door,
) -> impl futures::Stream<
    Item = std::io::Result<crate::frontends::limits::FirstBytes<tokio::net::TcpStream>>,
> {
    use futures::StreamExt;
    quiver_worker::nodelay(TcpListenerStream::new(listener)).filter_map(move |conn| {
        let admitted = match conn {
            Ok(stream) => door.admit().map(|permit| {
                Ok(crate::frontends::limits::FirstBytes::new(
                    stream,
                    door.handshake,
                    permit,
                ))
            }),
            // An accept error (out of descriptors) is not the end of the listener.
            Err(e) => {
                tracing::warn!(error = %e, "Flight SQL accept failed");
                None
            }
        };
        futures::future::ready(admitted)
    })
}
