//! [`StageExec`]: one stage of a distributed query as `EXPLAIN` shows it (its
//! exchange, tasks and, after `EXPLAIN ANALYZE`, what each task did); never executed.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::{ExecutionPlan, PlanProperties};
use quiver_worker::exchange::ShuffleOutput;

use super::explain_runs::{write_runs, Run};
use super::scheduler::StageReports;
use super::stages::StagePlan;

/// One stage in `EXPLAIN`; never executed.
pub(super) struct StageExec {
    stage: StagePlan,
    report: StageReports,
}

impl StageExec {
    pub(super) fn new(stage: StagePlan, report: StageReports) -> Self {
        Self { stage, report }
    }
}

impl fmt::Debug for StageExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageExec")
            .field("stage", &self.stage.id)
            .finish()
    }
}

impl DisplayAs for StageExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let exchange = match &self.stage.output {
            ShuffleOutput::Hash(..) => "shuffle",
            ShuffleOutput::Single if self.stage.tasks() > 1 => "gather",
            ShuffleOutput::Single => "forward",
        };
        write!(
            f,
            "StageExec: stage={}, tasks={}, exchange={exchange}, output={}",
            self.stage.id,
            self.stage.tasks(),
            self.stage.output
        )?;
        if self.stage.summarize_keys {
            write!(f, ", keys summarized")?;
        }
        if !self.stage.filtered_by.is_empty() {
            let from: Vec<String> = self
                .stage
                .filtered_by
                .iter()
                .map(|s| s.to_string())
                .collect();
            write!(f, ", filtered by the keys of stage {}", from.join(", "))?;
        }
        let report = self.report.lock();
        let runs = report.iter().map(|t| {
            t.as_ref().map(|t| Run {
                worker: &t.worker.id,
                rows: t.report.rows.iter().sum(),
                bytes: t.report.bytes.iter().sum(),
                spilled: t.report.spilled_bytes,
                elapsed_ms: t.report.elapsed_ms,
                attempts: t.attempts,
            })
        });
        write_runs(f, 't', runs, "not run")?;
        Ok(())
    }
}

impl ExecutionPlan for StageExec {
    fn name(&self) -> &str {
        "StageExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.stage.plan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.stage.plan]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        internal_err!(
            "stage {} runs through its query, not on its own",
            self.stage.id
        )
    }
}
