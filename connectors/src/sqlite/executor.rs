//! Runs the SQL that federation pushes down to SQLite, on a blocking thread per
//! statement, and streams the rows back as Arrow batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, DataType as SqlType, Expr as SqlExpr, Statement,
};
use datafusion::sql::unparser::dialect::{Dialect, SqliteDialect};
use datafusion_federation::sql::{AstAnalyzer, SQLExecutor};
use futures::TryStreamExt;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;

use super::types::{append, finish, Wire};

const BATCH_ROWS: usize = 8192;

/// SQLite has no date type: `CAST('2000-01-01' AS DATE)` is NUMERIC affinity and
/// reads as 2000. Dates and times are stored as ISO text (see `types.rs`), which
/// compares in time order, so such casts are dropped and the text compared as is.
fn dates_as_text(mut statement: Statement) -> Result<Statement> {
    let _ = visit_expressions_mut(&mut statement, |e| {
        let inner = match e {
            SqlExpr::Cast {
                expr,
                data_type: SqlType::Date | SqlType::Datetime(_) | SqlType::Timestamp(..),
                ..
            } => Some(expr.as_ref().clone()),
            _ => None,
        };
        if let Some(inner) = inner {
            *e = inner;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    Ok(statement)
}

/// One SQLite file: every table of it shares this executor, so joins between
/// them are pushed down together.
pub struct SqliteExecutor {
    pub(crate) source: String,
    pub(crate) context: String,
    pub(crate) opener: super::Opener,
    /// At most `pool_size` statements hold a connection at once.
    pub(crate) permits: Arc<Semaphore>,
    /// Zero: no limit.
    pub(crate) statement_timeout: Duration,
}

#[async_trait]
impl SQLExecutor for SqliteExecutor {
    fn name(&self) -> &str {
        &self.source
    }

    fn compute_context(&self) -> Option<String> {
        Some(self.context.clone())
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(SqliteDialect {})
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        Some(Box::new(|statement| {
            dates_as_text(crate::sql_fixups::repair_statement(statement)?)
        }))
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<SendableRecordBatchStream> {
        let (query, source) = (query.to_string(), self.source.clone());
        let (opener, permits, timeout) = (
            self.opener.clone(),
            self.permits.clone(),
            self.statement_timeout,
        );
        tracing::debug!(source = %source, sql = %query, "pushing down");
        let wires: Vec<Wire> = schema
            .fields()
            .iter()
            .map(|f| Wire::for_type(f.data_type()))
            .collect();
        let wire_schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .zip(&wires)
                .map(|(f, w)| Field::new(f.name(), w.arrow_type(), true))
                .collect::<Vec<_>>(),
        ));
        // A blocking thread reads the rows and hands batches over a small channel:
        // the file is read only as fast as the plan consumes, and a dropped query
        // drops the channel, which ends the thread at its next batch.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let errors = tx.clone();
            let read = tokio::task::spawn_blocking(move || {
                let err = |what: &str, e: &dyn std::fmt::Display| {
                    DataFusionError::External(
                        format!("source '{source}' (sqlite): {what}: {e}").into(),
                    )
                };
                let conn = opener
                    .open()
                    .map_err(|e| crate::Unreachable::error(&source, "sqlite", &e))?;
                // A watchdog interrupts the statement when it runs past the timeout or
                // when the query is gone (a long aggregate sends nothing to notice that by).
                let interrupt = conn.get_interrupt_handle();
                let timed_out = Arc::new(AtomicBool::new(false));
                let watchdog = {
                    let (done, wait) = std::sync::mpsc::channel::<()>();
                    let (tx, timed_out) = (tx.clone(), timed_out.clone());
                    let started = std::time::Instant::now();
                    std::thread::spawn(move || loop {
                        match wait.recv_timeout(Duration::from_millis(200)) {
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                let late = !timeout.is_zero() && started.elapsed() >= timeout;
                                if late || tx.is_closed() {
                                    timed_out.store(late, Ordering::Relaxed);
                                    interrupt.interrupt();
                                    return;
                                }
                            }
                            _ => return,
                        }
                    });
                    done
                };
                let failed = |e: rusqlite::Error| {
                    if timed_out.load(Ordering::Relaxed) {
                        err(
                            "statement_timeout_secs exceeded",
                            &format!("interrupted after {}s", timeout.as_secs()),
                        )
                    } else {
                        err("query failed", &e)
                    }
                };
                let mut statement = conn.prepare(&query).map_err(failed)?;
                if statement.column_count() != wires.len() {
                    return Err(err(
                        "query failed",
                        &format!(
                            "returned {} columns, expected {}",
                            statement.column_count(),
                            wires.len()
                        ),
                    ));
                }
                let names: Vec<String> = statement
                    .column_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let mut rows = statement.query([]).map_err(failed)?;
                let mut builders: Vec<_> = wires.iter().map(|w| w.builder(BATCH_ROWS)).collect();
                let mut count = 0;
                let flush =
                    |builders: &mut Vec<Box<dyn datafusion::arrow::array::ArrayBuilder>>| {
                        let columns: Vec<ArrayRef> = builders.iter_mut().map(finish).collect();
                        RecordBatch::try_new(wire_schema.clone(), columns)
                            .map_err(DataFusionError::from)
                    };
                while let Some(row) = rows.next().map_err(failed)? {
                    for (i, (builder, wire)) in builders.iter_mut().zip(&wires).enumerate() {
                        let value = row.get_ref(i).map_err(failed)?;
                        append(builder.as_mut(), *wire, value).map_err(|e| {
                            let name = names.get(i).map(String::as_str).unwrap_or("?");
                            err(&format!("column {name}"), &e)
                        })?;
                    }
                    count += 1;
                    if count == BATCH_ROWS {
                        count = 0;
                        if tx.blocking_send(flush(&mut builders)).is_err() {
                            return Ok(());
                        }
                    }
                }
                if count > 0 {
                    let _ = tx.blocking_send(flush(&mut builders));
                }
                drop(watchdog);
                Ok::<(), DataFusionError>(())
            });
            let outcome = match read.await {
                Ok(result) => result,
                Err(e) => Err(DataFusionError::Execution(format!(
                    "sqlite reader failed: {e}"
                ))),
            };
            if let Err(e) = outcome {
                let _ = errors.send(Err(e)).await;
            }
        });
        let target = schema.clone();
        let stream = ReceiverStream::new(rx).and_then(move |batch| {
            let target = target.clone();
            async move { crate::remote_schema::cast_to(batch, &target) }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        plan_err!("tables come from Quiver's discovery")
    }

    async fn get_table_schema(&self, table: &str) -> Result<SchemaRef> {
        plan_err!("no schema known for {table}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::SQLiteDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn date_casts_are_dropped_and_other_casts_kept() {
        let mut parsed = Parser::parse_sql(
            &SQLiteDialect {},
            "SELECT CAST(x AS TEXT) FROM t WHERE d >= CAST('2000-01-01' AS DATE) AND ts < CAST('2001-01-01 00:00:00' AS TIMESTAMP)",
        )
        .expect("parses");
        let out = dates_as_text(parsed.remove(0))
            .expect("rewrites")
            .to_string();
        assert_eq!(
            out,
            "SELECT CAST(x AS TEXT) FROM t WHERE d >= '2000-01-01' AND ts < '2001-01-01 00:00:00'"
        );
    }
}
