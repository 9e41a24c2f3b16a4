//! The HTTP listener (`server.http_listen`): `POST /v1/sql` ([`sql`]), the web
//! console ([`console`]), `GET /metrics` for Prometheus and `GET /health`.
//!
//! `/v1/sql` and the console take the same credentials as Flight SQL (Basic or
//! Bearer in `Authorization`); a browser asks for them with its own login prompt.
//! `/metrics` and `/health` are open, as scrapers and probes expect. POSTs made by
//! a page of another site are refused ([`same_origin`]). With
//! `[server.tls]` the listener serves HTTPS with the same certificate, and only that.

mod console;
mod history;
mod same_origin;
mod sql;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use quiver_worker::status::kind_of;
use tokio::net::TcpListener;
use tonic::Status;

use crate::engine::QueryEngine;
use crate::frontends::limits::{Door, FirstBytes};
use crate::frontends::run::Caller;
use crate::security::authn::Authenticator;

/// What every request handler shares.
pub(crate) struct Http {
    engine: Arc<QueryEngine>,
    auth: Option<Authenticator>,
    history: Arc<history::History>,
    /// Origins other than its own whose pages may POST (`server.http_allowed_origins`).
    allowed_origins: Vec<String>,
}

type Shared = State<Arc<Http>>;

/// Serves the listener until the process ends; HTTPS when `tls` is given.
pub fn serve(
    listener: TcpListener,
    engine: Arc<QueryEngine>,
    auth: Option<Authenticator>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    allowed_origins: Vec<String>,
    door: Door,
) -> tokio::task::JoinHandle<()> {
    let history = history::History::start(engine.pool().clone());
    let http = Arc::new(Http {
        engine,
        auth,
        history,
        allowed_origins,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/v1/sql", post(sql::post_sql))
        .merge(console::routes())
        .fallback(|uri: axum::http::Uri| async move {
            error_response(
                StatusCode::NOT_FOUND,
                &format!("no such page: {}", uri.path()),
            )
        })
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("{method} is not served at {}", uri.path()),
                )
            },
        )
        .layer(axum::middleware::from_fn_with_state(
            http.clone(),
            same_origin::guard,
        ))
        .with_state(http);
    tokio::spawn(accept(listener, app, tls, door))
}

/// Each connection: a place at the door (a full door answers 503 and closes),
/// the TLS handshake when configured, then HTTP/1.1 with a deadline for the
/// request headers, and the peer's address where the handlers read it (`ConnectInfo`).
async fn accept(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    door: Door,
) {
    loop {
        let (socket, peer) = door.accept(&listener).await;
        let Some(permit) = door.admit() else {
            tokio::spawn(refuse_full(socket, door.full_message()));
            continue;
        };
        let (app, tls, handshake) = (app.clone(), tls.clone(), door.handshake);
        tokio::spawn(async move {
            let socket = FirstBytes::new(socket, handshake, permit);
            let app = app.layer(axum::Extension(ConnectInfo(peer)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(handshake);
            let served = match tls {
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await
                }
                Some(tls) => {
                    let stream = match tokio::time::timeout(handshake, tls.accept(socket)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            return tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Answers a connection the door has no place for: 503 with the JSON error.
async fn refuse_full(mut socket: tokio::net::TcpStream, message: String) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::json!({ "error": message, "sqlstate": "53300" }).to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = async {
        use tokio::io::AsyncReadExt;
        // The request's head first: closing with unread bytes would reset the connection.
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
            match socket.read(&mut buf).await {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let _ = socket.write_all(reply.as_bytes()).await;
        let _ = socket.shutdown().await;
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), answer).await;
}

async fn metrics(State(http): Shared) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::observe::metrics::render(&http.engine),
    )
}

impl Http {
    /// Who sends the request; without authentication configured, anyone.
    fn caller(&self, headers: &HeaderMap, addr: SocketAddr) -> Result<Caller, Response> {
        let client = Some(addr.to_string());
        let no_cache = crate::frontends::run::cache_off(
            headers
                .get(crate::frontends::run::CACHE_HEADER)
                .and_then(|h| h.to_str().ok()),
        );
        let Some(auth) = &self.auth else {
            return Ok(Caller {
                user: None,
                client,
                no_cache,
            });
        };
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        let Some(header) = header else {
            return Err(unauthorized(
                "authentication required: send Basic or Bearer credentials",
            ));
        };
        match auth.check_header(header, Some(addr)) {
            Ok(user) => Ok(Caller {
                user: Some(user),
                client,
                no_cache,
            }),
            Err(status) => Err(unauthorized(status.message())),
        }
    }

    /// Whether the caller may see and cancel everyone's queries and the cluster.
    fn is_admin(&self, caller: &Caller) -> bool {
        caller.user.is_none() || self.engine.access(caller.user.as_ref()).is_admin()
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = error_response(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"Quiver\", charset=\"UTF-8\""),
    );
    r
}

/// `{"error": message}` with `status`.
fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The HTTP status for a query error, from its kind.
fn status_of(status: &Status) -> StatusCode {
    use quiver_worker::status::ErrorKind as K;
    match kind_of(status) {
        K::InsufficientPrivilege | K::ReadOnly => StatusCode::FORBIDDEN,
        K::InvalidAuthorization => StatusCode::UNAUTHORIZED,
        K::DuplicateTable | K::DuplicateSchema | K::DependentObjects => StatusCode::CONFLICT,
        K::InsufficientResources | K::TooManyConnections | K::OutOfMemory => {
            StatusCode::TOO_MANY_REQUESTS
        }
        K::ConnectionFailure => StatusCode::SERVICE_UNAVAILABLE,
        K::QueryCanceled => StatusCode::REQUEST_TIMEOUT,
        K::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `{"error": message, "sqlstate": code}` for a query error.
fn query_error(status: &Status) -> Response {
    let body =
        serde_json::json!({ "error": status.message(), "sqlstate": kind_of(status).sqlstate() })
            .to_string();
    (
        status_of(status),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The peer address axum recorded.
type Peer = ConnectInfo<SocketAddr>;
