//! Prometheus metrics (`server.metrics_listen`): queries, fragments, retries and
//! the worker pool, in the text exposition format at `GET /metrics`.
//!
//! The endpoint answers one fixed document, so a few lines of HTTP/1.1 over a
//! TCP listener do; no HTTP server framework is pulled in for it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::pool::{WorkerPool, WorkerState};

/// Counters shared by the query path and the worker pool.
#[derive(Debug, Default)]
pub struct Counters {
    pub queries: AtomicU64,
    pub fragments: AtomicU64,
    pub fragment_retries: AtomicU64,
    pub rows_from_workers: AtomicU64,
    pub stages: AtomicU64,
    pub exchange_bytes: AtomicU64,
    pub lost_outputs: AtomicU64,
    pub query_timeouts: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The metrics document.
pub fn render(pool: &WorkerPool) -> String {
    let c = pool.counters();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    };
    counter("quiver_queries_total", "Statements planned.", c.queries.load(Ordering::Relaxed));
    counter("quiver_fragments_total", "Fragments started on workers.", c.fragments.load(Ordering::Relaxed));
    counter("quiver_fragment_retries_total", "Fragments moved to another worker after theirs was lost.", c.fragment_retries.load(Ordering::Relaxed));
    counter("quiver_worker_rows_total", "Rows received from workers.", c.rows_from_workers.load(Ordering::Relaxed));
    counter("quiver_stages_total", "Query stages run on workers.", c.stages.load(Ordering::Relaxed));
    counter("quiver_exchange_bytes_total", "Bytes stage tasks wrote to exchanges.", c.exchange_bytes.load(Ordering::Relaxed));
    counter("quiver_lost_outputs_total", "Stage outputs recomputed after their worker was lost.", c.lost_outputs.load(Ordering::Relaxed));
    counter("quiver_query_timeouts_total", "Queries cancelled by server.query_timeout_secs.", c.query_timeouts.load(Ordering::Relaxed));
    let workers = pool.all();
    let _ = writeln!(out, "# HELP quiver_workers Workers by state.\n# TYPE quiver_workers gauge");
    for state in [WorkerState::Starting, WorkerState::Ready, WorkerState::Unhealthy, WorkerState::Draining] {
        let n = workers.iter().filter(|w| w.state() == state).count();
        let _ = writeln!(out, "quiver_workers{{state=\"{}\"}} {n}", state.as_str());
    }
    let _ = writeln!(out, "# HELP quiver_worker_running_fragments Fragments running per worker.\n# TYPE quiver_worker_running_fragments gauge");
    for w in &workers {
        let _ = writeln!(out, "quiver_worker_running_fragments{{worker=\"{}\"}} {}", w.id, w.running_fragments());
    }
    let _ = writeln!(out, "# HELP quiver_scaling_decisions_total Worker pool decisions by action.\n# TYPE quiver_scaling_decisions_total counter");
    for (action, n) in pool.events.counts() {
        let _ = writeln!(out, "quiver_scaling_decisions_total{{action=\"{action}\"}} {n}");
    }
    out
}

/// Serves `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, pool: Arc<WorkerPool>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { continue };
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&request[..n]);
                let (status, body) = if line.starts_with("GET /metrics ") || line.starts_with("GET / ") {
                    ("200 OK", render(&pool))
                } else {
                    ("404 Not Found", "only GET /metrics is served here\n".to_string())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_add() {
        let c = super::Counters::default();
        super::Counters::add(&c.queries, 2);
        assert_eq!(c.queries.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
