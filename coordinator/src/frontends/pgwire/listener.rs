//! The PostgreSQL port's accept loop: a place at the door for each connection
//! (a full door answers FATAL 53300), a deadline for the first bytes and for the
//! login, then pgwire's protocol handling.

use parking_lot::Mutex;
use std::sync::Arc;

use pgwire::api::ConnectionManager;
use tokio::net::TcpListener;

use super::{auth, Cancel, Frontend, Handlers, Queries};
use crate::engine::QueryEngine;
use crate::security::authn::Authenticator;

/// TLS for the port, from the server's certificate and key (PEM). Direct TLS
/// (PostgreSQL 17's sslnegotiation=direct) checks the protocol name.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<pgwire::tokio::TlsAcceptor, String> {
    crate::frontends::tls::acceptor(cert, key, &[b"postgresql"])
}

/// Serves the PostgreSQL protocol on `listener` until the process ends.
pub fn serve(
    listener: TcpListener,
    engine: Arc<QueryEngine>,
    auth: Option<Authenticator>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    door: crate::frontends::limits::Door,
) -> tokio::task::JoinHandle<()> {
    let frontend = Arc::new(Frontend {
        engine,
        auth,
        connections: Mutex::default(),
        manager: Arc::new(ConnectionManager::new()),
        parser: datafusion_pg_catalog::sql::PostgresCompatibilityParser::new(),
        require_tls: tls.is_some(),
    });
    let handlers = Arc::new(Handlers {
        startup: Arc::new(auth::Startup::new(frontend.clone())),
        queries: Arc::new(Queries {
            frontend: frontend.clone(),
        }),
        cancel: Arc::new(Cancel { frontend }),
    });
    tokio::spawn(async move {
        loop {
            let (socket, peer) = door.accept(&listener).await;
            let _ = socket.set_nodelay(true);
            let Some(permit) = door.admit() else {
                tokio::spawn(refuse_full(socket, door.full_message()));
                continue;
            };
            let (handlers, tls, handshake) = (handlers.clone(), tls.clone(), door.handshake);
            tokio::spawn(async move {
                let _permit = permit;
                // A client that says nothing, or does not finish logging in, in time is dropped.
                let mut first = [0u8; 1];
                match tokio::time::timeout(handshake, socket.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return tracing::debug!(%peer, "PostgreSQL client sent nothing in time"),
                }
                let logged_in = handlers.startup.watch(peer);
                let connection = pgwire::tokio::process_socket(socket, tls, handlers);
                tokio::pin!(connection);
                let ended = tokio::select! {
                    ended = &mut connection => Some(ended),
                    _ = tokio::time::sleep(handshake) => None,
                };
                let ended = match ended {
                    Some(e) => e,
                    None if !logged_in.load(std::sync::atomic::Ordering::Relaxed) => {
                        return tracing::debug!(%peer, "PostgreSQL login not finished in time; connection closed");
                    }
                    None => connection.await,
                };
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "PostgreSQL connection ended with an error");
                }
            });
        }
    })
}

/// Answers a connection the port has no place for, as PostgreSQL does: a FATAL
/// 53300 error response to its startup message, then the connection closes.
async fn refuse_full(mut socket: tokio::net::TcpStream, message: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = vec![];
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', message.as_str()),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut reply = vec![b'E'];
    reply.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    reply.extend(body);
    let answer = async {
        // Read the client's startup (after saying "no" to an SSL or GSS request), so
        // closing does not reset a connection with unread bytes before the error is read.
        loop {
            let mut len = [0u8; 4];
            if socket.read_exact(&mut len).await.is_err() {
                return;
            }
            let len = (u32::from_be_bytes(len) as usize).clamp(4, 10_000);
            let mut body = vec![0u8; len - 4];
            if socket.read_exact(&mut body).await.is_err() {
                return;
            }
            let code = body
                .get(..4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
            match code {
                Some(80877103) | Some(80877104) => {
                    let _ = socket.write_all(b"N").await;
                }
                _ => break,
            }
        }
        let _ = socket.write_all(&reply).await;
        let _ = socket.shutdown().await;
        let mut rest = [0u8; 256];
        while matches!(socket.read(&mut rest).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), answer).await;
}
