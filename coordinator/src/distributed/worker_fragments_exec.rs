//! [`WorkerFragmentsExec`]: in `EXPLAIN`, the part of a distributed query's root
//! that runs on workers as streamed fragments.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::{ExecutionPlan, PlanProperties};

use quiver_proto::plan_nodes::single_child;

use super::explain_runs::{write_runs, Run};
use super::remote_fragment_exec::FragmentReports;

/// In `EXPLAIN`, the part of the root that runs on workers, one fragment per
/// partition streamed to the coordinator; replaced by [`RemoteFragmentExec`] when
/// the query runs. After `EXPLAIN ANALYZE` it lists each fragment's worker and cost.
pub(super) struct WorkerFragmentsExec {
    pub(super) input: Arc<dyn ExecutionPlan>,
    pub(super) reports: FragmentReports,
}

impl fmt::Debug for WorkerFragmentsExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerFragmentsExec").finish()
    }
}

impl DisplayAs for WorkerFragmentsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let partitions = self.input.properties().partitioning.partition_count();
        write!(
            f,
            "WorkerFragmentsExec: partitions={partitions}, streamed from workers"
        )?;
        let reports = self.reports.lock();
        let runs = reports.iter().map(|r| {
            r.as_ref().map(|r| Run {
                worker: &r.worker,
                rows: r.stats.rows,
                bytes: r.stats.bytes,
                spilled: r.stats.spilled_bytes,
                elapsed_ms: r.stats.elapsed_ms,
                attempts: r.attempts,
            })
        });
        // A partition not read to its end: a LIMIT above had enough rows.
        write_runs(f, 'p', runs, "unfinished")?;
        Ok(())
    }
}

impl ExecutionPlan for WorkerFragmentsExec {
    fn name(&self) -> &str {
        "WorkerFragmentsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            input: single_child("WorkerFragmentsExec", children)?,
            reports: self.reports.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let _ = (partition, context);
        internal_err!("the fragments of a distributed query ran before its stages")
    }
}
