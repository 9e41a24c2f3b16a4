//! The part of a distributed query's root that runs on workers: marked when the
//! plan is cut ([`mark_fragments`]), and turned into fragments on the workers
//! once the stages it reads are bound ([`send_fragments`]).

use parking_lot::Mutex;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};
use datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec;
use futures::FutureExt;

use super::remote_fragment_exec::FragmentReports;
use super::scheduler::{QueryRun, Scheduler};
use super::worker_fragments_exec::WorkerFragmentsExec;
use super::RemoteFragmentExec;

/// Marks the parts of the root that run on workers: below a merge, the highest
/// subtree that reads an exchange or a scan and can be serialized. The merges
/// above stay on the coordinator.
pub(super) fn mark_fragments(
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
