//! Writes into PostgreSQL: record batches become rows of binary `COPY … FROM
//! STDIN`, all in one transaction per statement, so a statement writes all its
//! rows or none. A new table (`CREATE TABLE … AS`, ingest) is created in the
//! same transaction, and a replace empties the table there too.
//!
//! The encoding is the reverse of the read mapping in `types.rs`: each column is
//! cast to the Arrow type the target column reads as, and a value that does not
//! fit (an integer too large for `int2`, text that is no `uuid`) is an error
//! naming the column and the row.

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    IntervalMonthDayNanoType, SchemaRef, Time64MicrosecondType, TimestampMicrosecondType,
};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use deadpool_postgres::Pool;
use futures::{SinkExt, StreamExt};

use super::types::PgKind;
use crate::writable::{TableWriter, WriteMode};

const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Encoded rows are sent in chunks of about this size.
const CHUNK_BYTES: usize = 1 << 20;

/// Writes into the tables of one PostgreSQL schema.
#[derive(Debug)]
pub struct PgWriter {
    pub(crate) source: String,
    pub(crate) pool: Pool,
    pub(crate) schema: String,
}

pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The PostgreSQL column type a new table gets for an Arrow type.
pub fn column_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => format!("numeric({p},{s})"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::Dictionary(_, v) => return column_type(v),
        _ => return None,
    })
}

impl PgWriter {
    fn error(&self, what: &str, e: &dyn std::fmt::Display) -> DataFusionError {
        DataFusionError::External(
            format!("source '{}' (postgres): {what}: {e}", self.source).into(),
        )
    }

    /// A server error with what PostgreSQL says about where it happened (the COPY line and column).
    fn db_error(&self, what: &str, e: tokio_postgres::Error) -> DataFusionError {
        let text = match e.as_db_error() {
            Some(db) => {
                let mut t = db.message().to_string();
                if let Some(d) = db.detail() {
                    t.push_str(&format!(" ({d})"));
                }
                if let Some(w) = db.where_() {
                    t.push_str(&format!(" [{w}]"));
                }
                t
            }
            None => crate::error_chain(&e),
        };
        self.error(what, &text)
    }
}

#[async_trait]
impl TableWriter for PgWriter {
    async fn write(
        &self,
        table: &str,
        mode: WriteMode,
        schema: SchemaRef,
        mut data: SendableRecordBatchStream,
    ) -> Result<u64> {
        let qualified = format!("{}.{}", quote(&self.schema), quote(table));
        let mut client = self.pool.get().await.map_err(|e| {
            crate::Unreachable::error(
                &self.source.to_string(),
                "postgres",
                &crate::error_chain(&e),
            )
        })?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.db_error("cannot begin a transaction", e))?;
        match mode {
            WriteMode::Create => {
                let ddl = crate::writable::create_table_sql(
                    &qualified,
                    &schema,
                    column_type,
                    quote,
                    "PostgreSQL",
                )
                .map_err(|e| self.error("cannot create the table", &e))?;
                tx.batch_execute(&ddl)
                    .await
                    .map_err(|e| self.db_error(&format!("cannot create table {table}"), e))?;
            }
            WriteMode::Replace => {
                tx.batch_execute(&format!("TRUNCATE {qualified}"))
                    .await
                    .map_err(|e| self.db_error(&format!("cannot empty table {table}"), e))?;
            }
            WriteMode::Append => {}
        }
        let names: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
        let probe = tx
            .prepare(&format!(
                "SELECT {} FROM {qualified} LIMIT 0",
                names.join(", ")
            ))
            .await
            .map_err(|e| self.db_error(&format!("cannot read the columns of {table}"), e))?;
        let kinds = probe
            .columns()
            .iter()
            .map(|c| {
                let kind = PgKind::of(c.type_(), -1).filter(|k| !matches!(k, PgKind::Array(_)));
                kind.ok_or_else(|| {
                    self.error(
                        "cannot write",
                        &format!(
                            "column {} has type {}, which Quiver cannot write",
                            c.name(),
                            c.type_()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let copy = format!(
            "COPY {qualified} ({}) FROM STDIN (FORMAT binary)",
            names.join(", ")
        );
        let sink = tx
            .copy_in::<_, bytes::Bytes>(copy.as_str())
            .await
            .map_err(|e| self.db_error("COPY failed", e))?;
        futures::pin_mut!(sink);
        let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 4096);
        buf.put_slice(SIGNATURE);
        buf.put_i32(0);
        buf.put_i32(0);
        let mut rows = 0u64;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            encode(&batch, &kinds, rows, &mut buf)
                .map_err(|e| self.error(&format!("cannot write into {table}"), &e))?;
            rows += batch.num_rows() as u64;
            if buf.len() >= CHUNK_BYTES {
                let chunk = buf.split().freeze();
                sink.send(chunk)
                    .await
                    .map_err(|e| self.db_error(&format!("cannot write into {table}"), e))?;
            }
        }
        buf.put_i16(-1);
        sink.send(buf.freeze())
            .await
            .map_err(|e| self.db_error(&format!("cannot write into {table}"), e))?;
        let written = sink
            .finish()
            .await
            .map_err(|e| self.db_error(&format!("cannot write into {table}"), e))?;
        tx.commit()
            .await
            .map_err(|e| self.db_error("commit failed", e))?;
        tracing::debug!(source = %self.source, table, rows = written, "rows copied into PostgreSQL");
        Ok(written)
    }
}

/// Appends the rows of `batch` in binary COPY form; `before` rows came earlier
/// in the statement (for row numbers in errors).
pub fn encode(
    batch: &RecordBatch,
    kinds: &[PgKind],
    before: u64,
    out: &mut BytesMut,
) -> std::result::Result<(), String> {
    if batch.num_columns() != kinds.len() {
        return Err(format!(
            "{} columns given, the table takes {}",
            batch.num_columns(),
            kinds.len()
        ));
    }
    let schema = batch.schema();
    let columns = batch
        .columns()
        .iter()
        .zip(kinds)
        .zip(schema.fields())
        .map(|((c, k), f)| {
            convert(c, k).map_err(|(row, e)| {
                format!("column {}, row {}: {e}", f.name(), before + row as u64 + 1)
            })
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for row in 0..batch.num_rows() {
        out.put_i16(kinds.len() as i16);
        for ((c, k), f) in columns.iter().zip(kinds).zip(schema.fields()) {
            if c.is_null(row) {
                out.put_i32(-1);
                continue;
            }
            let at = out.len();
            out.put_i32(0);
            value(c, k, row, out).map_err(|e| {
                format!("column {}, row {}: {e}", f.name(), before + row as u64 + 1)
            })?;
            let len = (out.len() - at - 4) as i32;
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }
    Ok(())
}

/// The column as the Arrow type `kind` is encoded from; a value the cast cannot
/// carry is reported with its row (0-based) and text.
fn convert(column: &ArrayRef, kind: &PgKind) -> std::result::Result<ArrayRef, (usize, String)> {
    let target = match kind {
        // Numerics are encoded from their exact decimal text.
        PgKind::Decimal { .. } | PgKind::NumericAny => DataType::Utf8,
        PgKind::Bpchar | PgKind::Jsonb | PgKind::Uuid | PgKind::Text => DataType::Utf8,
        other => other.arrow_type(),
    };
    if column.data_type() == &target {
        return Ok(column.clone());
    }
    let safe = CastOptions {
        safe: true,
        ..Default::default()
    };
    let cast = cast_with_options(column, &target, &safe).map_err(|e| {
        (
            0,
            format!(
                "a {} cannot be written as {kind:?}: {e}",
                column.data_type()
            ),
        )
    })?;
    if cast.null_count() != column.null_count() {
        for row in 0..column.len() {
            if cast.is_null(row) && !column.is_null(row) {
                let shown = array_value_to_string(column, row).unwrap_or_default();
                return Err((
                    row,
                    format!(
                        "value {shown} does not fit the column's type ({})",
                        describe(kind)
                    ),
                ));
            }
        }
    }
    Ok(cast)
}

fn describe(kind: &PgKind) -> String {
    format!("{kind:?}").to_lowercase()
}

fn value(
    c: &ArrayRef,
    kind: &PgKind,
    row: usize,
    out: &mut BytesMut,
) -> std::result::Result<(), String> {
    match kind {
        PgKind::Bool => out.put_u8(c.as_boolean().value(row) as u8),
        PgKind::Int2 => out.put_i16(c.as_primitive::<Int16Type>().value(row)),
        PgKind::Int4 => out.put_i32(c.as_primitive::<Int32Type>().value(row)),
        PgKind::Int8 => out.put_i64(c.as_primitive::<Int64Type>().value(row)),
        PgKind::Float4 => out.put_f32(c.as_primitive::<Float32Type>().value(row)),
        PgKind::Float8 => out.put_f64(c.as_primitive::<Float64Type>().value(row)),
        PgKind::Decimal { .. } | PgKind::NumericAny => {
            numeric(c.as_string::<i32>().value(row), out)?
        }
        PgKind::Text | PgKind::Bpchar => out.put_slice(c.as_string::<i32>().value(row).as_bytes()),
        PgKind::Jsonb => {
            out.put_u8(1);
            out.put_slice(c.as_string::<i32>().value(row).as_bytes());
        }
        PgKind::Uuid => out.put_slice(&uuid_bytes(c.as_string::<i32>().value(row))?),
        PgKind::Bytea => out.put_slice(c.as_binary::<i32>().value(row)),
        PgKind::Date => out.put_i32(
            c.as_primitive::<Date32Type>()
                .value(row)
                .saturating_sub(PG_EPOCH_DAYS),
        ),
        PgKind::Time => out.put_i64(c.as_primitive::<Time64MicrosecondType>().value(row)),
        PgKind::Timestamp | PgKind::Timestamptz => out.put_i64(
            c.as_primitive::<TimestampMicrosecondType>()
                .value(row)
                .saturating_sub(PG_EPOCH_MICROS),
        ),
        PgKind::Interval => {
            let v = c.as_primitive::<IntervalMonthDayNanoType>().value(row);
            out.put_i64(v.nanoseconds / 1000);
            out.put_i32(v.days);
            out.put_i32(v.months);
        }
        PgKind::Array(_) => return Err("arrays cannot be written yet".into()),
    }
    Ok(())
}

fn uuid_bytes(text: &str) -> std::result::Result<[u8; 16], String> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let bad = || format!("'{text}' is not a uuid");
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// PostgreSQL's binary `numeric` from decimal text (`-12.340`, `1.5e-3`, `NaN`):
/// ndigits, weight, sign, dscale, then base-10000 digits.
pub fn numeric(text: &str, out: &mut BytesMut) -> std::result::Result<(), String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("nan") {
        out.put_slice(&[0, 0, 0, 0, 0xC0, 0, 0, 0]);
        return Ok(());
    }
    let bad = || format!("'{text}' is not a number PostgreSQL's numeric can hold");
    let (negative, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (
            &body[..at],
            body[at + 1..].parse::<i32>().map_err(|_| bad())?,
        ),
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part
            .chars()
            .chain(frac_part.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    // All digits with the decimal point `point` digits from the left.
    let digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    let point = int_part.len() as i64 + exponent as i64;
    if !(-16383..=131072).contains(&point) {
        return Err(bad());
    }
    let dscale = (digits.len() as i64 - point).max(0);
    // Pad so that the point falls on a group boundary and both ends are whole groups.
    let lead = ((4 - point.rem_euclid(4)) % 4) as usize;
    let mut padded = vec![0u8; lead];
    padded.extend(&digits);
    let int_groups = (point + lead as i64) / 4;
    while !padded.len().is_multiple_of(4) || (padded.len() as i64) < int_groups * 4 {
        padded.push(0);
    }
    let mut groups: Vec<i16> = padded
        .chunks(4)
        .map(|g| g.iter().fold(0i16, |a, d| a * 10 + *d as i16))
        .collect();
    let mut weight = int_groups - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight as i16);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_i16(dscale.min(i16::MAX as i64) as i16);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// The decimal text of an encoded numeric, as PostgreSQL prints it.
    fn decode(raw: &[u8]) -> String {
        let n = i16::from_be_bytes([raw[0], raw[1]]) as usize;
        let weight = i16::from_be_bytes([raw[2], raw[3]]) as i64;
        let sign = u16::from_be_bytes([raw[4], raw[5]]);
        let dscale = i16::from_be_bytes([raw[6], raw[7]]) as usize;
        let groups: Vec<i64> = (0..n)
            .map(|i| i16::from_be_bytes([raw[8 + 2 * i], raw[9 + 2 * i]]) as i64)
            .collect();
        let mut int = String::new();
        for w in (0..=weight.max(0)).rev() {
            let idx = weight - w;
            let g = if idx >= 0 && (idx as usize) < n {
                groups[idx as usize]
            } else {
                0
            };
            int.push_str(&format!("{g:04}"));
        }
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let mut frac = String::new();
        let mut k = 1;
        while frac.len() < dscale {
            let idx = weight + k;
            let g = if idx >= 0 && (idx as usize) < n {
                groups[idx as usize]
            } else {
                0
            };
            frac.push_str(&format!("{g:04}"));
            k += 1;
        }
        frac.truncate(dscale);
        let sign = if sign == 0x4000 { "-" } else { "" };
        if dscale > 0 {
            format!("{sign}{int}.{frac}")
        } else {
            format!("{sign}{int}")
        }
    }

    fn enc(t: &str) -> String {
        let mut b = BytesMut::new();
        numeric(t, &mut b).expect("encodes");
        decode(&b)
    }

    #[test]
    fn numerics_encode_exactly() {
        assert_eq!(enc("0"), "0");
        assert_eq!(enc("12.340"), "12.340");
        assert_eq!(enc("-0.0001"), "-0.0001");
        assert_eq!(enc("123456789.987654321"), "123456789.987654321");
        assert_eq!(enc("1.5e3"), "1500");
        assert_eq!(enc("1.5e-3"), "0.0015");
        assert_eq!(enc("10000"), "10000");
        assert!(numeric("12a", &mut BytesMut::new()).is_err());
        assert!(numeric("", &mut BytesMut::new()).is_err());
    }

    proptest! {
        #[test]
        fn numeric_round_trip(int in 0u64..u64::MAX, frac in proptest::option::of(0u32..1_000_000), neg: bool) {
            let text = match frac {
                Some(f) => format!("{}{int}.{f:06}", if neg { "-" } else { "" }),
                None => format!("{}{int}", if neg { "-" } else { "" }),
            };
            let expected = if int == 0 && frac.unwrap_or(0) == 0 { text.trim_start_matches('-').to_string() } else { text.clone() };
            prop_assert_eq!(enc(&text), expected);
        }
    }

    #[test]
    fn a_value_that_does_not_fit_names_column_and_row() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("qty", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![
                Some(1),
                None,
                Some(70_000),
            ]))],
        )
        .expect("batch");
        let err = encode(&batch, &[PgKind::Int2], 10, &mut BytesMut::new()).unwrap_err();
        assert!(
            err.contains("column qty, row 13") && err.contains("70000"),
            "{err}"
        );
        let mut out = BytesMut::new();
        encode(&batch.slice(0, 2), &[PgKind::Int2], 0, &mut out).expect("fits");
        // Two rows: count, (len 2, value 1), count, NULL.
        assert_eq!(
            &out[..],
            &[0, 1, 0, 0, 0, 2, 0, 1, 0, 1, 255, 255, 255, 255]
        );
    }
}
