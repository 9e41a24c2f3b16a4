//! Writes into a writable SQLite source: `CREATE TABLE … AS`, `INSERT` and
//! `INSERT OVERWRITE`, each in one `BEGIN IMMEDIATE` transaction on a blocking
//! thread (DDL included, so a failed statement leaves no table behind).

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use rusqlite::types::Value;
use rusqlite::TransactionBehavior;

use super::types::{declared_type, Wire};
use super::Opener;
use crate::writable::{TableWriter, WriteMode};

#[derive(Debug)]
pub(crate) struct SqliteWriter {
    pub source: String,
    pub opener: Opener,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// What the reading side hands the writing thread.
enum Piece {
    Rows(RecordBatch),
    /// Every row was sent: commit.
    End,
}

#[async_trait]
impl TableWriter for SqliteWriter {
    async fn write(
        &self,
        table: &str,
        mode: WriteMode,
        schema: SchemaRef,
        mut data: SendableRecordBatchStream,
    ) -> Result<u64> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(2);
        let (opener, source, name) = (self.opener.clone(), self.source.clone(), table.to_string());
        let writing = tokio::task::spawn_blocking(move || {
            write_rows(&opener, &name, mode, &schema, rx).map_err(|e| {
                DataFusionError::External(format!("source '{source}' (sqlite): {e}").into())
            })
        });
        let mut failed = None;
        while let Some(batch) = data.next().await {
            match batch {
                // A closed channel means the writer stopped; its error is the one to report.
                Ok(b) => {
                    if tx.send(Piece::Rows(b)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            let _ = tx.send(Piece::End).await;
        }
        drop(tx);
        let written = writing
            .await
            .map_err(|e| DataFusionError::Execution(format!("sqlite writer failed: {e}")))?;
        match failed {
            Some(e) => Err(e),
            None => written,
        }
    }
}

/// Runs on a blocking thread; commits only after `Piece::End`.
fn write_rows(
    opener: &Opener,
    table: &str,
    mode: WriteMode,
    schema: &SchemaRef,
    mut pieces: tokio::sync::mpsc::Receiver<Piece>,
) -> std::result::Result<u64, String> {
    let mut conn = opener.open()?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot begin a transaction: {e}"))?;
    let qualified = quote(table);
    match mode {
        WriteMode::Create => {
            let ddl = crate::writable::create_table_sql(
                &qualified,
                schema,
                |t| Some(declared_type(t).to_string()),
                quote,
                "SQLite",
            )?;
            tx.execute_batch(&ddl)
                .map_err(|e| format!("cannot create table {table}: {e}"))?;
        }
        WriteMode::Replace => {
            tx.execute(&format!("DELETE FROM {qualified}"), [])
                .map_err(|e| format!("cannot empty table {table}: {e}"))?;
        }
        WriteMode::Append => {}
    }
    let names: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
    let marks = vec!["?"; names.len()].join(", ");
    let sql = format!(
        "INSERT INTO {qualified} ({}) VALUES ({marks})",
        names.join(", ")
    );
    let mut rows = 0u64;
    {
        let mut insert = tx
            .prepare(&sql)
            .map_err(|e| format!("cannot write into {table}: {e}"))?;
        loop {
            match pieces.blocking_recv() {
                Some(Piece::Rows(batch)) => {
                    let columns = batch
                        .columns()
                        .iter()
                        .map(values)
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|e| format!("cannot write into {table}: {e}"))?;
                    for row in 0..batch.num_rows() {
                        let params = columns.iter().map(|c| &c[row]);
                        insert
                            .execute(rusqlite::params_from_iter(params))
                            .map_err(|e| {
                                format!(
                                    "cannot write into {table} (row {}): {e}",
                                    rows + row as u64 + 1
                                )
                            })?;
                    }
                    rows += batch.num_rows() as u64;
                }
                Some(Piece::End) => break,
                // The statement failed upstream: roll back by dropping the transaction.
                None => return Err("the statement failed; nothing was written".into()),
            }
        }
    }
    tx.commit().map_err(|e| format!("commit failed: {e}"))?;
    tracing::debug!(table, rows, "rows inserted into SQLite");
    Ok(rows)
}

/// One column as SQLite values: integers and reals as themselves, dates and
/// times as ISO text (which SQLite's date functions and text comparison read),
/// binary as blobs, everything else as its text.
fn values(column: &ArrayRef) -> std::result::Result<Vec<Value>, String> {
    let wire = Wire::for_type(column.data_type());
    let n = column.len();
    let out = match wire {
        Wire::Bool | Wire::Int => {
            let c = cast(column, &DataType::Int64).map_err(|e| e.to_string())?;
            let a = c.as_primitive::<Int64Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Integer(a.value(i))
                    }
                })
                .collect()
        }
        Wire::Float => {
            let c = cast(column, &DataType::Float64).map_err(|e| e.to_string())?;
            let a = c.as_primitive::<Float64Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Real(a.value(i))
                    }
                })
                .collect()
        }
        Wire::Timestamp => {
            let c = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|e| e.to_string())?;
            let a = c.as_primitive::<TimestampMicrosecondType>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        return Ok(Value::Null);
                    }
                    let t = chrono::DateTime::from_timestamp_micros(a.value(i))
                        .ok_or_else(|| format!("timestamp {} out of range", a.value(i)))?;
                    Ok(Value::Text(
                        t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                    ))
                })
                .collect::<std::result::Result<_, String>>()?
        }
        Wire::Blob => {
            let c = cast(column, &DataType::Binary).map_err(|e| e.to_string())?;
            let a = c.as_binary::<i32>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Blob(a.value(i).to_vec())
                    }
                })
                .collect()
        }
        Wire::Date | Wire::Text => {
            let c = cast(column, &DataType::Utf8).map_err(|e| e.to_string())?;
            let a = c.as_string::<i32>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Text(a.value(i).to_string())
                    }
                })
                .collect()
        }
    };
    Ok(out)
}
