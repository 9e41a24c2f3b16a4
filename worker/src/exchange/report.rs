//! [`TaskReport`]: what one stage task wrote, sent back to the coordinator as
//! the task's only output batch.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BinaryArray, StringArray, UInt32Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};

use super::keys::KeySummary;

/// What one task of a stage wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    /// The output's key in the worker's exchange store.
    pub key: String,
    /// Rows and bytes of each output partition.
    pub rows: Vec<u64>,
    pub bytes: Vec<u64>,
    pub spilled_bytes: u64,
    pub elapsed_ms: u64,
    /// The hash keys' summary, when the task was asked for one.
    pub keys: Option<KeySummary>,
}

pub(super) fn report_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("partition", DataType::UInt32, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("spilled_bytes", DataType::UInt64, false),
        Field::new("elapsed_ms", DataType::UInt64, false),
        // An encoded KeySummary in the first row, when asked for.
        Field::new("keys", DataType::Binary, true),
    ]))
}

impl TaskReport {
    pub(super) fn to_batch(&self) -> Result<RecordBatch> {
        let n = self.rows.len();
        let keys = self.keys.as_ref().map(KeySummary::encode).transpose()?;
        let columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(StringArray::from(vec![self.key.as_str(); n])),
            Arc::new(UInt32Array::from_iter_values(0..n as u32)),
            Arc::new(UInt64Array::from(self.rows.clone())),
            Arc::new(UInt64Array::from(self.bytes.clone())),
            Arc::new(UInt64Array::from(vec![self.spilled_bytes; n])),
            Arc::new(UInt64Array::from(vec![self.elapsed_ms; n])),
            Arc::new(BinaryArray::from_iter((0..n).map(|i| match i {
                0 => keys.as_deref(),
                _ => None,
            }))),
        ];
        Ok(RecordBatch::try_new(report_schema(), columns)?)
    }

    /// Reads the report a task sent back.
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Self> {
        let bad =
            |what: &str| DataFusionError::Internal(format!("malformed stage task report: {what}"));
        let mut report = TaskReport {
            key: String::new(),
            rows: vec![],
            bytes: vec![],
            spilled_bytes: 0,
            elapsed_ms: 0,
            keys: None,
        };
        for batch in batches {
            let col = |i: usize| batch.columns().get(i).ok_or_else(|| bad("missing column"));
            let keys = col(0)?
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| bad("key"))?;
            let u64s = |i: usize| -> Result<&UInt64Array> {
                col(i)?
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .ok_or_else(|| bad("counts"))
            };
            let (rows, bytes, spilled, elapsed) = (u64s(2)?, u64s(3)?, u64s(4)?, u64s(5)?);
            let summaries = col(6)?
                .as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(|| bad("keys"))?;
            for i in 0..batch.num_rows() {
                if summaries.is_valid(i) {
                    report.keys = Some(KeySummary::decode(summaries.value(i))?);
                }
            }
            for i in 0..batch.num_rows() {
                report.key = keys.value(i).to_string();
                report.rows.push(rows.value(i));
                report.bytes.push(bytes.value(i));
                report.spilled_bytes = spilled.value(i);
                report.elapsed_ms = elapsed.value(i);
            }
        }
        if report.key.is_empty() {
            return Err(bad("no rows"));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let r = TaskReport {
            key: "q/o".into(),
            rows: vec![1, 2, 3],
            bytes: vec![10, 20, 30],
            spilled_bytes: 7,
            elapsed_ms: 9,
            keys: Some(KeySummary {
                rows: 6,
                min: vec![datafusion::common::ScalarValue::Int32(Some(1))],
                max: vec![datafusion::common::ScalarValue::Int32(Some(4))],
                values: None,
            }),
        };
        let batch = r.to_batch().expect("batch");
        assert_eq!(TaskReport::from_batches(&[batch]).expect("parse"), r);
        assert!(TaskReport::from_batches(&[]).is_err());
    }
}
