//! [`Runs`]: how a distributed query's stages run for the partitions of its root,
//! streamed first and with exchange files when the streamed run fails early.
//!
//! Every partition of the root shares one run. With `exchange_mode = "stream"`,
//! the first partition to start places and starts the streamed run
//! (`streamed_run.rs`); each partition reads the root's stream while watching
//! the stages. A failure (of a stage, a stream, a root fragment) before any
//! partition has handed out a row switches the query to a run with exchange
//! files: partitions still running continue from that run, and the streamed run
//! is dropped, which cancels its tasks. After the first row, a failure is the
//! query's error. A partition that ended before the switch had no rows, and
//! hash partitioning sends it the same rows (none) in either run.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::ExecutionPlan;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, TryStreamExt};
use quiver_worker::exchange::ShuffleReadExec;

use super::root_fragments::send_fragments;
use super::scheduler::{QueryRun, Scheduler, StageReports};
use super::stages::StagePlan;
use super::worker_fragments_exec::WorkerFragmentsExec;
use crate::observe::counters::Counters;

type SharedResult<T> = Shared<BoxFuture<'static, std::result::Result<T, Arc<DataFusionError>>>>;

/// A run whose root is bound and placed.
#[derive(Clone)]
struct Started {
    root: Arc<dyn ExecutionPlan>,
    run: Arc<QueryRun>,
    /// A streamed run's stages, still running; resolves when they end.
    stages: Option<SharedResult<()>>,
}

#[derive(Default)]
struct Phase {
    /// A partition has handed out a row of the streamed run.
    yielded: bool,
    /// The streamed run failed first: every partition reads the files run.
    switched: bool,
}

/// The runs of one query, shared by the partitions of its root.
pub(super) struct Runs {
    scheduler: Arc<Scheduler>,
    root: Arc<dyn ExecutionPlan>,
    stages: Vec<StagePlan>,
    reports: HashMap<u32, StageReports>,
    files: Mutex<Option<SharedResult<Started>>>,
    streamed: Mutex<Option<SharedResult<Started>>>,
    phase: Mutex<Phase>,
    /// How the exchanges went (`EXPLAIN ANALYZE` shows it).
    pub(super) ran: Mutex<Option<String>>,
}

impl Runs {
    pub(super) fn new(
        scheduler: Arc<Scheduler>,
        root: Arc<dyn ExecutionPlan>,
        stages: Vec<StagePlan>,
        reports: HashMap<u32, StageReports>,
    ) -> Self {
        Self {
            scheduler,
            root,
            stages,
            reports,
            files: Mutex::new(None),
            streamed: Mutex::new(None),
            phase: Mutex::new(Phase::default()),
            ran: Mutex::new(None),
        }
    }

    /// Whether the query's exchanges stream (the scheduler's mode, and a hash exchange to stream).
    pub(super) fn streams(&self) -> bool {
        self.scheduler.streams(&self.stages)
    }

    /// The batches of root partition `partition`.
    pub(super) fn execute(
        self: &Arc<Self>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> SendableRecordBatchStream {
        let schema = self.root.schema();
        let runs = self.clone();
        let stream = futures::stream::once(async move {
            if runs.streams() {
                runs.streamed_partition(partition, context).await
            } else {
                *runs.ran.lock() = Some("files".into());
                runs.files_partition(partition, context).await
            }
        })
        .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }

    async fn files_partition(
        self: &Arc<Self>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let started = self
            .files_run(context.session_id())
            .await
            .map_err(DataFusionError::Shared)?;
        Ok(read(started, partition, context)?.boxed_batches())
    }

    /// Runs the stages once for all partitions with exchange files.
    fn files_run(self: &Arc<Self>, query_id: String) -> SharedResult<Started> {
        let mut files = self.files.lock();
        if let Some(f) = files.as_ref() {
            return f.clone();
        }
        let runs = self.clone();
        let fut = async move {
            let run = Arc::new(QueryRun::new(query_id, &runs.stages, runs.reports.clone()));
            runs.scheduler.run(&run).await?;
            let bound = run.bind(&runs.root)?;
            let root = send_fragments(bound, &runs.scheduler, &run)?;
            Ok(Started {
                root,
                run,
                stages: None,
            })
        }
        .map(|r: Result<Started>| r.map_err(Arc::new))
        .boxed()
        .shared();
        *files = Some(fut.clone());
        fut
    }

    /// Places the streamed stages and starts them all; resolves once the root
    /// can start (its inputs from files are done), with the stages still running.
    fn streamed_run(self: &Arc<Self>, query_id: String) -> SharedResult<Started> {
        let mut streamed = self.streamed.lock();
        if let Some(s) = streamed.as_ref() {
            return s.clone();
        }
        let runs = self.clone();
        let fut = async move {
            let scheduler = &runs.scheduler;
            let run = Arc::new(scheduler.streamed_run(
                query_id,
                &runs.stages,
                runs.reports.clone(),
                fragment_partitions(&runs.root),
            )?);
            let root_inputs = read_stages(&runs.root);
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let task = AbortOnDrop(tokio::spawn({
                let (scheduler, run) = (scheduler.clone(), run.clone());
                async move { scheduler.run_streamed(&run, &root_inputs, ready_tx).await }
            }));
            let stages = task.map(|r| r.map_err(Arc::new)).boxed().shared();
            // The root starts when the stages say so, or they end (then with their error).
            tokio::select! {
                ready = ready_rx => if ready.is_err() {
                    stages.clone().await.map_err(DataFusionError::Shared)?;
                },
                finished = stages.clone() => finished.map_err(DataFusionError::Shared)?,
            }
            let bound = run.bind(&runs.root)?;
            let root = send_fragments(bound, scheduler, &run)?;
            Ok(Started {
                root,
                run,
                stages: Some(stages),
            })
        }
        .map(|r: Result<Started>| r.map_err(Arc::new))
        .boxed()
        .shared();
        *streamed = Some(fut.clone());
        fut
    }

    /// A partition of the streamed run, switching to the files run if the
    /// streamed one fails before any partition handed out a row.
    async fn streamed_partition(
        self: &Arc<Self>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let query_id = context.session_id();
        let started = self.streamed_run(query_id.clone()).await;
        let stream = match started
            .map_err(DataFusionError::Shared)
            .and_then(|s| read(s, partition, context.clone()))
        {
            Ok(s) => s,
            Err(e) => {
                return match self.switch(&e) {
                    true => self.files_partition(partition, context).await,
                    false => Err(e),
                }
            }
        };
        let state = Switching {
            runs: self.clone(),
            streamed: Some(stream),
            files: None,
            partition,
            context,
        };
        let schema = self.root.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::unfold(state, Switching::next),
        )))
    }

    /// Whether the query moves to the files run after `cause`: only while no row
    /// of the streamed run has gone out.
    fn switch(&self, cause: &DataFusionError) -> bool {
        let mut phase = self.phase.lock();
        if phase.switched {
            return true;
        }
        if phase.yielded {
            return false;
        }
        phase.switched = true;
        tracing::warn!(error = %cause, "the streamed run failed before its first row; running the query again with exchange files");
        Counters::add(&self.scheduler.pool.counters().streamed_restarts, 1);
        *self.ran.lock() = Some(format!("files (the streamed run failed: {cause})"));
        // Dropping the streamed run cancels its tasks once no partition reads it.
        self.streamed.lock().take();
        true
    }

    /// Records a row of the streamed run going out; false if the query has switched.
    fn yield_streamed(&self) -> bool {
        let mut phase = self.phase.lock();
        if phase.switched {
            return false;
        }
        if !phase.yielded {
            phase.yielded = true;
            *self.ran.lock() = Some("streamed".into());
        }
        true
    }

    fn switched(&self) -> bool {
        self.phase.lock().switched
    }
}

/// One partition's reading state: the streamed run until it fails early, then the files run.
struct Switching {
    runs: Arc<Runs>,
    streamed: Option<Watch>,
    files: Option<SendableRecordBatchStream>,
    partition: usize,
    context: Arc<TaskContext>,
}

impl Switching {
    async fn next(mut self) -> Option<(Result<RecordBatch>, Self)> {
        loop {
            if let Some(files) = self.files.as_mut() {
                let item = files.next().await?;
                return Some((item, self));
            }
            let streamed = self.streamed.as_mut()?;
            let item = streamed.next().await;
            match item {
                Some(Ok(batch)) if self.runs.yield_streamed() => return Some((Ok(batch), self)),
                Some(Err(e)) if !self.runs.switch(&e) => {
                    self.streamed = None;
                    return Some((Err(e), self));
                }
                None if !self.runs.switched() => return None,
                // The query switched to the files run: read this partition from it.
                _ => {
                    self.streamed = None;
                    match self
                        .runs
                        .files_partition(self.partition, self.context.clone())
                        .await
                    {
                        Ok(files) => self.files = Some(files),
                        Err(e) => return Some((Err(e), self)),
                    }
                }
            }
        }
    }
}

/// Root partition `partition` of a started run, watching its stages.
fn read(started: Started, partition: usize, context: Arc<TaskContext>) -> Result<Watch> {
    let stream = started.root.execute(partition, context)?;
    Ok(Watch {
        stream,
        stages: started.stages,
        run: started.run,
    })
}

/// A root partition's stream that ends with the first error of the stages it
/// reads (a streamed run's). It holds the run: its exchange files and streams are
/// released when the last partition's stream goes.
struct Watch {
    stream: SendableRecordBatchStream,
    stages: Option<SharedResult<()>>,
    run: Arc<QueryRun>,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            let Some(stages) = self.stages.as_mut() else {
                return self.stream.next().await;
            };
            tokio::select! {
                finished = stages => {
                    self.stages = None;
                    if let Err(e) = finished {
                        return Some(Err(DataFusionError::Shared(e)));
                    }
                }
                item = self.stream.next() => {
                    if item.is_none() {
                        self.settle().await;
                    }
                    return item;
                }
            }
        }
    }

    /// The root read everything: give the stages a moment to report their closing
    /// statistics, or dropping the run would log tasks that delivered all their rows
    /// as cancelled. A stage still running after that (a join that never read its
    /// probe side) is cancelled with the run; its error no longer matters.
    async fn settle(&mut self) {
        if let Some(stages) = self.stages.take() {
            if let Ok(Err(e)) = tokio::time::timeout(SETTLE, stages).await {
                tracing::debug!(error = %e, "a stage failed after the root had read everything");
            }
        }
    }

    fn boxed_batches(self) -> SendableRecordBatchStream {
        let schema = self.stream.schema();
        let stream = futures::stream::unfold(self, |mut w| async move {
            let item = w.next().await?;
            let _ = &w.run;
            Some((item, w))
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// How long a finished root waits for its streamed stages' closing reports.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A spawned task that is aborted when dropped; it resolves to the task's result.
struct AbortOnDrop(tokio::task::JoinHandle<Result<()>>);

impl std::future::Future for AbortOnDrop {
    type Output = Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(r) => r,
            Err(e) => Err(DataFusionError::Execution(format!(
                "the query's stages stopped: {e}"
            ))),
        })
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Stages `plan` reads through exchanges.
fn read_stages(plan: &Arc<dyn ExecutionPlan>) -> Vec<u32> {
    let mut stages = vec![];
    let _ = plan.apply(|node| {
        if let Some(read) = node.as_ref().downcast_ref::<ShuffleReadExec>() {
            stages.push(read.stage());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    stages
}

/// Partitions the root runs on workers (each a fragment, a task of its own).
fn fragment_partitions(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let mut n = 0;
    let _ = plan.apply(|node| {
        if let Some(f) = node.as_ref().downcast_ref::<WorkerFragmentsExec>() {
            n += f.input.properties().partitioning.partition_count();
            return Ok(TreeNodeRecursion::Jump);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    n
}
