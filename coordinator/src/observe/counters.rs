//! The coordinator's counters: plain atomics that the pool, the scheduler and the
//! engine bump and `metrics.rs` renders for Prometheus. A leaf module.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the query path and the worker pool.
#[derive(Debug, Default)]
pub struct Counters {
    pub queries: AtomicU64,
    pub fragments: AtomicU64,
    pub fragment_retries: AtomicU64,
    pub rows_from_workers: AtomicU64,
    /// Bytes of the Flight messages of fragment results, as they crossed the wire.
    pub wire_bytes_from_workers: AtomicU64,
    pub stages: AtomicU64,
    pub exchange_bytes: AtomicU64,
    pub lost_outputs: AtomicU64,
    pub streamed_restarts: AtomicU64,
    pub relayed_results: AtomicU64,
    pub query_timeouts: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
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
