//! Streamed runs (`workers.exchange_mode = "stream"`): every stage of a query
//! runs at once, and a hash exchange passes each partition from producer to
//! consumer while both run, with no file between (`quiver_worker::exchange`'s
//! streams). What a stream delivered is not kept, so there is nothing to retry a
//! single task from: when anything fails before the query's first row reaches
//! its reader, `distributed_query_exec.rs` runs the query again with exchange
//! files, whose lost outputs the scheduler recomputes one by one.
//!
//! - **Placement**: the tasks of streamed stages are spread over the healthy
//!   workers, least loaded first, before any starts, so their readers can be
//!   bound to them. All tasks start at once: a producer waits for its reader (a
//!   full channel), so a task left waiting for a free slot could hold up the
//!   query forever. `max_fragments_per_worker` bounds file-mode tasks only.
//! - **Order**: a stage starts once the stages it reads *from files* (gathers and
//!   broadcasts, which have many readers) have finished; streamed inputs start
//!   with it. The root starts once its own file inputs are ready.
//! - **Memory**: the query's limit is divided among all its tasks.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{exec_err, Result};
use datafusion::error::DataFusionError;
use futures::FutureExt;
use quiver_worker::exchange::{stream_key, ShuffleOutput};

use super::query_run::{QueryRun, StreamedTask, TaskOutput};
use super::scheduler::{in_dependency_order, Scheduler, TaskError};
use super::stages::StagePlan;
use crate::config::ExchangeMode;
use crate::observe::counters::Counters;

/// The root, in the dependency order of a streamed run's stages.
const ROOT: u32 = u32::MAX;

impl Scheduler {
    /// Whether this query's exchanges stream: the mode asks for it and a hash
    /// exchange exists (gathers and broadcasts always go through files).
    pub(super) fn streams(&self, stages: &[StagePlan]) -> bool {
        self.settings.exchange_mode == ExchangeMode::Stream
            && stages.iter().any(|s| streamable(&s.output))
    }

    /// A run of `stages` whose hash exchanges stream, their tasks placed now.
    /// `root_tasks` is how many fragments the root will run, for the memory split.
    pub(super) fn streamed_run(
        &self,
        query: String,
        stages: &[StagePlan],
        reports: HashMap<u32, super::scheduler::StageReports>,
        root_tasks: usize,
    ) -> Result<QueryRun> {
        let mut workers = self.pool.healthy();
        if workers.is_empty() {
            return exec_err!(
                "no healthy worker to run the query's stages ({} known)",
                self.pool.all().len()
            );
        }
        workers.sort_by_key(|w| w.running_fragments());
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let mut next = 0usize;
        let mut streamed = HashMap::new();
        for stage in stages.iter().filter(|s| streamable(&s.output)) {
            let tasks = (0..stage.tasks())
                .map(|t| {
                    let worker = workers[next % workers.len()].clone();
                    next += 1;
                    StreamedTask {
                        worker,
                        key: stream_key(&query, &run_id[..12], stage.id, t),
                    }
                })
                .collect();
            streamed.insert(stage.id, tasks);
        }
        let tasks = stages.iter().map(StagePlan::tasks).sum::<usize>() + root_tasks;
        let mut run = QueryRun::with_streams(query, stages, reports, streamed);
        run.task_memory = Some(self.task_memory_for(tasks));
        Ok(run)
    }

    /// Runs every stage of a streamed `run`. `root_ready` is sent once the stages
    /// the root reads from files (`root_inputs` minus the streamed ones) are done;
    /// the root must then start reading, or the streams it reads never drain.
    pub(super) async fn run_streamed(
        &self,
        run: &Arc<QueryRun>,
        root_inputs: &[u32],
        root_ready: tokio::sync::oneshot::Sender<()>,
    ) -> Result<()> {
        let from_files = |inputs: &[u32]| -> Vec<u32> {
            inputs
                .iter()
                .filter(|i| !run.streamed.contains_key(i))
                .copied()
                .collect()
        };
        let mut deps: Vec<(u32, Vec<u32>)> = run
            .order
            .iter()
            .map(|id| {
                let inputs = run.stages.get(id).map(|s| s.inputs.as_slice());
                (*id, from_files(inputs.unwrap_or_default()))
            })
            .collect();
        deps.push((ROOT, from_files(root_inputs)));
        let root_ready = Mutex::new(Some(root_ready));
        in_dependency_order(&run.id, &deps, |id| {
            let root_ready = &root_ready;
            async move {
                if id == ROOT {
                    if let Some(tx) = root_ready.lock().take() {
                        let _ = tx.send(());
                    }
                    return Ok(());
                }
                self.run_streamed_stage(run, id).await
            }
        })
        .await
    }

    async fn run_streamed_stage(&self, run: &Arc<QueryRun>, stage: u32) -> Result<()> {
        run.wait_for_keys(stage, super::dynamic_filters::SUMMARY_WAIT)
            .await;
        let tasks = run.stages.get(&stage).map(|s| s.tasks()).unwrap_or(0);
        Counters::add(&self.pool.counters().stages, 1);
        tracing::debug!(query = %run.id, stage, tasks, streamed = run.streamed.contains_key(&stage), "stage starts");
        // A file stage's plan is the same for every task; a streamed one names each task's key.
        let plans = match run.streamed.contains_key(&stage) {
            true => self.encode_streamed(run, stage)?,
            false => vec![self.encode(run, stage)?; tasks],
        };
        futures::future::try_join_all(
            plans
                .into_iter()
                .enumerate()
                .map(|(task, plan)| self.run_streamed_task(run, stage, task, plan).boxed()),
        )
        .await?;
        Ok(())
    }

    /// Runs one task once: a streamed run has no retries of its own.
    async fn run_streamed_task(
        &self,
        run: &Arc<QueryRun>,
        stage: u32,
        task: usize,
        plan: bytes::Bytes,
    ) -> Result<()> {
        let placed = run.streamed.get(&stage).and_then(|t| t.get(task));
        let (worker, running) = match placed {
            Some(t) => (t.worker.clone(), t.worker.track_fragment()),
            None => self.place(run, stage, &[], "", false).await?,
        };
        let logged = self.log.begin(&run.id, stage, task as u32, 1, &worker.id);
        let result = self.execute(run, stage, task, &worker, plan).await;
        drop(running);
        match result {
            Ok((report, stats)) => {
                let output = TaskOutput {
                    worker,
                    report,
                    attempts: 1,
                };
                self.finished(run, stage, task, logged, output, stats)
            }
            Err(TaskError::Unreachable(message)) => {
                logged.end("retried", 0, 0, 0, Some(message.clone()));
                worker.set_healthy(false);
                Counters::add(&self.pool.counters().fragment_retries, 1);
                exec_err!(
                    "streamed exchange broken: worker {} was lost ({message})",
                    worker.id
                )
            }
            Err(TaskError::Lost(lost)) => {
                logged.end("retried", 0, 0, 0, Some(lost.to_string()));
                Counters::add(&self.pool.counters().fragment_retries, 1);
                Err(DataFusionError::External(Box::new(lost)))
            }
            Err(TaskError::Failed(e)) => {
                logged.end("failed", 0, 0, 0, Some(e.to_string()));
                Err(e)
            }
        }
    }
}

/// A hash exchange has one reader per partition, the one thing a stream can serve.
fn streamable(output: &ShuffleOutput) -> bool {
    matches!(output, ShuffleOutput::Hash(..))
}
