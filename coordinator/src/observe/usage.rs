//! Cost per query: what a query used, summed when it ends from its fragments'
//! closing statistics (CPU and memory measured on the workers, bytes read per
//! source) and the coordinator's own timings (the wait for workers, how long it
//! held each worker). `system.queries`, the audit log and Prometheus carry it;
//! `system.usage` sums it per user and hour.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use crate::observe::fragments::FragmentRecord;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Time the query waited for a worker to start (scale from zero).
    pub worker_wait_ms: u64,
    /// Workers started for it.
    pub workers_started: u32,
    /// CPU time its fragments' operators used on the workers.
    pub cpu_secs: f64,
    /// The most memory one of its fragments reserved at once.
    pub peak_memory: u64,
    /// Bytes its scans read, by source.
    pub source_bytes: BTreeMap<String, u64>,
    /// Rows and bytes its stage tasks wrote to exchanges.
    pub exchange_rows: u64,
    pub exchange_bytes: u64,
    /// For each worker it ran on, the time from its first fragment there to its
    /// last one's end, summed: the container time the query held.
    pub container_secs: f64,
}

impl Usage {
    /// Sums the finished attempts of one query's fragments.
    pub fn of(fragments: &[FragmentRecord]) -> Self {
        let mut usage = Usage::default();
        let mut spans: HashMap<&str, (SystemTime, SystemTime)> = HashMap::new();
        for f in fragments {
            let end = f.started_at + Duration::from_millis(f.elapsed_ms());
            let span = spans
                .entry(f.worker.as_str())
                .or_insert((f.started_at, end));
            span.0 = span.0.min(f.started_at);
            span.1 = span.1.max(end);
            if f.state != "finished" {
                continue;
            }
            usage.cpu_secs += f.cpu_nanos as f64 / 1e9;
            usage.peak_memory = usage.peak_memory.max(f.peak_memory);
            for read in &f.reads {
                *usage.source_bytes.entry(read.source.clone()).or_default() += read.bytes;
            }
            // Stage 0 streams to the coordinator; the others write exchanges.
            if f.stage != 0 {
                usage.exchange_rows += f.rows;
                usage.exchange_bytes += f.bytes;
            }
        }
        usage.container_secs = spans
            .values()
            .map(|(start, end)| end.duration_since(*start).unwrap_or_default().as_secs_f64())
            .sum();
        usage
    }

    /// Adds what another query used (the peak is the larger of the two).
    pub fn add(&mut self, other: &Usage) {
        self.worker_wait_ms += other.worker_wait_ms;
        self.workers_started += other.workers_started;
        self.cpu_secs += other.cpu_secs;
        self.peak_memory = self.peak_memory.max(other.peak_memory);
        for (source, bytes) in &other.source_bytes {
            *self.source_bytes.entry(source.clone()).or_default() += bytes;
        }
        self.exchange_rows += other.exchange_rows;
        self.exchange_bytes += other.exchange_bytes;
        self.container_secs += other.container_secs;
    }

    pub fn bytes_read(&self) -> u64 {
        self.source_bytes.values().sum()
    }

    /// `source=bytes` pairs, as `system.queries` shows them.
    pub fn sources_text(&self) -> String {
        self.source_bytes
            .iter()
            .map(|(s, b)| format!("{s}={b}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::SourceRead;
    use std::time::UNIX_EPOCH;

    fn record(
        stage: u32,
        worker: &str,
        state: &'static str,
        start_ms: u64,
        elapsed_ms: u64,
    ) -> FragmentRecord {
        FragmentRecord::for_tests(
            stage,
            worker,
            state,
            UNIX_EPOCH + Duration::from_millis(start_ms),
            elapsed_ms,
        )
    }

    #[test]
    fn a_query_sums_its_finished_fragments_and_the_time_it_held_each_worker() {
        let mut a = record(1, "w1", "finished", 1_000, 2_000);
        a.cpu_nanos = 1_500_000_000;
        a.peak_memory = 10;
        a.rows = 5;
        a.bytes = 50;
        a.reads = vec![SourceRead {
            source: "tpch".into(),
            bytes: 700,
        }];
        let mut b = record(0, "w1", "finished", 2_500, 1_500);
        b.cpu_nanos = 500_000_000;
        b.peak_memory = 30;
        b.rows = 99;
        b.reads = vec![
            SourceRead {
                source: "tpch".into(),
                bytes: 300,
            },
            SourceRead {
                source: "pg".into(),
                bytes: 1,
            },
        ];
        let mut retried = record(1, "w2", "retried", 1_000, 500);
        retried.cpu_nanos = 9_000_000_000;
        let u = Usage::of(&[a, b, retried]);
        assert!((u.cpu_secs - 2.0).abs() < 1e-9, "{}", u.cpu_secs);
        assert_eq!(u.peak_memory, 30);
        assert_eq!(
            u.source_bytes,
            BTreeMap::from([("pg".to_string(), 1), ("tpch".to_string(), 1000)])
        );
        assert_eq!(
            (u.exchange_rows, u.exchange_bytes),
            (5, 50),
            "stage 0 streams to the coordinator"
        );
        // w1 from 1.0 s to 4.0 s, w2 from 1.0 s to 1.5 s.
        assert!(
            (u.container_secs - 3.5).abs() < 1e-9,
            "{}",
            u.container_secs
        );
        assert_eq!(u.sources_text(), "pg=1, tpch=1000");
    }
}
