//! [`DistributedQueryExec`]: the root of a query cut into stages.
//!
//! When its first partition is executed it has the [`Scheduler`] run the stages
//! (`runs.rs`: streamed, or with exchange files), then points the root's exchange
//! reads at the stages' outputs and runs the root: its merge on the coordinator,
//! the partitions below the merge on workers as streamed fragments
//! ([`RemoteFragmentExec`]). `EXPLAIN` shows the
//! root and, under it, each stage with its output partitioning; after `EXPLAIN
//! ANALYZE` each stage also lists its tasks: worker, rows, bytes, spill, time.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::{ExecutionPlan, PlanProperties};

use super::root_fragments::mark_fragments;
use super::runs::Runs;
use super::scheduler::{Scheduler, StageReports};
use super::stage_exec::StageExec;
use super::stages::{StagePlan, StagedPlan};

pub struct DistributedQueryExec {
    root: Arc<dyn ExecutionPlan>,
    stages: Vec<StagePlan>,
    /// What `EXPLAIN` shows: the root, then one [`StageExec`] per stage.
    children: Vec<Arc<dyn ExecutionPlan>>,
    planned_workers: Vec<String>,
    /// The query's runs, shared by the root's partitions.
    runs: Arc<Runs>,
}

impl DistributedQueryExec {
    pub fn new(staged: StagedPlan, scheduler: Arc<Scheduler>) -> Result<Self> {
        let mut reports = HashMap::new();
        let mut stage_nodes = vec![];
        // Later stages first: the tree then reads top-down like the query runs bottom-up.
        for stage in staged.stages.iter().rev() {
            let report: StageReports = Arc::new(Mutex::new(vec![None; stage.tasks()]));
            reports.insert(stage.id, report.clone());
            stage_nodes
                .push(Arc::new(StageExec::new(stage.clone(), report)) as Arc<dyn ExecutionPlan>);
        }
        let root = mark_fragments(staged.root, &scheduler.codec)?;
        let mut children = vec![root.clone()];
        children.extend(stage_nodes);
        let planned_workers = scheduler
            .pool
            .healthy()
            .iter()
            .map(|w| w.id.clone())
            .collect();
        let runs = Arc::new(Runs::new(
            scheduler,
            root.clone(),
            staged.stages.clone(),
            reports,
        ));
        Ok(Self {
            root,
            stages: staged.stages,
            children,
            planned_workers,
            runs,
        })
    }
}

impl fmt::Debug for DistributedQueryExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedQueryExec")
            .field("stages", &self.stages.len())
            .finish()
    }
}

impl DisplayAs for DistributedQueryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        // The workers the scheduler may place tasks on, as planned; it picks among
        // the healthy ones again when the query runs.
        let workers: Vec<String> = self
            .planned_workers
            .iter()
            .map(|w| format!("@{w}"))
            .collect();
        let exchanges = match self.runs.ran.lock().clone() {
            Some(ran) => ran,
            None if self.runs.streams() => "streamed".into(),
            None => "files".into(),
        };
        write!(
            f,
            "DistributedQueryExec: stages={}, exchanges={exchanges}, workers=[{}]",
            self.stages.len(),
            workers.join(", ")
        )
    }
}

impl ExecutionPlan for DistributedQueryExec {
    fn name(&self) -> &str {
        "DistributedQueryExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.root.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.children.iter().collect()
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
        let same = children.len() == self.children.len()
            && children
                .iter()
                .zip(&self.children)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same {
            Ok(self)
        } else {
            internal_err!("DistributedQueryExec cannot take new children once its stages are cut")
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(self.runs.execute(partition, context))
    }
}
