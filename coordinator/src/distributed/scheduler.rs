//! The stage scheduler: runs a query's stages on workers in dependency order.
//!
//! - **Placement**: each task goes to the healthy worker with the fewest running
//!   fragments, at most `max_fragments_per_worker` at a time (a task waits for a
//!   slot); among equally loaded workers, the one that already holds most of the
//!   stage's input wins, since it reads those rows from local disk.
//! - **Retries**: a task whose worker dies, or stops answering its health checks,
//!   is run again on another worker. A task that cannot read an input because the
//!   producer's worker is gone makes the scheduler recompute that producer's lost
//!   outputs, then runs again. Every task has at most `task_attempts` attempts;
//!   after that the query fails with the last error.
//! - **Memory**: with a per-query limit, each task gets an even share of it for
//!   the number of tasks that can run at once, so the query never holds more;
//!   operators spill to disk when their share runs out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use bytes::Bytes;
use datafusion::common::exec_err;
use datafusion::common::{internal_err, Result};
use datafusion::error::DataFusionError;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use quiver_proto::{FragmentStats, FragmentTicket, QuiverCodec};
use quiver_worker::exchange::{lost_output, LostOutput, ShuffleWriteExec, TaskReport};

pub use super::query_run::{QueryRun, StageReports, TaskOutput};
use super::remote_fragment_exec::{is_unreachable, worker_error};
use crate::config::ExchangeMode;
use crate::observe::counters::Counters;
use crate::observe::fragments::FragmentLog;
use crate::pool::{RunningFragment, Worker, WorkerPool};

/// How the scheduler places and retries tasks (from `[workers]` in the config).
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub max_fragments_per_worker: u32,
    pub task_attempts: u32,
    pub query_memory_limit: Option<u64>,
    pub exchange_mode: ExchangeMode,
    /// Dynamic filters across stages (`workers.dynamic_filters`), listing at most
    /// this many build-side keys (`workers.join_keys_max`); None: off.
    pub dynamic_filter_values: Option<usize>,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            max_fragments_per_worker: 4,
            task_attempts: 4,
            query_memory_limit: None,
            exchange_mode: ExchangeMode::default(),
            dynamic_filter_values: Some(
                quiver_connectors::join_keys::JoinKeyLimits::default().list,
            ),
        }
    }
}

/// Shared by all queries of a coordinator.
pub struct Scheduler {
    pub(super) pool: Arc<WorkerPool>,
    pub(super) codec: QuiverCodec,
    pub(super) settings: SchedulerSettings,
    pub(super) log: Arc<FragmentLog>,
}

pub(super) enum TaskError {
    /// The task's own worker is gone: run it elsewhere.
    Unreachable(String),
    /// An input is gone: recompute it, then run again.
    Lost(LostOutput),
    /// The task itself failed (bad data, out of memory...): the query fails.
    Failed(DataFusionError),
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Scheduler {
    pub fn new(
        pool: Arc<WorkerPool>,
        codec: QuiverCodec,
        settings: SchedulerSettings,
        log: Arc<FragmentLog>,
    ) -> Self {
        Self {
            pool,
            codec,
            settings,
            log,
        }
    }

    /// Runs every stage of `run`, each as soon as the stages it reads are done.
    pub async fn run(&self, run: &Arc<QueryRun>) -> Result<()> {
        let deps: Vec<(u32, Vec<u32>)> = run
            .order
            .iter()
            .map(|id| {
                (
                    *id,
                    run.stages
                        .get(id)
                        .map(|s| s.inputs.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        in_dependency_order(&run.id, &deps, |id| self.run_stage(run, id)).await
    }

    async fn run_stage(&self, run: &Arc<QueryRun>, stage: u32) -> Result<()> {
        run.wait_for_keys(stage, super::dynamic_filters::SUMMARY_WAIT)
            .await;
        let tasks = run.stages.get(&stage).map(|s| s.tasks()).unwrap_or(0);
        Counters::add(&self.pool.counters().stages, 1);
        tracing::debug!(query = %run.id, stage, tasks, "stage starts");
        self.run_tasks(run, stage, (0..tasks).collect()).await
    }

    /// Runs `tasks` of `stage`, all with the plan serialized once.
    async fn run_tasks(&self, run: &Arc<QueryRun>, stage: u32, tasks: Vec<usize>) -> Result<()> {
        let plan = self.encode(run, stage)?;
        futures::future::try_join_all(
            tasks
                .into_iter()
                .map(|t| self.run_task(run.clone(), stage, t, plan.clone())),
        )
        .await?;
        Ok(())
    }

    /// Runs one task until it succeeds or runs out of attempts.
    fn run_task(
        &self,
        run: Arc<QueryRun>,
        stage: u32,
        task: usize,
        plan: Bytes,
    ) -> BoxFuture<'_, Result<()>> {
        async move {
            let mut plan = plan;
            let mut avoid: Vec<String> = vec![];
            let mut last_error = String::new();
            for attempt in 1..=self.settings.task_attempts {
                let (worker, running) = self.place(&run, stage, &avoid, &last_error, true).await?;
                let logged = self.log.begin(&run.id, stage, task as u32, attempt, &worker.id);
                match self.execute(&run, stage, task, &worker, plan.clone()).await {
                    Ok((report, stats)) => {
                        drop(running);
                        let output = TaskOutput { worker, report, attempts: attempt };
                        return self.finished(&run, stage, task, logged, output, stats);
                    }
                    Err(TaskError::Unreachable(message)) => {
                        drop(running);
                        tracing::warn!(query = %run.id, stage, task, worker = %worker.id, error = %message, "worker lost; the task runs again elsewhere");
                        logged.end("retried", 0, 0, 0, Some(message.clone()));
                        worker.set_healthy(false);
                        Counters::add(&self.pool.counters().fragment_retries, 1);
                        avoid.push(worker.id.clone());
                        last_error = message;
                    }
                    Err(TaskError::Lost(lost)) => {
                        drop(running);
                        tracing::warn!(query = %run.id, stage, task, lost = %lost, "an input of the task is lost; recomputing it");
                        logged.end("retried", 0, 0, 0, Some(lost.to_string()));
                        Counters::add(&self.pool.counters().fragment_retries, 1);
                        last_error = lost.to_string();
                        self.recover(&run, &lost).await?;
                        // The lost input has a new location: bind the plan to it.
                        plan = self.encode(&run, stage)?;
                    }
                    Err(TaskError::Failed(e)) => {
                        logged.end("failed", 0, 0, 0, Some(e.to_string()));
                        return Err(e);
                    }
                }
            }
            exec_err!(
                "task {task} of stage {stage} failed {} times; last error: {last_error}",
                self.settings.task_attempts
            )
        }
        .boxed()
    }

    /// Records a task that finished: its cost in the fragment log, its output in the run.
    pub(super) fn finished(
        &self,
        run: &QueryRun,
        stage: u32,
        task: usize,
        logged: crate::observe::fragments::LoggedAttempt,
        output: TaskOutput,
        stats: Option<FragmentStats>,
    ) -> Result<()> {
        let bytes: u64 = output.report.bytes.iter().sum();
        let rows: u64 = output.report.rows.iter().sum();
        if let Some(stats) = &stats {
            logged.cost(stats);
        }
        logged.end("finished", rows, bytes, output.report.spilled_bytes, None);
        Counters::add(&self.pool.counters().exchange_bytes, bytes);
        run.store(stage, task, output)
    }

    /// Recomputes the outputs lost with `lost`: every output of its stage on the same worker.
    pub(super) async fn recover(&self, run: &Arc<QueryRun>, lost: &LostOutput) -> Result<()> {
        let Some(lock) = run.recovering.get(&lost.stage) else {
            return internal_err!("lost output of unknown stage {}", lost.stage);
        };
        let _one_at_a_time = lock.lock().await;
        let victims: Vec<usize> = {
            let mut outputs = run.outputs();
            let Some(tasks) = outputs.get_mut(&lost.stage) else {
                return Ok(());
            };
            let victims: Vec<usize> = tasks
                .iter()
                .enumerate()
                .filter(|(_, o)| {
                    o.as_ref().is_some_and(|o| {
                        o.report.key == lost.key || o.worker.address == lost.address
                    })
                })
                .map(|(i, _)| i)
                .collect();
            for &v in &victims {
                if let Some(slot) = tasks.get_mut(v) {
                    if let Some(o) = slot.take() {
                        // The producer's worker is gone, not just its file: plan nothing more on it.
                        if is_unreachable(&tonic::Status::unknown(lost.cause.clone())) {
                            o.worker.set_healthy(false);
                        }
                    }
                }
            }
            victims
        };
        // Already recomputed by another reader of the same output.
        if victims.is_empty() {
            return Ok(());
        }
        Counters::add(&self.pool.counters().lost_outputs, victims.len() as u64);
        self.run_tasks(run, lost.stage, victims).await
    }

    /// The stage's plan with its inputs bound, serialized for the workers.
    pub(super) fn encode(&self, run: &QueryRun, stage: u32) -> Result<Bytes> {
        let input = self.stage_input(run, stage)?;
        self.encode_write(run, stage, input, None)
    }

    /// The plans of the tasks of streamed `stage`, each naming its own output's
    /// key; the stage's input is bound and filtered once for all of them.
    pub(super) fn encode_streamed(&self, run: &QueryRun, stage: u32) -> Result<Vec<Bytes>> {
        let input = self.stage_input(run, stage)?;
        let tasks = run.stages.get(&stage).map(|s| s.tasks()).unwrap_or(0);
        (0..tasks)
            .map(|task| self.encode_write(run, stage, input.clone(), Some(task)))
            .collect()
    }

    /// `stage`'s work with its inputs bound and, when a build stage's keys
    /// filter it, that filter applied.
    fn stage_input(&self, run: &QueryRun, stage: u32) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(plan) = run.stages.get(&stage) else {
            return internal_err!("unknown stage {stage}");
        };
        let bound = run.bind(&plan.plan)?;
        match self.settings.dynamic_filter_values {
            Some(max) => match run.key_condition(stage, max)? {
                Some(condition) => super::dynamic_filters::filtered(bound, condition),
                None => Ok(bound),
            },
            None => Ok(bound),
        }
    }

    /// `input` under the stage's exchange writer, serialized; for task `task` of a
    /// streamed stage, the writer streams under that task's key.
    fn encode_write(
        &self,
        run: &QueryRun,
        stage: u32,
        input: Arc<dyn ExecutionPlan>,
        task: Option<usize>,
    ) -> Result<Bytes> {
        let Some(plan) = run.stages.get(&stage) else {
            return internal_err!("unknown stage {stage}");
        };
        let mut write = ShuffleWriteExec::new(stage, input, plan.output.clone());
        if let (true, Some(max)) = (plan.summarize_keys, self.settings.dynamic_filter_values) {
            write = write.with_key_summary(max);
        }
        let streamed = task.and_then(|t| run.streamed.get(&stage)?.get(t));
        if let Some(t) = streamed {
            write = write.streamed(t.key.clone());
        }
        physical_plan_to_bytes_with_extension_codec(Arc::new(write), &self.codec)
    }

    /// The least-loaded healthy worker with a free slot; waits while all are full,
    /// unless `wait` is false (a task of a streamed run, which must start at once:
    /// the tasks it feeds or reads already run).
    pub(super) async fn place(
        &self,
        run: &QueryRun,
        stage: u32,
        avoid: &[String],
        last_error: &str,
        wait: bool,
    ) -> Result<(Arc<Worker>, RunningFragment)> {
        let share = run.input_share(stage);
        let limit = self.settings.max_fragments_per_worker.max(1);
        // Counted as waiting (the autoscaler's and KEDA's load) while every worker is full.
        let mut waiting = None;
        loop {
            let candidates: Vec<Arc<Worker>> = self
                .pool
                .healthy()
                .into_iter()
                .filter(|w| !avoid.contains(&w.id))
                .collect();
            if candidates.is_empty() {
                let configured = self.pool.all().len();
                let mut message = format!(
                    "no healthy worker left to run stage {stage} of the query ({configured} known)"
                );
                if !last_error.is_empty() {
                    message.push_str(&format!("; last error: {last_error}"));
                }
                return Err(DataFusionError::Execution(message));
            }
            let best = candidates
                .iter()
                .filter(|w| !wait || w.running_fragments() < limit)
                .min_by_key(|w| {
                    (
                        w.running_fragments(),
                        std::cmp::Reverse(share.get(&w.id).copied().unwrap_or(0)),
                    )
                });
            if let Some(w) = best {
                let running = w.track_fragment();
                return Ok((w.clone(), running));
            }
            waiting.get_or_insert_with(|| self.pool.waiting());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Memory limit of one task.
    pub(super) fn task_memory_limit(&self) -> u64 {
        let slots = self.pool.healthy().len() * self.settings.max_fragments_per_worker as usize;
        self.task_memory_for(slots)
    }

    /// Memory of one task when `tasks` of a query run at once: an even share of
    /// the query's limit, at most a fragment's.
    pub(super) fn task_memory_for(&self, tasks: usize) -> u64 {
        let fragment = self.pool.fragment_memory_limit();
        match self.settings.query_memory_limit {
            Some(query) => (query / tasks.max(1) as u64).min(fragment),
            None => fragment,
        }
    }

    /// Runs one attempt of a task on `worker` and reads its report.
    pub(super) async fn execute(
        &self,
        run: &QueryRun,
        stage: u32,
        task: usize,
        worker: &Arc<Worker>,
        plan: Bytes,
    ) -> std::result::Result<(TaskReport, Option<FragmentStats>), TaskError> {
        let ticket = FragmentTicket {
            query_id: run.id.clone(),
            fragment_id: stage,
            partition: task as u32,
            plan: plan.to_vec(),
            memory_limit: run.task_memory.unwrap_or_else(|| self.task_memory_limit()),
            for_client: false,
            worker_address: String::new(),
            relay: false,
            string_views: false,
            exchange_scope: run.scope.clone(),
        };
        Counters::add(&self.pool.counters().fragments, 1);
        let mut client = worker.client();
        let call = async {
            let response = client
                .do_get(worker.ticket(&ticket))
                .await
                .map_err(|s| classify(&worker.id, s))?;
            // The report batches, and the task's cost in the last message's app_metadata.
            let mut stats = None;
            let mut batches = vec![];
            let mut decoded = FlightDataDecoder::new(
                response
                    .into_inner()
                    .map_err(|s| FlightError::Tonic(Box::new(s))),
            );
            while let Some(data) = decoded.next().await {
                let data = match data {
                    Ok(d) => d,
                    Err(FlightError::Tonic(s)) => return Err(classify(&worker.id, *s)),
                    Err(e) => {
                        return Err(TaskError::Failed(DataFusionError::External(Box::new(e))))
                    }
                };
                if !data.inner.app_metadata.is_empty() {
                    stats = FragmentStats::decode_from(&data.inner.app_metadata).ok();
                }
                if let DecodedPayload::RecordBatch(b) = data.payload {
                    batches.push(b);
                }
            }
            let report = TaskReport::from_batches(&batches).map_err(TaskError::Failed)?;
            Ok((report, stats))
        };
        // A worker that stopped answering its health checks (or was lost) may never
        // answer this call either: give up on it (dropping the call cancels the task
        // there). A draining worker finishes what it runs.
        let watch = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if worker.state() == crate::pool::WorkerState::Unhealthy {
                    return;
                }
            }
        };
        tokio::select! {
            r = call => r,
            _ = watch => Err(TaskError::Unreachable(format!("worker {} stopped answering its health checks", worker.id))),
        }
    }
}

/// Starts each stage once all the stages it reads have finished, not in waves:
/// a small stage's readers need not wait for a big sibling. The first error
/// drops (cancels) every stage still running.
pub(super) async fn in_dependency_order<F, Fut>(
    query: &str,
    stages: &[(u32, Vec<u32>)],
    start: F,
) -> Result<()>
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut done: HashSet<u32> = HashSet::new();
    let mut started: HashSet<u32> = HashSet::new();
    let mut running = futures::stream::FuturesUnordered::new();
    while done.len() < stages.len() {
        for (id, inputs) in stages {
            if inputs.iter().all(|i| done.contains(i)) && started.insert(*id) {
                let id = *id;
                running.push(start(id).map(move |r| r.map(|()| id)));
            }
        }
        match running.next().await {
            Some(finished) => {
                done.insert(finished?);
            }
            None => {
                return internal_err!("the stages of query {query} depend on each other in a cycle")
            }
        }
    }
    Ok(())
}

pub(super) fn classify(worker: &str, status: tonic::Status) -> TaskError {
    if let Some(lost) = lost_output(status.message()) {
        return TaskError::Lost(lost);
    }
    if is_unreachable(&status) {
        return TaskError::Unreachable(status.message().to_string());
    }
    TaskError::Failed(worker_error(worker, FlightError::Tonic(Box::new(status))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::in_dependency_order;

    #[tokio::test]
    async fn a_stage_starts_when_its_own_inputs_finish_not_its_siblings() {
        // Stage 1 is slow and only finishes once stage 3 has started; stage 3 reads
        // only stage 2. Running in waves (1 and 2, then 3) would never finish.
        let stage3_started = Arc::new(Notify::new());
        let deps = vec![(1, vec![]), (2, vec![]), (3, vec![2]), (4, vec![1, 3])];
        let order = parking_lot::Mutex::new(vec![]);
        let run = in_dependency_order("q", &deps, |id| {
            let stage3_started = stage3_started.clone();
            let order = &order;
            async move {
                order.lock().push(id);
                match id {
                    1 => stage3_started.notified().await,
                    3 => stage3_started.notify_one(),
                    _ => {}
                }
                Ok(())
            }
        });
        let finished = tokio::time::timeout(Duration::from_secs(5), run).await;
        assert!(matches!(finished, Ok(Ok(()))), "{finished:?}");
        let order = order.into_inner();
        assert_eq!(order.last(), Some(&4), "{order:?}");
        assert_eq!(order.len(), 4, "{order:?}");
    }

    #[tokio::test]
    async fn a_cycle_and_a_failing_stage_are_errors() {
        let cycle =
            in_dependency_order("q", &[(1, vec![2]), (2, vec![1])], |_| async { Ok(()) }).await;
        assert!(cycle.is_err_and(|e| e.to_string().contains("cycle")));
        let failing = in_dependency_order("q", &[(1, vec![]), (2, vec![1])], |id| async move {
            if id == 1 {
                datafusion::common::exec_err!("stage {id} broke")
            } else {
                panic!("stage 2 must not start after its input failed")
            }
        })
        .await;
        assert!(failing.is_err_and(|e| e.to_string().contains("stage 1 broke")));
    }
}
