//! What a physical plan is made of, asked by the planner rule and the query node:
//! does it read a scan or an exchange, can a worker run it alone, does it need a
//! value only the coordinator holds (a scalar subquery). Pure functions of the plan.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::ExecutionPlan;
use quiver_connectors::SourceScanExec;
use quiver_worker::exchange::ShuffleReadExec;

/// True for nodes that compute each output partition from the same input partition
/// only, with expressions that need nothing from the rest of the plan.
pub(super) fn is_worker_safe(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let node = plan.as_ref();
    if !expressions_are_self_contained(plan) {
        return false;
    }
    let passes_through = node.is::<FilterExec>()
        || node.is::<ProjectionExec>()
        || node.is::<LocalLimitExec>()
        || node
            .downcast_ref::<SortExec>()
            .is_some_and(|s| s.preserve_partitioning())
        || node
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| *a.mode() == AggregateMode::Partial)
        || node.is::<quiver_worker::write::WriteFilesExec>()
        || node.is::<quiver_connectors::lakehouse::iceberg::IcebergDeletesExec>()
        || node.is::<quiver_connectors::lakehouse::delta_write::DeltaWriteExec>();
    if passes_through {
        return plan.children().into_iter().all(is_worker_safe);
    }
    is_scan(plan)
}

/// A scalar subquery's value is filled in by the enclosing `ScalarSubqueryExec`,
/// so an expression that reads it runs only where that node runs.
pub(super) fn expressions_are_self_contained(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut contained = true;
    let _ = plan.apply_expressions(&mut |expr| {
        expr.apply(|e| {
            if e.is::<ScalarSubqueryExpr>() {
                contained = false;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
    });
    contained
}

/// Leaves whose partitions workers read: file groups, and the range partitions of a
/// database table. A single-statement database read stays on the coordinator,
/// where its result is needed anyway; a worker would only add a hop.
pub(super) fn is_scan(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let node = plan.as_ref();
    node.downcast_ref::<DataSourceExec>()
        .is_some_and(|d| d.data_source().downcast_ref::<FileScanConfig>().is_some())
        || node
            .downcast_ref::<SourceScanExec>()
            .is_some_and(|s| s.statements().len() > 1)
}

/// True if `plan` reads a scan or an exchange: worth sending to a worker.
pub(super) fn has_input(plan: &Arc<dyn ExecutionPlan>) -> bool {
    (contains_scan(plan) || reads_exchange(plan)) && all_self_contained(plan)
}

/// Sent whole, a scalar subquery travels with the `ScalarSubqueryExec` that fills
/// its value, and datafusion-proto encodes the two together.
pub(super) fn contained_when_whole(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.as_ref().is::<ScalarSubqueryExec>()
        || (expressions_are_self_contained(plan)
            && plan.children().into_iter().all(contained_when_whole))
}

pub(super) fn all_self_contained(plan: &Arc<dyn ExecutionPlan>) -> bool {
    expressions_are_self_contained(plan) && plan.children().into_iter().all(all_self_contained)
}

pub(super) fn contains_scan(plan: &Arc<dyn ExecutionPlan>) -> bool {
    is_scan(plan) || plan.children().into_iter().any(contains_scan)
}

/// True if `plan` reads an exchange anywhere.
pub(super) fn reads_exchange(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let _ = plan.apply(|n| {
        found = n.as_ref().is::<ShuffleReadExec>();
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{col, lit, BinaryExpr};
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::empty::EmptyExec;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]))
    }

    fn scan() -> Arc<dyn ExecutionPlan> {
        let source = Arc::new(ParquetSource::new(schema()));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_file(PartitionedFile::new("t/a.parquet", 100))
            .build();
        DataSourceExec::from_data_source(config)
    }

    fn filtered(input: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let a = col("a", &schema()).expect("column a");
        let predicate = Arc::new(BinaryExpr::new(a, Operator::Gt, lit(1i64)));
        Arc::new(FilterExec::try_new(predicate, input).expect("filter"))
    }

    #[test]
    fn a_filtered_file_scan_is_work_for_a_worker() {
        let plan = filtered(scan());
        assert!(is_worker_safe(&plan));
        assert!(contains_scan(&plan));
        assert!(all_self_contained(&plan));
        assert!(contained_when_whole(&plan));
        assert!(has_input(&plan));
        assert!(!reads_exchange(&plan));
    }

    #[test]
    fn without_a_scan_or_above_a_merge_it_is_not() {
        let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(schema()));
        assert!(!contains_scan(&empty));
        assert!(!has_input(&empty));
        assert!(!is_worker_safe(&empty));
        // A merge of all partitions is not work one partition can do.
        let merged: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(scan()));
        assert!(contains_scan(&merged));
        assert!(!is_worker_safe(&filtered(merged)));
    }
}
