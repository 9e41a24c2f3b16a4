//! The queries this coordinator runs and ran, for `system.queries`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Finished queries kept for the system table.
const KEEP_FINISHED: usize = 1000;

#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub id: String,
    pub user: Option<String>,
    pub sql: String,
    /// `running`, `finished`, `failed` or `cancelled`.
    pub state: &'static str,
    pub started_at: SystemTime,
    started: Instant,
    pub elapsed_secs: Option<f64>,
    pub rows: u64,
    /// Bytes of the Arrow batches sent to the client.
    pub bytes: u64,
    pub error: Option<String>,
}

impl QueryRecord {
    /// Seconds since start, or the final duration once it ended.
    pub fn elapsed(&self) -> f64 {
        self.elapsed_secs.unwrap_or_else(|| self.started.elapsed().as_secs_f64())
    }
}

#[derive(Debug, Default)]
pub struct QueryLog {
    queries: Mutex<VecDeque<QueryRecord>>,
}

impl QueryLog {
    /// Records a query as running; the returned handle records how it ends.
    pub fn begin(self: &Arc<Self>, id: &str, user: Option<String>, sql: &str) -> RunningQuery {
        let record = QueryRecord {
            id: id.to_string(),
            user,
            sql: sql.to_string(),
            state: "running",
            started_at: SystemTime::now(),
            started: Instant::now(),
            elapsed_secs: None,
            rows: 0,
            bytes: 0,
            error: None,
        };
        if let Ok(mut q) = self.queries.lock() {
            q.push_back(record);
            // Drop the oldest finished ones beyond the limit; running ones stay.
            while q.iter().filter(|r| r.state != "running").count() > KEEP_FINISHED {
                match q.iter().position(|r| r.state != "running") {
                    Some(i) => {
                        q.remove(i);
                    }
                    None => break,
                }
            }
        }
        RunningQuery { log: self.clone(), id: id.to_string(), rows: 0, bytes: 0, outcome: None }
    }

    pub fn snapshot(&self) -> Vec<QueryRecord> {
        self.queries.lock().map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    fn end(&self, id: &str, state: &'static str, rows: u64, bytes: u64, error: Option<String>) {
        if let Ok(mut q) = self.queries.lock() {
            if let Some(r) = q.iter_mut().rev().find(|r| r.id == id) {
                r.state = state;
                r.rows = rows;
                r.bytes = bytes;
                r.error = error;
                r.elapsed_secs = Some(r.started.elapsed().as_secs_f64());
            }
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
    pub fn add_rows(&mut self, n: usize) {
        self.rows += n as u64;
    }

    pub fn add_bytes(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    /// The stream ended; a failure reported before stays the outcome.
    pub fn finished(&mut self) {
        self.outcome.get_or_insert(("finished", None));
    }

    pub fn failed(&mut self, error: String) {
        self.outcome = Some(("failed", Some(error)));
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
        let mut a = log.begin("a", Some("ann".into()), "SELECT 1");
        a.add_rows(1);
        let mut b = log.begin("b", None, "SELECT x");
        let c = log.begin("c", None, "SELECT 3");
        assert!(log.snapshot().iter().all(|r| r.state == "running"));
        a.finished();
        b.failed("no column x".into());
        drop((a, b, c));
        let states: Vec<_> = log.snapshot().iter().map(|r| (r.id.clone(), r.state, r.rows)).collect();
        assert_eq!(states, vec![("a".into(), "finished", 1), ("b".into(), "failed", 0), ("c".into(), "cancelled", 0)]);
        assert_eq!(log.snapshot()[1].error.as_deref(), Some("no column x"));
    }
}
