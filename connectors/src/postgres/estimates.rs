//! PostgreSQL's own estimate of a pushed-down statement's result.
//!
//! `EXPLAIN (FORMAT JSON)` plans the statement without running it; the top node's
//! `Plan Rows` and `Plan Width` come from the statistics ANALYZE keeps (row counts,
//! distinct values, most common values, histograms), with the statement's filters
//! and joins applied. That is the best size Quiver can know for a database scan, and
//! the join order reads it. Answers are kept for a while, since a query is planned
//! twice (once for the join order's estimates, once for real), and an answer that
//! takes more than two seconds is given up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_postgres::SimpleQueryMessage;

/// How long an estimate is reused.
const KEEP: Duration = Duration::from_secs(30);
/// Statements remembered at most; the memory is cleared when it is full.
const REMEMBERED: usize = 512;
/// Planning a statement takes PostgreSQL milliseconds; longer means it is unwell.
const PATIENCE: Duration = Duration::from_secs(2);

/// Rows and bytes of a statement's result.
type Size = (u64, u64);

pub(crate) struct Estimates {
    pool: Pool,
    /// Each statement's estimate and when it was asked for.
    known: Mutex<HashMap<String, (Instant, Option<Size>)>>,
}

impl Estimates {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Rows and bytes PostgreSQL expects `sql` to return; `None` when it cannot say.
    pub async fn of(&self, sql: &str) -> Option<Size> {
        if let Ok(known) = self.known.lock() {
            if let Some((at, estimate)) = known.get(sql) {
                if at.elapsed() < KEEP {
                    return *estimate;
                }
            }
        }
        let estimate = tokio::time::timeout(PATIENCE, self.explain(sql))
            .await
            .ok()
            .flatten();
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= REMEMBERED {
                known.clear();
            }
            known.insert(sql.to_string(), (Instant::now(), estimate));
        }
        estimate
    }

    async fn explain(&self, sql: &str) -> Option<Size> {
        let client = self.pool.get().await.ok()?;
        // The simple protocol returns the plan as text, whatever the type of its column.
        let messages = client
            .simple_query(&format!("EXPLAIN (FORMAT JSON) {sql}"))
            .await
            .map_err(|e| tracing::debug!("no estimate from PostgreSQL: {e}"))
            .ok()?;
        messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(top_of_plan),
            _ => None,
        })
    }
}

/// Rows and bytes (rows × width) of the top node of an `EXPLAIN (FORMAT JSON)` answer.
fn top_of_plan(json: &str) -> Option<Size> {
    let answer: serde_json::Value = serde_json::from_str(json).ok()?;
    let plan = answer.get(0)?.get("Plan")?;
    let rows = plan.get("Plan Rows")?.as_f64()?.max(0.0);
    let width = plan.get("Plan Width")?.as_f64()?.max(0.0);
    Some((rows.round() as u64, (rows * width).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_node_gives_rows_and_bytes() {
        let json = r#"[{"Plan": {"Node Type": "Hash Join", "Startup Cost": 1.0, "Total Cost": 9.5,
            "Plan Rows": 120, "Plan Width": 16, "Plans": [{"Node Type": "Seq Scan", "Plan Rows": 5000, "Plan Width": 8}]}}]"#;
        assert_eq!(top_of_plan(json), Some((120, 1920)));
    }

    #[test]
    fn anything_else_gives_nothing() {
        for text in [
            "",
            "[]",
            "[{}]",
            r#"[{"Plan": {"Plan Rows": "many"}}]"#,
            "QUERY PLAN",
        ] {
            assert_eq!(top_of_plan(text), None, "{text}");
        }
    }
}
