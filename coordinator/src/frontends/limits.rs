//! What keeps idle or slow connections from starving the doors.
//!
//! Every open socket is a file descriptor. With the usual soft limit of 1,024,
//! about a thousand connections that connect and send nothing used to make every
//! door (and the workers' channels) unreachable. So:
//! - at start the soft limit is raised to the hard one ([`raise_fd_limit`]);
//! - each door takes at most `server.max_connections` at once ([`Door::admit`]),
//!   and fewer when the descriptor limit cannot hold that many for all three doors
//!   plus a reserve for workers, sources and files; one more is refused with a
//!   clear answer (SQLSTATE 53300 on the PostgreSQL port, HTTP 503);
//! - a connection that has not said anything (or not finished logging in) within
//!   `server.handshake_timeout_secs` is closed ([`FirstBytes`], and each door's
//!   own login and header timeouts).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for everything that is not a client connection: worker
/// channels, source connections, files, the listeners.
const RESERVE: u64 = 512;

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                tracing::debug!(
                    from = limit.rlim_cur,
                    to = limit.rlim_max,
                    "raised the open-files limit"
                );
                return limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// How many connections each of the three doors may hold: the configured
/// number, or less when the descriptor limit cannot hold it for all doors.
pub fn per_door(configured: usize, fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(RESERVE) / 3;
    let allowed = configured.min(room as usize).max(16);
    if allowed < configured {
        tracing::warn!(
            configured,
            allowed,
            fd_limit,
            "server.max_connections lowered to what the open-files limit holds for three doors (raise `ulimit -n`)"
        );
    }
    allowed
}

/// One door's connection limit and handshake timeout.
#[derive(Clone, Debug)]
pub struct Door {
    name: &'static str,
    permits: Arc<Semaphore>,
    max: usize,
    pub handshake: Duration,
}

impl Door {
    pub fn new(name: &'static str, max: usize, handshake: Duration) -> Self {
        Self {
            name,
            permits: Arc::new(Semaphore::new(max)),
            max,
            handshake,
        }
    }

    /// A place for one more connection, or None when the door is full.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            tracing::warn!(
                door = self.name,
                max = self.max,
                "connection refused: the door is full (server.max_connections)"
            );
        }
        permit
    }

    /// The next connection on `listener`: an accept error (out of descriptors, say)
    /// is logged and retried a little later instead of spinning or ending the door.
    pub async fn accept(
        &self,
        listener: &tokio::net::TcpListener,
    ) -> (tokio::net::TcpStream, std::net::SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(s) => return s,
                Err(e) => {
                    tracing::warn!(door = self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Why a connection was refused, for the client.
    pub fn full_message(&self) -> String {
        format!(
            "too many connections: the {} port holds {} at once (server.max_connections)",
            self.name, self.max
        )
    }
}

/// A socket that must send its first bytes within a deadline, and that holds its
/// door's place until it closes.
pub struct FirstBytes<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _permit: OwnedSemaphorePermit,
}

impl<S> FirstBytes<S> {
    pub fn new(inner: S, within: Duration, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            _permit: permit,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &read {
            if buf.filled().len() > before {
                self.deadline = None;
            }
            return read;
        }
        if read.is_pending() {
            if let Some(deadline) = self.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent nothing in time",
                    )));
                }
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for FirstBytes<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn doors_fit_the_descriptor_limit() {
        assert_eq!(per_door(4096, 1_048_576), 4096);
        assert_eq!(per_door(4096, 1024), 170);
        assert_eq!(per_door(4096, 100), 16);
    }

    #[tokio::test]
    async fn a_silent_socket_times_out_and_a_full_door_refuses() -> std::io::Result<()> {
        let door = Door::new("test", 1, Duration::from_millis(200));
        let permit = door.admit().expect("a place");
        assert!(door.admit().is_none(), "the second connection is refused");
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = FirstBytes::new(server, door.handshake, permit);
        let mut buf = [0u8; 8];
        let err = guarded.read(&mut buf).await.expect_err("nothing was sent");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(guarded);
        assert!(
            door.admit().is_some(),
            "a closed connection frees its place"
        );

        let permit = door.admit().expect("a place");
        let (mut client2, server) = tokio::io::duplex(64);
        let mut guarded = FirstBytes::new(server, Duration::from_millis(100), permit);
        client2.write_all(b"hi").await?;
        assert_eq!(guarded.read(&mut buf).await?, 2);
        // After the first bytes, silence is the protocol's business.
        let quiet = tokio::time::timeout(Duration::from_millis(300), guarded.read(&mut buf)).await;
        assert!(quiet.is_err(), "no deadline after the first bytes");
        client.shutdown().await?;
        Ok(())
    }
}
