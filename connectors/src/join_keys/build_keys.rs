//! The distinct keys of a join's build side, collected as its rows pass.
//!
//! DataFusion's dynamic filter lists the keys only up to `join_keys_max`; beyond
//! that it holds a hash table of row indices, which says nothing a database can
//! read. For a join whose probe side is a database scan, [`BuildKeysExec`] sits
//! on the build side and keeps the key values (up to [`MAX_SET_KEYS`]), so the
//! scan can still send the whole set (see `condition.rs`, `key_set`).

use parking_lot::Mutex;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// Most distinct keys `join_key_array_max` may ask to keep.
pub const MAX_SET_KEYS: usize = 10_000_000;

/// Key values of every partition of one build side.
#[derive(Debug)]
pub struct BuildKeys {
    partitions: usize,
    /// Most distinct keys kept.
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    arrays: Vec<ArrayRef>,
    rows: usize,
    finished: usize,
    /// Too many keys, or a key that could not be evaluated: no set.
    given_up: bool,
    distinct: Option<Arc<Vec<ScalarValue>>>,
}

impl BuildKeys {
    pub fn new(partitions: usize, max: usize) -> Self {
        Self {
            partitions: partitions.max(1),
            max,
            state: Mutex::default(),
        }
    }

    fn push(&self, keys: Result<ArrayRef>) {
        let mut state = self.state.lock();
        if state.given_up {
            return;
        }
        match keys {
            // Up to four rows a key (duplicates) are kept before giving up.
            Ok(a) if state.rows + a.len() - a.null_count() <= self.max.saturating_mul(4) => {
                state.rows += a.len() - a.null_count();
                state.arrays.push(a);
            }
            _ => {
                state.given_up = true;
                state.arrays.clear();
            }
        }
    }

    fn finish_partition(&self) {
        self.state.lock().finished += 1;
    }

    /// The distinct non-null keys once every partition of the build side has
    /// ended; `None` before, or when there were too many.
    pub fn keys(&self) -> Option<Arc<Vec<ScalarValue>>> {
        let mut state = self.state.lock();
        if state.given_up || state.finished < self.partitions {
            return None;
        }
        if let Some(d) = &state.distinct {
            return Some(d.clone());
        }
        let mut seen = HashSet::new();
        let mut distinct = vec![];
        for array in &state.arrays {
            for i in 0..array.len() {
                if array.is_null(i) {
                    continue;
                }
                let Ok(v) = ScalarValue::try_from_array(array, i) else {
                    state.given_up = true;
                    return None;
                };
                if seen.insert(v.clone()) {
                    distinct.push(v);
                }
            }
        }
        if distinct.len() > self.max {
            state.given_up = true;
            return None;
        }
        let distinct = Arc::new(distinct);
        state.arrays.clear();
        state.distinct = Some(distinct.clone());
        Some(distinct)
    }
}

/// Passes its input through unchanged, keeping the values of `key` in `keys`.
#[derive(Debug)]
pub struct BuildKeysExec {
    input: Arc<dyn ExecutionPlan>,
    key: Arc<dyn PhysicalExpr>,
    keys: Arc<BuildKeys>,
}

impl BuildKeysExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, key: Arc<dyn PhysicalExpr>, max: usize) -> Self {
        let keys = Arc::new(BuildKeys::new(
            input.properties().partitioning.partition_count(),
            max,
        ));
        Self { input, key, keys }
    }

    pub fn keys(&self) -> Arc<BuildKeys> {
        self.keys.clone()
    }
}

impl DisplayAs for BuildKeysExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BuildKeysExec: key={}", self.key)
    }
}

impl ExecutionPlan for BuildKeysExec {
    fn name(&self) -> &str {
        "BuildKeysExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = quiver_proto::plan_nodes::single_child("BuildKeysExec", children)?;
        Ok(Arc::new(Self {
            input,
            key: self.key.clone(),
            keys: self.keys.clone(),
        }))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.key)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let (key, keys, last) = (self.key.clone(), self.keys.clone(), self.keys.clone());
        let rows = input.map(move |batch| {
            if let Ok(b) = &batch {
                keys.push(evaluate(&key, b));
            }
            batch
        });
        // Runs when the input ends, after its last batch.
        let end = futures::stream::once(async move {
            last.finish_partition();
            None::<Result<RecordBatch>>
        })
        .filter_map(|b| async move { b });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            rows.chain(end),
        )))
    }
}

fn evaluate(key: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    key.evaluate(batch)?.into_array(batch.num_rows())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_expr::expressions::Column;

    #[tokio::test]
    async fn keys_are_known_once_every_partition_ended() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let batch = |v: Vec<Option<i64>>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(v))])
        };
        let input = MemorySourceConfig::try_new_exec(
            &[
                vec![batch(vec![Some(1), Some(2), None])?],
                vec![batch(vec![Some(2), Some(3)])?],
            ],
            schema.clone(),
            None,
        )?;
        let exec = BuildKeysExec::new(input, Arc::new(Column::new("k", 0)), 10);
        let keys = exec.keys();
        let ctx = Arc::new(TaskContext::default());
        let first: Vec<_> = exec.execute(0, ctx.clone())?.collect().await;
        assert_eq!(first.len(), 1);
        assert!(keys.keys().is_none(), "one partition of two has ended");
        let _: Vec<_> = exec.execute(1, ctx)?.collect().await;
        let got: Vec<String> = keys
            .keys()
            .map(|k| k.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        assert_eq!(got, ["1", "2", "3"]);
        Ok(())
    }
}
