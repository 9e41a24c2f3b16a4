//! Running one partition of a stage as a plan of one partition.
//!
//! A stage task runs partition `i` of a plan whose other partitions run in other
//! tasks. A hash join there cannot compute its dynamic filter: the join waits
//! until every partition of its probe side has reported its build side, and
//! only one of them runs in this process. So such fragments ran with dynamic
//! filters off, and Parquet scans under a broadcast join read files and row
//! groups that the join's keys rule out, where single-node DataFusion prunes them.
//!
//! [`one_partition`] rewrites the plan so partition `i` is the plan's only
//! partition: every leaf with the plan's partition count is read through
//! [`PartitionExec`], which exposes its partition `i` as partition 0, and the
//! nodes above are rebuilt, so they count one partition. The join then
//! expects one report, computes its filter, and the scans below prune with it.
//! Only nodes that map output partition `p` to partition `p` of their inputs
//! are rebuilt; any other node (a repartition, a union, a merge) leaves the plan
//! as it was.

use std::fmt;
use std::sync::Arc;

use datafusion::common::internal_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    replace_children_if_necessary, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PhysicalExpr, PlanProperties,
};

use quiver_proto::plan_nodes::single_child;

use crate::exchange::ShuffleWriteExec;

/// `plan`'s partition `partition` (which the caller has checked exists) as a plan
/// of one partition, or `None` when a node on the way to the leaves does not keep
/// partitions apart.
pub(crate) fn one_partition(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let count = partitions(plan);
    if count <= 1 {
        return Ok(None);
    }
    narrow(plan, partition, count)
}

fn partitions(plan: &Arc<dyn ExecutionPlan>) -> usize {
    plan.properties().partitioning.partition_count()
}

fn narrow(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
    count: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let children = plan.children();
    if children.is_empty() {
        return Ok(Some(Arc::new(PartitionExec::new(plan.clone(), partition))));
    }
    if !keeps_partitions_apart(plan) {
        return Ok(None);
    }
    // A broadcast join's build side is one partition that every probe partition shares.
    let build_side_shared = plan
        .as_ref()
        .downcast_ref::<HashJoinExec>()
        .is_some_and(|j| *j.partition_mode() == PartitionMode::CollectLeft);
    let mut narrowed = Vec::with_capacity(children.len());
    for (index, child) in children.into_iter().enumerate() {
        match partitions(child) {
            n if n == count => match narrow(child, partition, count)? {
                Some(c) => narrowed.push(c),
                None => return Ok(None),
            },
            1 if index == 0 && build_side_shared => narrowed.push(child.clone()),
            _ => return Ok(None),
        }
    }
    replace_children_if_necessary(plan.clone(), narrowed).map(Some)
}

/// Nodes whose output partition `p` is computed from partition `p` of each input
/// (a broadcast join's shared build side aside).
fn keeps_partitions_apart(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let node = plan.as_ref();
    node.is::<ProjectionExec>()
        || node.is::<FilterExec>()
        || node.is::<CooperativeExec>()
        || node.is::<LocalLimitExec>()
        || node.is::<AggregateExec>()
        || node.is::<HashJoinExec>()
        || node
            .downcast_ref::<SortExec>()
            .is_some_and(|s| s.preserve_partitioning())
        || node.is::<ShuffleWriteExec>()
}

/// One partition of its input, as partition 0.
pub(crate) struct PartitionExec {
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    properties: Arc<PlanProperties>,
}

impl PartitionExec {
    fn new(input: Arc<dyn ExecutionPlan>, partition: usize) -> Self {
        let properties = input
            .properties()
            .as_ref()
            .clone()
            .with_partitioning(Partitioning::UnknownPartitioning(1));
        Self {
            input,
            partition,
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for PartitionExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionExec")
            .field("partition", &self.partition)
            .finish()
    }
}

impl DisplayAs for PartitionExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PartitionExec: partition={}", self.partition)
    }
}

impl ExecutionPlan for PartitionExec {
    fn name(&self) -> &str {
        "PartitionExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = single_child("PartitionExec", children)?;
        Ok(Arc::new(PartitionExec::new(input, self.partition)))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("PartitionExec has one partition, not {}", partition + 1);
        }
        self.input.execute(self.partition, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::error::DataFusionError;
    use datafusion::physical_plan::displayable;
    use datafusion::physical_plan::union::UnionExec;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use futures::TryStreamExt;

    fn write_parquet(path: &std::path::Path, keys: std::ops::Range<i64>) -> Result<()> {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(keys))],
        )?;
        let file =
            std::fs::File::create(path).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
        writer.write(&batch)?;
        writer.close()?;
        Ok(())
    }

    /// A broadcast join over a two-file table, planned as one partition per file.
    async fn broadcast_join(
        dir: &std::path::Path,
    ) -> Result<(SessionContext, Arc<dyn ExecutionPlan>)> {
        std::fs::create_dir_all(dir.join("big"))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        std::fs::create_dir_all(dir.join("small"))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        write_parquet(&dir.join("big/a.parquet"), 0..1000)?;
        write_parquet(&dir.join("big/b.parquet"), 1000..2000)?;
        write_parquet(&dir.join("small/s.parquet"), 1500..1501)?;
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_repartition_file_scans(false);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_parquet(
            "big",
            dir.join("big").to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
        ctx.register_parquet(
            "small",
            dir.join("small").to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
        let plan = ctx
            .sql("SELECT big.k FROM small JOIN big ON small.k = big.k")
            .await?
            .create_physical_plan()
            .await?;
        Ok((ctx, plan))
    }

    /// Each partition of a broadcast join, run alone, completes its dynamic
    /// filter (the plan as a whole would wait for the partition it does not run)
    /// and hands it to the Parquet scan below.
    #[tokio::test]
    async fn a_broadcast_join_partition_computes_its_dynamic_filter() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| DataFusionError::External(Box::new(e)))?;
        let (ctx, plan) = broadcast_join(dir.path()).await?;
        assert_eq!(
            partitions(&plan),
            2,
            "{}",
            displayable(plan.as_ref()).indent(true)
        );
        let text = displayable(plan.as_ref()).indent(true).to_string();
        assert!(text.contains("mode=CollectLeft"), "{text}");
        let mut keys = vec![];
        for partition in 0..2 {
            let one = one_partition(&plan, partition)?
                .ok_or_else(|| DataFusionError::Internal("not narrowed".into()))?;
            assert_eq!(partitions(&one), 1);
            let batches: Vec<RecordBatch> = one.execute(0, ctx.task_ctx())?.try_collect().await?;
            for b in &batches {
                let col = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| DataFusionError::Internal("k".into()))?;
                keys.extend(col.values().iter().copied());
            }
            // The scan's predicate is the join's filter, now filled with the build side's keys.
            let text = displayable(one.as_ref()).indent(true).to_string();
            assert!(text.contains("1500"), "partition {partition}: {text}");
        }
        assert_eq!(keys, vec![1500]);
        Ok(())
    }

    #[tokio::test]
    async fn a_union_is_left_as_it_was() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| DataFusionError::External(Box::new(e)))?;
        let (_, plan) = broadcast_join(dir.path()).await?;
        let union = UnionExec::try_new(vec![plan.clone(), plan])?;
        assert!(one_partition(&union, 1)?.is_none());
        Ok(())
    }
}
