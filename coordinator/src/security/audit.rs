//! The audit log: one JSON line per query (user, client, statement, objects read,
//! outcome, rows, bytes) and per failed login, appended to `server.audit_log`.
//! Secrets never reach it: statements are logged as sent, credentials never.

use parking_lot::Mutex;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

/// What one query did, for its audit line.
#[derive(Debug, Clone, Default)]
pub struct QueryAudit {
    pub query_id: String,
    pub user: Option<String>,
    pub client: Option<String>,
    pub statement: String,
    /// Tables the plan reads, `catalog.schema.table`.
    pub objects: Vec<String>,
    /// finished, failed, cancelled, denied, refused.
    pub outcome: String,
    pub error: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
    /// Answered from the results cache.
    pub cache_hit: bool,
    /// Rows a write statement wrote.
    pub rows_written: Option<u64>,
    /// What the query used (see `crate::observe::usage`).
    pub cpu_secs: f64,
    pub peak_memory_bytes: u64,
    /// Bytes read, by source.
    pub bytes_read: std::collections::BTreeMap<String, u64>,
    pub exchange_bytes: u64,
    pub container_secs: f64,
    pub worker_wait_ms: u64,
}

pub struct AuditLog {
    out: Option<Mutex<std::fs::File>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("enabled", &self.out.is_some())
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl AuditLog {
    /// Appends to `path`, creating it (mode 0600: statements may be sensitive).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        Ok(Self {
            out: Some(Mutex::new(options.open(path)?)),
        })
    }

    /// A log that writes nothing (no `server.audit_log`).
    pub fn disabled() -> Self {
        Self { out: None }
    }

    fn write(&self, line: serde_json::Value) {
        let Some(out) = &self.out else { return };
        let mut text = line.to_string();
        text.push('\n');
        {
            let mut file = out.lock();
            // One write per line, so lines of concurrent queries never interleave.
            if let Err(e) = file.write_all(text.as_bytes()) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
    }

    pub fn query(&self, q: &QueryAudit) {
        self.write(json!({
            "time_ms": now_ms(),
            "event": "query",
            "query_id": q.query_id,
            "user": q.user,
            "client": q.client,
            "statement": q.statement,
            "objects": q.objects,
            "outcome": q.outcome,
            "error": q.error,
            "rows": q.rows,
            "bytes": q.bytes,
            "elapsed_ms": q.elapsed_ms,
            "cache_hit": q.cache_hit,
            "rows_written": q.rows_written,
            "cpu_secs": q.cpu_secs,
            "peak_memory_bytes": q.peak_memory_bytes,
            "bytes_read": q.bytes_read,
            "exchange_bytes": q.exchange_bytes,
            "container_secs": q.container_secs,
            "worker_wait_ms": q.worker_wait_ms,
        }));
    }

    pub fn login_failed(&self, user: &str, client: Option<SocketAddr>, reason: &str) {
        tracing::warn!(user, client = ?client, reason, "failed login");
        self.write(json!({
            "time_ms": now_ms(),
            "event": "login_failed",
            "user": user,
            "client": client.map(|c| c.to_string()),
            "reason": reason,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_and_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        log.query(&QueryAudit {
            query_id: "q1".into(),
            statement: "SELECT 'a\"b'".into(),
            outcome: "finished".into(),
            rows: 3,
            ..Default::default()
        });
        log.login_failed("eve", None, "invalid username or password");
        drop(log);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["statement"], "SELECT 'a\"b'");
        assert_eq!(lines[0]["rows"], 3);
        assert_eq!(lines[1]["event"], "login_failed");
        assert_eq!(lines[1]["user"], "eve");
    }
}
