//! The queries this coordinator runs and ran, for `system.queries`.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::observe::fragments::FragmentLog;
use crate::observe::usage::Usage;
use crate::security::audit::{AuditLog, QueryAudit};

/// Finished queries kept for the system table.
const KEEP_FINISHED: usize = 1000;

#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub id: String,
    pub user: Option<String>,
    /// The client's address.
    pub client: Option<String>,
    pub sql: String,
    /// `queued`, `running`, `finished`, `failed`, `denied`, `refused` or `cancelled`.
    pub state: &'static str,
    pub started_at: SystemTime,
    started: Instant,
    pub elapsed_secs: Option<f64>,
    pub rows: u64,
    /// Bytes of the Arrow batches sent to the client.
    pub bytes: u64,
    pub error: Option<String>,
    /// The tables the query reads, `catalog.schema.table`.
    pub objects: Vec<String>,
    /// Answered from the results cache.
    pub cache_hit: bool,
    /// Rows a write statement wrote (None for reads).
    pub rows_written: Option<u64>,
    /// What the query used (complete once it ended).
    pub usage: Usage,
}

impl QueryRecord {
    /// Seconds since start, or the final duration once it ended.
    pub fn elapsed(&self) -> f64 {
        self.elapsed_secs
            .unwrap_or_else(|| self.started.elapsed().as_secs_f64())
    }

    fn ended(&self) -> bool {
        !matches!(self.state, "running" | "queued")
    }
}

/// Who sent a query, and what.
#[derive(Debug, Clone, Default)]
pub struct QueryOrigin {
    pub user: Option<String>,
    pub client: Option<String>,
    pub sql: String,
}

#[derive(Debug)]
pub struct QueryLog {
    queries: Mutex<VecDeque<QueryRecord>>,
    audit: Arc<AuditLog>,
    /// Running queries' cancel signals, by id.
    cancels: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
    /// The fragments the queries ran, whose costs a query sums when it ends.
    fragments: Arc<FragmentLog>,
    /// What all ended queries used (Prometheus).
    pub totals: Mutex<Usage>,
}

impl Default for QueryLog {
    fn default() -> Self {
        Self::new(Arc::new(AuditLog::disabled()), Arc::default())
    }
}

impl QueryLog {
    /// A log whose ended queries also go to `audit`, with the costs of their
    /// fragments in `fragments`.
    pub fn new(audit: Arc<AuditLog>, fragments: Arc<FragmentLog>) -> Self {
        Self {
            queries: Mutex::default(),
            audit,
            cancels: Mutex::default(),
            fragments,
            totals: Mutex::default(),
        }
    }

    /// The signal that cancels the running query `id` (see [`Self::cancel`]).
    pub fn cancel_signal(&self, id: &str) -> Arc<tokio::sync::Notify> {
        let mut cancels = self.cancels.lock();
        cancels.entry(id.to_string()).or_default().clone()
    }

    /// Cancels the running query `id`; false when no such query runs.
    pub fn cancel(&self, id: &str) -> bool {
        let signal = self.cancels.lock().get(id).cloned();
        match signal {
            Some(n) => {
                // A stored permit: a cancel that arrives between two batches is not lost.
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// One query's record, running or recent.
    pub fn get(&self, id: &str) -> Option<QueryRecord> {
        self.queries
            .lock()
            .iter()
            .rev()
            .find(|r| r.id == id)
            .cloned()
    }

    /// Whether a query with this id was seen.
    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The audit log failed logins go to as well.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Records a query as running; the returned handle records how it ends.
    pub fn begin(self: &Arc<Self>, id: &str, origin: QueryOrigin) -> RunningQuery {
        let record = QueryRecord {
            id: id.to_string(),
            user: origin.user,
            client: origin.client,
            sql: origin.sql,
            state: "running",
            started_at: SystemTime::now(),
            started: Instant::now(),
            elapsed_secs: None,
            rows: 0,
            bytes: 0,
            error: None,
            objects: vec![],
            cache_hit: false,
            rows_written: None,
            usage: Usage::default(),
        };
        {
            let mut q = self.queries.lock();
            q.push_back(record);
            // Drop the oldest ended ones beyond the limit; running ones stay.
            while q.iter().filter(|r| r.ended()).count() > KEEP_FINISHED {
                match q.iter().position(|r| r.ended()) {
                    Some(i) => {
                        q.remove(i);
                    }
                    None => break,
                }
            }
        }
        RunningQuery {
            log: self.clone(),
            id: id.to_string(),
            rows: 0,
            bytes: 0,
            outcome: None,
        }
    }

    pub fn snapshot(&self) -> Vec<QueryRecord> {
        self.queries.lock().iter().cloned().collect()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut QueryRecord)) -> Option<QueryRecord> {
        let mut q = self.queries.lock();
        let r = q.iter_mut().rev().find(|r| r.id == id)?;
        f(r);
        Some(r.clone())
    }

    fn end(&self, id: &str, state: &'static str, rows: u64, bytes: u64, error: Option<String>) {
        {
            let mut c = self.cancels.lock();
            c.remove(id);
        }
        let mut usage = Usage::of(&self.fragments.of_query(id));
        let ended = self.update(id, |r| {
            r.state = state;
            r.rows = rows;
            r.bytes = bytes;
            r.error = error;
            r.elapsed_secs = Some(r.started.elapsed().as_secs_f64());
            usage.worker_wait_ms = r.usage.worker_wait_ms;
            usage.workers_started = r.usage.workers_started;
            r.usage = usage.clone();
        });
        {
            let mut t = self.totals.lock();
            t.add(&usage);
        }
        if let Some(r) = ended {
            self.audit.query(&QueryAudit {
                query_id: r.id,
                user: r.user,
                client: r.client,
                statement: r.sql,
                objects: r.objects,
                outcome: r.state.to_string(),
                error: r.error,
                rows: r.rows,
                bytes: r.bytes,
                elapsed_ms: (r.elapsed_secs.unwrap_or(0.0) * 1000.0) as u64,
                cache_hit: r.cache_hit,
                rows_written: r.rows_written,
                cpu_secs: r.usage.cpu_secs,
                peak_memory_bytes: r.usage.peak_memory,
                bytes_read: r.usage.source_bytes.clone(),
                exchange_bytes: r.usage.exchange_bytes,
                container_secs: r.usage.container_secs,
                worker_wait_ms: r.usage.worker_wait_ms,
            });
        }
    }
}

/// A running query's entry; dropped without an outcome, the query was cancelled.
pub struct RunningQuery {
    log: Arc<QueryLog>,
    id: String,
    rows: u64,
    bytes: u64,
    outcome: Option<(&'static str, Option<String>)>,
}

impl RunningQuery {
    /// A batch reached the client: counted here and, for progress, in the log.
    pub fn add_batch(&mut self, rows: usize, bytes: usize) {
        self.rows += rows as u64;
        self.bytes += bytes as u64;
        let (r, b) = (self.rows, self.bytes);
        self.log.update(&self.id, |q| {
            q.rows = r;
            q.bytes = b;
        });
    }

    /// The query waits in the admission queue.
    pub fn queued(&self) {
        self.log.update(&self.id, |r| r.state = "queued");
    }

    /// The query got its place and runs.
    pub fn running(&self) {
        self.log.update(&self.id, |r| r.state = "running");
    }

    /// The tables the planned query reads.
    pub fn reads(&self, objects: &[String]) {
        self.log.update(&self.id, |r| r.objects = objects.to_vec());
    }

    /// A write statement reports how many rows it wrote.
    pub fn written(&self, rows: u64) {
        self.log.update(&self.id, |r| {
            r.rows_written = Some(r.rows_written.unwrap_or(0) + rows)
        });
    }

    /// The query waited `waited` for `started` workers to start (scale from zero).
    pub fn waited_for_workers(&self, waited: std::time::Duration, started: usize) {
        self.log.update(&self.id, |r| {
            r.usage.worker_wait_ms += waited.as_millis() as u64;
            r.usage.workers_started += started as u32;
        });
    }

    /// The answer comes from the results cache.
    pub fn cache_hit(&self) {
        self.log.update(&self.id, |r| r.cache_hit = true);
    }

    /// The stream ended; a failure reported before stays the outcome.
    pub fn finished(&mut self) {
        self.outcome.get_or_insert(("finished", None));
    }

    /// Planned and handed to the client as endpoints on the workers, which serve
    /// its rows from here on (`workers.client_endpoints`): the coordinator does not
    /// see them, so rows and bytes stay 0.
    pub fn handed_off(&mut self) {
        self.outcome = Some(("handed_off", None));
    }

    /// Failed; `code` tells a denial or a refusal (admission) from other failures.
    pub fn failed_with(&mut self, code: tonic::Code, error: String) {
        let state = match code {
            tonic::Code::PermissionDenied => "denied",
            tonic::Code::ResourceExhausted
                if error.contains("queue") || error.contains("too many queries") =>
            {
                "refused"
            }
            _ => "failed",
        };
        self.outcome = Some((state, Some(error)));
    }

    pub fn failed(&mut self, error: String) {
        self.outcome = Some(("failed", Some(error)));
    }

    /// Cancelled on request (console, PostgreSQL cancel), with who asked.
    pub fn cancelled(&mut self, why: String) {
        self.outcome = Some(("cancelled", Some(why)));
    }
}

impl Drop for RunningQuery {
    fn drop(&mut self) {
        let (state, error) = self.outcome.take().unwrap_or(("cancelled", None));
        self.log.end(&self.id, state, self.rows, self.bytes, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_end_finished_failed_or_cancelled() {
        let log = Arc::new(QueryLog::default());
        let origin = |user: Option<&str>, sql: &str| QueryOrigin {
            user: user.map(str::to_string),
            client: None,
            sql: sql.into(),
        };
        let mut a = log.begin("a", origin(Some("ann"), "SELECT 1"));
        a.add_batch(1, 8);
        let mut b = log.begin("b", origin(None, "SELECT x"));
        let c = log.begin("c", origin(None, "SELECT 3"));
        assert!(log.snapshot().iter().all(|r| r.state == "running"));
        a.finished();
        b.failed("no column x".into());
        drop((a, b, c));
        let states: Vec<_> = log
            .snapshot()
            .iter()
            .map(|r| (r.id.clone(), r.state, r.rows))
            .collect();
        assert_eq!(
            states,
            vec![
                ("a".into(), "finished", 1),
                ("b".into(), "failed", 0),
                ("c".into(), "cancelled", 0)
            ]
        );
        assert_eq!(log.snapshot()[1].error.as_deref(), Some("no column x"));
    }

    #[test]
    fn denied_and_refused_queries_are_told_apart_and_audited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(QueryLog::new(
            Arc::new(AuditLog::open(&path).expect("audit")),
            Arc::default(),
        ));
        let origin = QueryOrigin {
            user: Some("bob".into()),
            client: Some("127.0.0.1:5".into()),
            sql: "SELECT 1".into(),
        };
        let mut d = log.begin("d", origin.clone());
        d.reads(&["quiver.tpch.customer".to_string()]);
        d.failed_with(tonic::Code::PermissionDenied, "access denied".into());
        let mut r = log.begin("r", origin);
        r.queued();
        assert_eq!(log.snapshot()[1].state, "queued");
        r.failed_with(
            tonic::Code::ResourceExhausted,
            "too many queries: 1 running".into(),
        );
        drop((d, r));
        let states: Vec<_> = log.snapshot().iter().map(|r| r.state).collect();
        assert_eq!(states, vec!["denied", "refused"]);
        let text = std::fs::read_to_string(&path).expect("audit file");
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        assert_eq!(first["outcome"], "denied");
        assert_eq!(first["objects"][0], "quiver.tpch.customer");
        assert_eq!(first["client"], "127.0.0.1:5");
    }
}
