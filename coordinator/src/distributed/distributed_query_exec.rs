//! [`DistributedQueryExec`]: the root of a query cut into stages.
//!
//! When its first partition is executed it has the [`Scheduler`] run every
//! stage, then points the root's exchange reads at the stages' outputs and runs
//! the root: its merge on the coordinator, the partitions below the merge on
//! workers as streamed fragments ([`RemoteFragmentExec`]). `EXPLAIN` shows the
//! root and, under it, each stage with its output partitioning; after `EXPLAIN
//! ANALYZE` each stage also lists its tasks: worker, rows, bytes, spill, time.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, Result};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan, PlanProperties};
use datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, TryStreamExt};

use super::remote_fragment_exec::FragmentReports;
use super::scheduler::{QueryRun, Scheduler, StageReports};
use super::stage_exec::StageExec;
use super::stages::{StagePlan, StagedPlan};
use super::worker_fragments_exec::WorkerFragmentsExec;
use super::RemoteFragmentExec;

type Ready = Shared<
    BoxFuture<
        'static,
        std::result::Result<(Arc<dyn ExecutionPlan>, Arc<QueryRun>), Arc<DataFusionError>>,
    >,
>;

pub struct DistributedQueryExec {
    root: Arc<dyn ExecutionPlan>,
    stages: Vec<StagePlan>,
    /// What `EXPLAIN` shows: the root, then one [`StageExec`] per stage.
    children: Vec<Arc<dyn ExecutionPlan>>,
    reports: HashMap<u32, StageReports>,
    scheduler: Arc<Scheduler>,
    planned_workers: Vec<String>,
    ready: Mutex<Option<Ready>>,
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
        Ok(Self {
            root,
            stages: staged.stages,
            children,
            reports,
            scheduler,
            planned_workers,
            ready: Mutex::new(None),
        })
    }

    /// Runs the stages once for all partitions; the result is the bound root.
    fn ready(&self, query_id: String) -> Result<Ready> {
        let mut ready = self.ready.lock();
        if let Some(r) = ready.as_ref() {
            return Ok(r.clone());
        }
        let run = Arc::new(QueryRun::new(query_id, &self.stages, self.reports.clone()));
        let scheduler = self.scheduler.clone();
        let root = self.root.clone();
        let fut = async move {
            scheduler.run(&run).await.map_err(Arc::new)?;
            let bound = run.bind(&root).map_err(Arc::new)?;
            let root = send_fragments(bound, &scheduler, &run).map_err(Arc::new)?;
            Ok((root, run))
        }
        .boxed()
        .shared();
        *ready = Some(fut.clone());
        Ok(fut)
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
        write!(
            f,
            "DistributedQueryExec: stages={}, workers=[{}]",
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
        let ready = self.ready(context.session_id())?;
        let schema = self.root.schema();
        let stream = futures::stream::once(async move {
            let (root, run) = ready.await.map_err(DataFusionError::Shared)?;
            let stream = root.execute(partition, context)?;
            // The run (and with it the exchange files) lives until the last stream ends.
            Ok::<_, DataFusionError>(stream.inspect_ok(move |_| {
                let _ = &run;
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
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
fn send_fragments(
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
        let exec = RemoteFragmentExec::new(next, input, bytes, assignment, scheduler.pool.clone())
            .with_memory_limit(scheduler.task_memory_limit())
            .with_tracking(marker.reports.clone(), scheduler.log.clone())
            .with_recovery(recovery(
                scheduler.clone(),
                run.clone(),
                marker.input.clone(),
            ));
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
