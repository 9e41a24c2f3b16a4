//! What a stage task's output keys were: their bounds and, when few, their
//! distinct values. The coordinator merges the summaries of a join's build
//! stage and filters the probe side's stage with them before it starts
//! (dynamic filters across stages, `coordinator/src/distributed/dynamic_filters.rs`).
//!
//! A summary is taken of the hash keys a task's rows are partitioned by, as they
//! pass to the writer, so it costs one min/max per key column and batch, and a
//! set of at most `max_values` values for a one-column key (given up beyond).

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion_proto::protobuf::ScalarValue as ScalarValueNode;
use prost::Message;

/// The keys of one task's output, or of a whole stage's once merged.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySummary {
    /// Rows seen (with null keys too).
    pub rows: u64,
    /// Each key column's smallest and largest non-null value (null when it had none).
    pub min: Vec<ScalarValue>,
    pub max: Vec<ScalarValue>,
    /// The distinct non-null values of a one-column key, when there were at most
    /// the limit the summary was taken with.
    pub values: Option<Vec<ScalarValue>>,
}

impl KeySummary {
    /// The summary of all of `parts` (the tasks of one stage), listing values
    /// only while all list them and they number at most `max_values` together.
    pub fn merge(parts: &[KeySummary], max_values: usize) -> Option<KeySummary> {
        let first = parts.first()?;
        let mut out = KeySummary {
            rows: 0,
            min: first.min.clone(),
            max: first.max.clone(),
            values: Some(vec![]),
        };
        let mut distinct: HashSet<ScalarValue> = HashSet::new();
        for p in parts {
            if p.min.len() != out.min.len() || p.max.len() != out.max.len() {
                return None;
            }
            out.rows += p.rows;
            for (i, (lo, hi)) in p.min.iter().zip(&p.max).enumerate() {
                out.min[i] = pick(&out.min[i], lo, std::cmp::Ordering::Less);
                out.max[i] = pick(&out.max[i], hi, std::cmp::Ordering::Greater);
            }
            match &p.values {
                Some(v) if out.values.is_some() => distinct.extend(v.iter().cloned()),
                _ => out.values = None,
            }
        }
        if out.values.is_some() && distinct.len() <= max_values {
            out.values = Some(distinct.into_iter().collect());
        } else {
            out.values = None;
        }
        Some(out)
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let nodes = |values: &[ScalarValue]| -> Result<Vec<ScalarValueNode>> {
            values
                .iter()
                .map(|v| {
                    ScalarValueNode::try_from(v)
                        .map_err(|e| DataFusionError::Internal(e.to_string()))
                })
                .collect()
        };
        Ok(SummaryNode {
            rows: self.rows,
            min: nodes(&self.min)?,
            max: nodes(&self.max)?,
            listed: self.values.is_some(),
            values: nodes(self.values.as_deref().unwrap_or_default())?,
        }
        .encode_to_vec())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let node = SummaryNode::decode(bytes)
            .map_err(|e| DataFusionError::Internal(format!("malformed key summary: {e}")))?;
        let values = |nodes: &[ScalarValueNode]| -> Result<Vec<ScalarValue>> {
            nodes
                .iter()
                .map(|n| {
                    ScalarValue::try_from(n).map_err(|e| {
                        DataFusionError::Internal(format!("malformed key summary: {e}"))
                    })
                })
                .collect()
        };
        Ok(KeySummary {
            rows: node.rows,
            min: values(&node.min)?,
            max: values(&node.max)?,
            values: match node.listed {
                true => Some(values(&node.values)?),
                false => None,
            },
        })
    }
}

/// `current` or `candidate`, whichever is `wanted` of the two; nulls lose.
fn pick(current: &ScalarValue, candidate: &ScalarValue, wanted: std::cmp::Ordering) -> ScalarValue {
    match (current.is_null(), candidate.is_null()) {
        (_, true) => current.clone(),
        (true, false) => candidate.clone(),
        (false, false) => match candidate.partial_cmp(current) {
            Some(o) if o == wanted => candidate.clone(),
            _ => current.clone(),
        },
    }
}

#[derive(Clone, PartialEq, Message)]
struct SummaryNode {
    #[prost(uint64, tag = "1")]
    rows: u64,
    #[prost(message, repeated, tag = "2")]
    min: Vec<ScalarValueNode>,
    #[prost(message, repeated, tag = "3")]
    max: Vec<ScalarValueNode>,
    #[prost(bool, tag = "4")]
    listed: bool,
    #[prost(message, repeated, tag = "5")]
    values: Vec<ScalarValueNode>,
}

/// Takes a [`KeySummary`] of the batches shown to it.
pub struct KeySummarizer {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    min: Vec<MinAccumulator>,
    max: Vec<MaxAccumulator>,
    rows: u64,
    max_values: usize,
    /// None once there were more than `max_values`, or the key has several columns.
    values: Option<HashSet<ScalarValue>>,
}

impl KeySummarizer {
    pub fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        schema: &datafusion::arrow::datatypes::Schema,
        max_values: usize,
    ) -> Result<Self> {
        let types = keys
            .iter()
            .map(|k| k.data_type(schema))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            min: types
                .iter()
                .map(MinAccumulator::try_new)
                .collect::<Result<_>>()?,
            max: types
                .iter()
                .map(MaxAccumulator::try_new)
                .collect::<Result<_>>()?,
            values: (keys.len() == 1).then(HashSet::new),
            keys,
            rows: 0,
            max_values,
        })
    }

    pub fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        for (i, key) in self.keys.iter().enumerate() {
            let array: ArrayRef = key.evaluate(batch)?.into_array(batch.num_rows())?;
            self.min[i].update_batch(std::slice::from_ref(&array))?;
            self.max[i].update_batch(std::slice::from_ref(&array))?;
            if let Some(set) = self.values.as_mut() {
                for row in 0..array.len() {
                    if array.is_valid(row) {
                        set.insert(ScalarValue::try_from_array(&array, row)?);
                    }
                }
                if set.len() > self.max_values {
                    self.values = None;
                }
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<KeySummary> {
        Ok(KeySummary {
            rows: self.rows,
            min: self
                .min
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<Result<_>>()?,
            max: self
                .max
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<Result<_>>()?,
            values: self.values.map(|s| s.into_iter().collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::col;

    fn batch(n: Vec<Option<i64>>, s: Vec<&str>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("n", DataType::Int64, true),
                Field::new("s", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int64Array::from(n)),
                Arc::new(StringArray::from(s)),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn a_summary_has_bounds_and_few_values_and_round_trips() -> Result<()> {
        let b = batch(
            vec![Some(5), None, Some(2), Some(5)],
            vec!["b", "a", "c", "a"],
        );
        let mut one = KeySummarizer::new(vec![col("n", &b.schema())?], &b.schema(), 10)?;
        one.observe(&b)?;
        let s = one.finish()?;
        assert_eq!(
            (s.rows, s.min.clone(), s.max.clone()),
            (
                4,
                vec![ScalarValue::Int64(Some(2))],
                vec![ScalarValue::Int64(Some(5))]
            )
        );
        let mut values = s.values.clone().expect("listed");
        values.sort_by(|a, b| a.partial_cmp(b).expect("ints"));
        assert_eq!(
            values,
            vec![ScalarValue::Int64(Some(2)), ScalarValue::Int64(Some(5))]
        );
        assert_eq!(KeySummary::decode(&s.encode()?)?, s);

        // Two columns: bounds only. Too many values: none listed.
        let mut two = KeySummarizer::new(
            vec![col("n", &b.schema())?, col("s", &b.schema())?],
            &b.schema(),
            10,
        )?;
        two.observe(&b)?;
        let t = two.finish()?;
        assert_eq!(t.max[1], ScalarValue::Utf8(Some("c".into())));
        assert!(t.values.is_none());
        let mut few = KeySummarizer::new(vec![col("s", &b.schema())?], &b.schema(), 2)?;
        few.observe(&b)?;
        assert!(few.finish()?.values.is_none());
        Ok(())
    }

    #[test]
    fn merged_summaries_widen_bounds_and_union_values() -> Result<()> {
        let int = |v: i64| ScalarValue::Int64(Some(v));
        let a = KeySummary {
            rows: 2,
            min: vec![int(3)],
            max: vec![int(9)],
            values: Some(vec![int(3), int(9)]),
        };
        let b = KeySummary {
            rows: 1,
            min: vec![int(1)],
            max: vec![int(4)],
            values: Some(vec![int(1)]),
        };
        let empty = KeySummary {
            rows: 0,
            min: vec![ScalarValue::Int64(None)],
            max: vec![ScalarValue::Int64(None)],
            values: Some(vec![]),
        };
        let m = KeySummary::merge(&[a.clone(), empty, b.clone()], 10).expect("merged");
        assert_eq!(
            (m.rows, m.min[0].clone(), m.max[0].clone()),
            (3, int(1), int(9))
        );
        assert_eq!(m.values.map(|v| v.len()), Some(3));
        // Past the limit, or one task without a list: no list.
        assert!(KeySummary::merge(&[a.clone(), b.clone()], 2)
            .expect("merged")
            .values
            .is_none());
        let unlisted = KeySummary { values: None, ..b };
        assert!(KeySummary::merge(&[a, unlisted], 10)
            .expect("merged")
            .values
            .is_none());
        Ok(())
    }
}
