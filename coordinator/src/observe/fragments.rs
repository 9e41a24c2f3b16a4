//! The stage tasks and streamed fragments this coordinator ran, for `system.fragments`.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Records kept; the oldest finished ones go first.
const KEEP: usize = 5000;

#[derive(Debug, Clone)]
pub struct FragmentRecord {
    pub query_id: String,
    /// Stage id; 0 for the fragments streamed to the coordinator.
    pub stage: u32,
    pub task: u32,
    pub attempt: u32,
    pub worker: String,
    /// `running`, `finished`, `failed`, `retried` (run again elsewhere) or `cancelled`.
    pub state: &'static str,
    pub started_at: SystemTime,
    started: Instant,
    pub elapsed_ms: Option<u64>,
    pub rows: u64,
    pub bytes: u64,
    pub spilled_bytes: u64,
    pub error: Option<String>,
    /// What the worker measured (finished attempts only): CPU time of the
    /// fragment's operators, the peak of its memory pool, bytes read per source.
    pub cpu_nanos: u64,
    pub peak_memory: u64,
    pub reads: Vec<quiver_proto::SourceRead>,
}

impl FragmentRecord {
    pub fn elapsed_ms(&self) -> u64 {
        self.elapsed_ms
            .unwrap_or_else(|| self.started.elapsed().as_millis() as u64)
    }

    /// A running attempt, started now.
    fn running(query_id: &str, stage: u32, task: u32, attempt: u32, worker: &str) -> Self {
        Self {
            query_id: query_id.to_string(),
            stage,
            task,
            attempt,
            worker: worker.to_string(),
            state: "running",
            started_at: SystemTime::now(),
            started: Instant::now(),
            elapsed_ms: None,
            rows: 0,
            bytes: 0,
            spilled_bytes: 0,
            error: None,
            cpu_nanos: 0,
            peak_memory: 0,
            reads: vec![],
        }
    }

    #[cfg(test)]
    pub fn for_tests(
        stage: u32,
        worker: &str,
        state: &'static str,
        started_at: SystemTime,
        elapsed_ms: u64,
    ) -> Self {
        Self {
            state,
            started_at,
            elapsed_ms: Some(elapsed_ms),
            ..Self::running("q", stage, 0, 1, worker)
        }
    }
}

#[derive(Debug, Default)]
pub struct FragmentLog {
    records: Mutex<VecDeque<FragmentRecord>>,
}

/// One attempt in the log; dropped before [`LoggedAttempt::end`] (the query failed
/// elsewhere or was cancelled), it is recorded as `cancelled`.
#[derive(Debug)]
pub struct LoggedAttempt {
    log: Arc<FragmentLog>,
    query_id: String,
    stage: u32,
    task: u32,
    attempt: u32,
    ended: bool,
}

impl LoggedAttempt {
    /// Records what the worker measured the attempt cost (its closing statistics).
    pub fn cost(&self, stats: &quiver_proto::FragmentStats) {
        self.log.update(self, |x| {
            x.cpu_nanos = stats.cpu_nanos;
            x.peak_memory = stats.peak_memory;
            x.reads = stats.reads.clone();
        });
    }

    pub fn end(
        mut self,
        state: &'static str,
        rows: u64,
        bytes: u64,
        spilled: u64,
        error: Option<String>,
    ) {
        self.ended = true;
        self.log.finish(&self, state, rows, bytes, spilled, error);
    }
}

impl Drop for LoggedAttempt {
    fn drop(&mut self) {
        if !self.ended {
            self.log.finish(self, "cancelled", 0, 0, 0, None);
        }
    }
}

impl FragmentLog {
    pub fn begin(
        self: &Arc<Self>,
        query_id: &str,
        stage: u32,
        task: u32,
        attempt: u32,
        worker: &str,
    ) -> LoggedAttempt {
        let record = FragmentRecord::running(query_id, stage, task, attempt, worker);
        {
            let mut r = self.records.lock();
            r.push_back(record);
            while r.len() > KEEP {
                match r.iter().position(|x| x.state != "running") {
                    Some(i) => {
                        r.remove(i);
                    }
                    None => break,
                }
            }
        }
        LoggedAttempt {
            log: self.clone(),
            query_id: query_id.to_string(),
            stage,
            task,
            attempt,
            ended: false,
        }
    }

    /// Records how an attempt ended.
    fn finish(
        &self,
        id: &LoggedAttempt,
        state: &'static str,
        rows: u64,
        bytes: u64,
        spilled: u64,
        error: Option<String>,
    ) {
        self.update(id, |x| {
            x.state = state;
            x.rows = rows;
            x.bytes = bytes;
            x.spilled_bytes = spilled;
            x.error = error;
            x.elapsed_ms = Some(x.started.elapsed().as_millis() as u64);
        });
    }

    fn update(&self, id: &LoggedAttempt, f: impl FnOnce(&mut FragmentRecord)) {
        {
            let mut r = self.records.lock();
            let found = r.iter_mut().rev().find(|x| {
                x.query_id == id.query_id
                    && x.stage == id.stage
                    && x.task == id.task
                    && x.attempt == id.attempt
            });
            if let Some(x) = found {
                f(x);
            }
        }
    }

    /// The attempts of one query.
    pub fn of_query(&self, query_id: &str) -> Vec<FragmentRecord> {
        self.records
            .lock()
            .iter()
            .filter(|x| x.query_id == query_id)
            .cloned()
            .collect()
    }

    pub fn snapshot(&self) -> Vec<FragmentRecord> {
        self.records.lock().iter().cloned().collect()
    }
}
