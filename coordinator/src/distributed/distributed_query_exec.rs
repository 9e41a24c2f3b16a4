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

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan, PlanProperties};
use datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec;
use futures::FutureExt;

use super::remote_fragment_exec::FragmentReports;
use super::runs::Runs;
use super::scheduler::{QueryRun, Scheduler, StageReports};
use super::stage_exec::StageExec;
use super::stages::{StagePlan, StagedPlan};
use super::worker_fragments_exec::WorkerFragmentsExec;
use super::RemoteFragmentExec;

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

/// Marks the parts of the root that run on workers: below a merge, the highest
/// subtree that reads an exchange or a scan and can be serialized. The merges
/// above stay on the coordinator.
fn mark_fragments(
    plan: Arc<dyn ExecutionPlan>,
    codec: &quiver_proto::QuiverCodec,
) -> Result<Arc<dyn ExecutionPlan>> {
    // A subtree with a merge of many partitions would run them all in one fragment:
    // the merge stays here, and the partitions under it become fragments.
    if !has_wide_merge(&plan)
        && super::plan_shape::has_input(&plan)
        && physical_plan_to_bytes_with_extension_codec(plan.clone(), codec).is_ok()
    {
        let partitions = plan.properties().partitioning.partition_count();
        let reports: FragmentReports = Arc::new(Mutex::new(vec![None; partitions]));
        return Ok(Arc::new(WorkerFragmentsExec {
            input: plan,
            reports,
        }));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    if children.is_empty() {
        return Ok(plan);
    }
    let children = children
        .into_iter()
        .map(|c| mark_fragments(c, codec))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, children)
}

fn has_wide_merge(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let merge = plan.as_ref().is::<CoalescePartitionsExec>()
        || plan.as_ref().is::<SortPreservingMergeExec>();
    let wide = |c: &&Arc<dyn ExecutionPlan>| c.properties().partitioning.partition_count() > 1;
    (merge && plan.children().iter().any(wide)) || plan.children().into_iter().any(has_wide_merge)
}

/// Replaces each marked part of the bound root with the fragments that run it.
pub(super) fn send_fragments(
    plan: Arc<dyn ExecutionPlan>,
    scheduler: &Arc<Scheduler>,
    run: &Arc<QueryRun>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut next = 0;
    plan.transform_down(|node| {
        let Some(marker) = node.as_ref().downcast_ref::<WorkerFragmentsExec>() else {
            return Ok(Transformed::no(node));
        };
        let input = marker.input.clone();
        let bytes = physical_plan_to_bytes_with_extension_codec(input.clone(), &scheduler.codec)?;
        let mut workers = scheduler.pool.healthy();
        workers.sort_by_key(|w| w.running_fragments());
        let partitions = input.properties().partitioning.partition_count();
        let assignment = (0..partitions)
            .filter_map(|p| workers.get(p % workers.len().max(1)).cloned())
            .collect();
        next += 1;
        let memory = run
            .task_memory
            .unwrap_or_else(|| scheduler.task_memory_limit());
        let mut exec =
            RemoteFragmentExec::new(next, input, bytes, assignment, scheduler.pool.clone())
                .with_memory_limit(memory)
                .with_tracking(marker.reports.clone(), scheduler.log.clone());
        // A streamed input cannot be read twice: the whole query runs again instead.
        if !run.is_streamed() {
            exec = exec.with_recovery(recovery(
                scheduler.clone(),
                run.clone(),
                marker.input.clone(),
            ));
        }
        Ok(Transformed::new(
            Arc::new(exec) as Arc<dyn ExecutionPlan>,
            true,
            TreeNodeRecursion::Jump,
        ))
    })
    .map(|t| t.data)
}

/// A fragment that lost an input has the scheduler recompute it, then runs on the new output.
fn recovery(
    scheduler: Arc<Scheduler>,
    run: Arc<QueryRun>,
    fragment: Arc<dyn ExecutionPlan>,
) -> super::remote_fragment_exec::Recover {
    Arc::new(move |lost| {
        let (scheduler, run, fragment) = (scheduler.clone(), run.clone(), fragment.clone());
        async move {
            scheduler.recover(&run, &lost).await?;
            let bound = run.bind(&fragment)?;
            physical_plan_to_bytes_with_extension_codec(bound, &scheduler.codec)
        }
        .boxed()
    })
}
