//! The HTTP listener (`server.http_listen`): `POST /v1/sql` ([`sql`]), the web
//! console ([`console`]), `GET /metrics` for Prometheus and `GET /health`.
//!
//! `/v1/sql` and the console take the same credentials as Flight SQL (Basic or
//! Bearer in `Authorization`); a browser asks for them with its own login prompt.
//! `/metrics` and `/health` are open, as scrapers and probes expect. With
//! `[server.tls]` the listener serves HTTPS with the same certificate, and only that.

mod console;
mod history;
mod sql;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tonic::{Code, Status};

use crate::engine::QueryEngine;
use crate::frontends::run::Caller;
use crate::security::authn::Authenticator;

/// What every request handler shares.
pub(crate) struct Http {
    engine: Arc<QueryEngine>,
    auth: Option<Authenticator>,
    history: Arc<history::History>,
}

type Shared = State<Arc<Http>>;

/// Serves the listener until the process ends; HTTPS when `tls` is given.
pub fn serve(
    listener: TcpListener,
    engine: Arc<QueryEngine>,
    auth: Option<Authenticator>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> tokio::task::JoinHandle<()> {
    let history = history::History::start(engine.pool().clone());
    let http = Arc::new(Http { engine, auth, history });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/v1/sql", post(sql::post_sql))
        .merge(console::routes())
        .with_state(http);
    match tls {
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await {
                tracing::error!(error = %e, "HTTP listener stopped");
            }
        }),
        Some(tls) => tokio::spawn(serve_tls(listener, app, tls)),
    }
}

/// HTTPS: each connection's TLS handshake, then HTTP/1.1 on it, with the peer's
/// address where the handlers read it (`ConnectInfo`).
async fn serve_tls(listener: TcpListener, app: Router, tls: tokio_rustls::TlsAcceptor) {
    loop {
        let Ok((socket, peer)) = listener.accept().await else { continue };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(socket)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let app = app.layer(axum::Extension(ConnectInfo(peer)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let served = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
}

async fn metrics(State(http): Shared) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(&http.engine))
}

impl Http {
    /// Who sends the request; without authentication configured, anyone.
    fn caller(&self, headers: &HeaderMap, addr: SocketAddr) -> Result<Caller, Response> {
        let client = Some(addr.to_string());
        let no_cache = crate::frontends::run::cache_off(headers.get(crate::frontends::run::CACHE_HEADER).and_then(|h| h.to_str().ok()));
        let Some(auth) = &self.auth else { return Ok(Caller { user: None, client, no_cache }) };
        let header = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
        let Some(header) = header else {
            return Err(unauthorized("authentication required: send Basic or Bearer credentials"));
        };
        match auth.check_header(header, Some(addr)) {
            Ok(user) => Ok(Caller { user: Some(user), client, no_cache }),
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
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"Quiver\", charset=\"UTF-8\""));
    r
}

/// `{"error": message}` with `status`.
fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The HTTP status for a query error.
fn status_of(status: &Status) -> StatusCode {
    match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::Unimplemented => StatusCode::BAD_REQUEST,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Cancelled | Code::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The peer address axum recorded.
type Peer = ConnectInfo<SocketAddr>;
