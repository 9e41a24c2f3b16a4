//! Writes into MySQL and MariaDB: batched multi-row `INSERT`s (up to 1,000 rows,
//! or fewer for wide tables, per statement) in one transaction per Quiver
//! statement. A new table is created first; MySQL commits DDL at once, so a
//! failed first write drops it again. The server's strict mode reports a value
//! that does not fit with its column; the error adds which rows of the statement
//! that `INSERT` carried.

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef,
    TimeUnit, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, TxOpts, Value};

use crate::writable::{TableWriter, WriteMode};

/// Placeholders one statement may carry (the protocol's limit is 65,535).
const MAX_PARAMS: usize = 60_000;
const MAX_ROWS: usize = 1_000;

#[derive(Debug)]
pub struct MySqlWriter {
    pub(crate) source: String,
    pub(crate) pool: Pool,
    pub(crate) database: String,
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// The MySQL column type a new table gets for an Arrow type.
pub fn column_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 | DataType::UInt8 => "SMALLINT".into(),
        DataType::Int32 | DataType::UInt16 => "INT".into(),
        DataType::Int64 | DataType::UInt32 => "BIGINT".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s)
            if *p <= 65 =>
        {
            format!("DECIMAL({p},{s})")
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "LONGTEXT".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "LONGBLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME(6)".into(),
        DataType::Timestamp(_, _) => "DATETIME(6)".into(),
        DataType::Dictionary(_, v) => return column_type(v),
        _ => return None,
    })
}

impl MySqlWriter {
    fn error(&self, what: &str, e: &dyn std::fmt::Display) -> DataFusionError {
        DataFusionError::External(format!("source '{}' (mysql): {what}: {e}", self.source).into())
    }
}

#[async_trait]
impl TableWriter for MySqlWriter {
    async fn write(
        &self,
        table: &str,
        mode: WriteMode,
        schema: SchemaRef,
        mut data: SendableRecordBatchStream,
    ) -> Result<u64> {
        let qualified = format!("{}.{}", quote(&self.database), quote(table));
        let mut conn = self.pool.get_conn().await.map_err(|e| {
            crate::Unreachable::error(&self.source.to_string(), "mysql", &crate::error_chain(&e))
        })?;
        if mode == WriteMode::Create {
            let ddl =
                crate::writable::create_table_sql(&qualified, &schema, column_type, quote, "MySQL")
                    .map_err(|e| self.error("cannot create the table", &e))?;
            conn.query_drop(ddl)
                .await
                .map_err(|e| self.error(&format!("cannot create table {table}"), &e))?;
        }
        let outcome = self
            .insert(&mut conn, &qualified, table, mode, &schema, &mut data)
            .await;
        if outcome.is_err() && mode == WriteMode::Create {
            if let Err(e) = conn
                .query_drop(format!("DROP TABLE IF EXISTS {qualified}"))
                .await
            {
                tracing::warn!(source = %self.source, table, error = %e, "cannot drop the table a failed write created");
            }
        }
        outcome
    }
}

impl MySqlWriter {
    async fn insert(
        &self,
        conn: &mut mysql_async::Conn,
        qualified: &str,
        table: &str,
        mode: WriteMode,
        schema: &SchemaRef,
        data: &mut SendableRecordBatchStream,
    ) -> Result<u64> {
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| self.error("cannot begin a transaction", &e))?;
        if mode == WriteMode::Replace {
            // DELETE, not TRUNCATE: TRUNCATE would commit at once.
            tx.query_drop(format!("DELETE FROM {qualified}"))
                .await
                .map_err(|e| self.error(&format!("cannot empty table {table}"), &e))?;
        }
        let names: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
        let width = names.len().max(1);
        let per_statement = (MAX_PARAMS / width).clamp(1, MAX_ROWS);
        let row_marks = format!("({})", vec!["?"; width].join(", "));
        let mut rows = 0u64;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            let columns = values(&batch)
                .map_err(|e| self.error(&format!("cannot write into {table}"), &e))?;
            let mut start = 0;
            while start < batch.num_rows() {
                let end = (start + per_statement).min(batch.num_rows());
                let mut params = Vec::with_capacity((end - start) * width);
                for row in start..end {
                    params.extend(columns.iter().map(|c| c[row].clone()));
                }
                let sql = format!(
                    "INSERT INTO {qualified} ({}) VALUES {}",
                    names.join(", "),
                    vec![row_marks.as_str(); end - start].join(", ")
                );
                tx.exec_drop(sql, params).await.map_err(|e| {
                    let first = rows + (start as u64) + 1;
                    let last = rows + end as u64;
                    self.error(
                        &format!(
                            "cannot write into {table} (rows {first}-{last} of the statement)"
                        ),
                        &e,
                    )
                })?;
                start = end;
            }
            rows += batch.num_rows() as u64;
        }
        tx.commit()
            .await
            .map_err(|e| self.error("commit failed", &e))?;
        tracing::debug!(source = %self.source, table, rows, "rows inserted into MySQL");
        Ok(rows)
    }
}

/// Each column as MySQL values: integers and floats as themselves, binary as
/// bytes, everything else (decimals, dates, times, text) as its text, which the
/// server converts to the column's type.
fn values(batch: &RecordBatch) -> std::result::Result<Vec<Vec<Value>>, String> {
    batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .map(|(c, f)| column_values(c).map_err(|e| format!("column {}: {e}", f.name())))
        .collect()
}

fn column_values(c: &ArrayRef) -> std::result::Result<Vec<Value>, String> {
    macro_rules! each {
        ($t:ty, $v:expr) => {{
            let a = c.as_primitive::<$t>();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::NULL
                    } else {
                        $v(a.value(i))
                    }
                })
                .collect()
        }};
    }
    Ok(match c.data_type() {
        DataType::Int8 => each!(Int8Type, |v| Value::Int(v as i64)),
        DataType::Int16 => each!(Int16Type, |v| Value::Int(v as i64)),
        DataType::Int32 => each!(Int32Type, |v| Value::Int(v as i64)),
        DataType::Int64 => each!(Int64Type, Value::Int),
        DataType::UInt8 => each!(UInt8Type, |v| Value::UInt(v as u64)),
        DataType::UInt16 => each!(UInt16Type, |v| Value::UInt(v as u64)),
        DataType::UInt32 => each!(UInt32Type, |v| Value::UInt(v as u64)),
        DataType::UInt64 => each!(UInt64Type, Value::UInt),
        DataType::Float32 => each!(Float32Type, Value::Float),
        DataType::Float64 => each!(Float64Type, Value::Double),
        DataType::Boolean => {
            let a = c.as_boolean();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::NULL
                    } else {
                        Value::Int(a.value(i) as i64)
                    }
                })
                .collect()
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let a = cast(c, &DataType::Binary).map_err(|e| e.to_string())?;
            let a = a.as_binary::<i32>();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::NULL
                    } else {
                        Value::Bytes(a.value(i).to_vec())
                    }
                })
                .collect()
        }
        other => {
            // Zoned timestamps are written as UTC wall-clock time (DATETIME has no zone).
            let c = match other {
                DataType::Timestamp(unit, Some(_)) => {
                    cast(c, &DataType::Timestamp(*unit, None)).map_err(|e| e.to_string())?
                }
                DataType::Timestamp(_, None) => {
                    cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None))
                        .map_err(|e| e.to_string())?
                }
                _ => c.clone(),
            };
            let text = cast(&c, &DataType::Utf8)
                .map_err(|e| format!("a {other} cannot be written: {e}"))?;
            let a = text.as_string::<i32>();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Value::NULL
                    } else {
                        Value::Bytes(a.value(i).as_bytes().to_vec())
                    }
                })
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, Decimal128Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn values_keep_numbers_and_write_the_rest_as_text() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
            Field::new("day", DataType::Date32, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(7), None])),
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), None])
                        .with_precision_and_scale(10, 2)
                        .expect("decimal"),
                ),
                Arc::new(Date32Array::from(vec![Some(19_723), None])),
                Arc::new(StringArray::from(vec![Some("x'y"), None])),
            ],
        )
        .expect("batch");
        let v = values(&batch).expect("converts");
        assert_eq!(v[0], vec![Value::Int(7), Value::NULL]);
        assert_eq!(v[1][0], Value::Bytes(b"123.45".to_vec()));
        assert_eq!(v[2][0], Value::Bytes(b"2024-01-01".to_vec()));
        assert_eq!(v[3][0], Value::Bytes(b"x'y".to_vec()));
        assert_eq!(
            column_type(&DataType::Decimal128(12, 2)).as_deref(),
            Some("DECIMAL(12,2)")
        );
    }
}
