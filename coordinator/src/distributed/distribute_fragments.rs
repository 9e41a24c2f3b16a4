//! The physical optimizer rule that wraps worker-safe subtrees in [`RemoteFragmentExec`].

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::Partitioning;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};
use datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec;
use quiver_proto::QuiverCodec;

use quiver_worker::exchange::ShuffleWriteExec;

use super::distributed_query_exec::DistributedQueryExec;
use super::plan_shape::{all_self_contained, contained_when_whole, contains_scan, is_worker_safe};
use super::scheduler::Scheduler;
use super::stages;
use super::RemoteFragmentExec;
use crate::pool::{Worker, WorkerPool};

/// Runs last among the physical optimizer rules.
#[derive(Debug)]
pub struct DistributeFragments {
    pool: Arc<WorkerPool>,
    codec: QuiverCodec,
    /// Runs queries cut into stages; without it (`workers.exchanges = false`) only
    /// scans and what sits on them run on workers.
    scheduler: Option<Arc<Scheduler>>,
    /// Plans scanning at most this many bytes of files run whole on one worker (0 = never).
    single_stage_max_bytes: u64,
    /// `[workers] join_key_array_max`, for plans that run here whole.
    join_key_array_max: usize,
}

impl DistributeFragments {
    pub fn new(
        pool: Arc<WorkerPool>,
        codec: QuiverCodec,
        scheduler: Option<Arc<Scheduler>>,
        single_stage_max_bytes: u64,
        join_key_array_max: usize,
    ) -> Self {
        Self {
            pool,
            codec,
            scheduler,
            single_stage_max_bytes,
            join_key_array_max,
        }
    }

    /// The whole plan as one fragment on the least busy worker, when its inputs
    /// are small (see `adaptive.rs`).
    fn single_stage(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        workers: &[Arc<Worker>],
    ) -> Option<Arc<dyn ExecutionPlan>> {
        let bytes = super::adaptive::input_bytes(plan)?;
        if bytes > self.single_stage_max_bytes || !contained_when_whole(plan) {
            return None;
        }
        let whole: Arc<dyn ExecutionPlan> = if plan.properties().partitioning.partition_count() > 1
        {
            Arc::new(CoalescePartitionsExec::new(plan.clone()))
        } else {
            plan.clone()
        };
        let encoded = match physical_plan_to_bytes_with_extension_codec(whole.clone(), &self.codec)
        {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "plan cannot run whole on a worker");
                return None;
            }
        };
        let worker = workers
            .iter()
            .min_by_key(|w| w.running_fragments())?
            .clone();
        let note = format!(
            "single_stage (inputs {} <= workers.single_stage_max_bytes)",
            super::adaptive::mib(bytes)
        );
        let mut exec = RemoteFragmentExec::new(0, whole, encoded, vec![worker], self.pool.clone())
            .with_note(note);
        if let Some(s) = &self.scheduler {
            // Recorded in system.fragments and the query's cost as stage 0.
            exec = exec.with_tracking(Arc::new(parking_lot::Mutex::new(vec![None])), s.log.clone());
        }
        Some(Arc::new(exec))
    }

    /// The plan cut into stages, if it has exchanges and every stage can be sent to workers.
    fn staged(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Option<Arc<dyn ExecutionPlan>> {
        let scheduler = self.scheduler.as_ref()?;
        if !all_self_contained(plan) {
            return None;
        }
        let mut staged = match stages::cut(plan.clone(), config.execution.target_partitions) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "plan is not cut into stages");
                return None;
            }
        };
        if staged.stages.is_empty() {
            return None;
        }
        if let Some(values_max) = scheduler.settings.dynamic_filter_values {
            super::dynamic_filters::link(&mut staged, values_max);
        }
        for stage in &staged.stages {
            let write: Arc<dyn ExecutionPlan> = Arc::new(ShuffleWriteExec::new(
                stage.id,
                stage.plan.clone(),
                stage.output.clone(),
            ));
            if let Err(e) = physical_plan_to_bytes_with_extension_codec(write, &self.codec) {
                tracing::debug!(stage = stage.id, error = %e, "a stage cannot run on workers; distributing scans only");
                return None;
            }
        }
        match DistributedQueryExec::new(staged, scheduler.clone()) {
            Ok(exec) => Some(Arc::new(exec)),
            Err(e) => {
                tracing::debug!(error = %e, "plan is not cut into stages");
                None
            }
        }
    }
}

impl PhysicalOptimizerRule for DistributeFragments {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !contains_scan(&plan) {
            // Runs here, whole: its database scans can also take the build sides' key sets.
            return quiver_connectors::join_keys::attach(plan, Some(self.join_key_array_max));
        }
        // Parts may run here; workers attach key sets to the fragments they run.
        let plan = quiver_connectors::join_keys::attach(plan, None)?;
        let workers = self.pool.healthy();
        if workers.is_empty() {
            return Err(super::wake::NoWorkers::error(self.pool.all().len()));
        }
        let plan = sink_filters_below_round_robin(plan)?;
        let plan = super::scan_ranges::even_out_file_starts(plan)?;
        if let Some(whole) = self.single_stage(&plan, &workers) {
            return Ok(whole);
        }
        if let Some(staged) = self.staged(&plan, config) {
            return Ok(staged);
        }
        let mut assigner = Assigner {
            pool: &self.pool,
            codec: &self.codec,
            workers,
            next_fragment: 0,
            next_worker: 0,
        };
        assigner.rewrite(plan)
    }

    fn name(&self) -> &str {
        "quiver_distribute_fragments"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

struct Assigner<'a> {
    pool: &'a Arc<WorkerPool>,
    codec: &'a QuiverCodec,
    workers: Vec<Arc<Worker>>,
    next_fragment: u32,
    next_worker: usize,
}

impl Assigner<'_> {
    /// Top-down: the highest worker-safe subtree with a scan becomes one fragment.
    fn rewrite(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        if is_worker_safe(&plan) && contains_scan(&plan) {
            if let Some(fragment) = self.fragment(&plan) {
                return Ok(fragment);
            }
        }
        let children = plan.children();
        if children.is_empty() {
            return Ok(plan);
        }
        let new_children = children
            .into_iter()
            .map(|c| self.rewrite(c.clone()))
            .collect::<Result<Vec<_>>>()?;
        replace_children_if_necessary(plan, new_children)
    }

    fn fragment(&mut self, plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
        let bytes = match physical_plan_to_bytes_with_extension_codec(plan.clone(), self.codec) {
            Ok(b) => b,
            Err(e) => {
                // Whatever cannot be serialized runs on the coordinator instead.
                tracing::debug!(node = plan.name(), error = %e, "subtree stays on the coordinator");
                return None;
            }
        };
        let partitions = plan.properties().partitioning.partition_count();
        let assignment = (0..partitions)
            .map(|_| {
                let w = self.workers[self.next_worker % self.workers.len()].clone();
                self.next_worker += 1;
                w
            })
            .collect();
        let id = self.next_fragment;
        self.next_fragment += 1;
        Some(Arc::new(RemoteFragmentExec::new(
            id,
            plan.clone(),
            bytes,
            assignment,
            self.pool.clone(),
        )))
    }
}

/// DataFusion spreads a single-partition scan with a round-robin repartition and
/// filters *above* it, so the filter would run on the coordinator after the whole
/// table crossed the network. Filtering commutes with round-robin distribution:
/// move filters and projections under it, into the fragment.
fn sink_filters_below_round_robin(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let movable = node.as_ref().is::<FilterExec>() || node.as_ref().is::<ProjectionExec>();
        let Some(child) = node.children().first().map(|c| Arc::clone(c)) else {
            return Ok(Transformed::no(node));
        };
        let Some(repartition) = child.as_ref().downcast_ref::<RepartitionExec>() else {
            return Ok(Transformed::no(node));
        };
        let Partitioning::RoundRobinBatch(n) = repartition.partitioning() else {
            return Ok(Transformed::no(node));
        };
        if !movable || repartition.preserve_order() {
            return Ok(Transformed::no(node));
        }
        let (n, input) = (*n, repartition.input().clone());
        let sunk = replace_children_if_necessary(node.clone(), vec![input])?;
        Ok(Transformed::yes(Arc::new(RepartitionExec::try_new(
            sunk,
            Partitioning::RoundRobinBatch(n),
        )?)))
    })
    .map(|t| t.data)
}
