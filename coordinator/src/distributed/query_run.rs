//! [`QueryRun`]: the stages of one query while it runs, and where their outputs are.
//!
//! An output written to files is known once its task has finished; a streamed
//! output (`exchange_mode = "stream"`) is placed before any task starts, so its
//! readers can be bound to it while it is produced.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_flight::Action;
use bytes::Bytes;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{internal_err, Result};
use datafusion::physical_plan::ExecutionPlan;
use quiver_worker::exchange::{
    KeySummary, ShuffleLocation, ShuffleOutput, ShuffleReadExec, TaskReport, ACTION_RELEASE,
};

use super::stages::StagePlan;
use crate::pool::Worker;

/// Where one task's output is, and what it cost.
#[derive(Debug, Clone)]
pub struct TaskOutput {
    pub worker: Arc<Worker>,
    pub report: TaskReport,
    pub attempts: u32,
}

/// What `EXPLAIN ANALYZE` shows of each task of a stage.
pub type StageReports = Arc<Mutex<Vec<Option<TaskOutput>>>>;

/// Where a task of a streamed stage runs, and the key its output streams under.
#[derive(Debug, Clone)]
pub struct StreamedTask {
    pub worker: Arc<Worker>,
    pub key: String,
}

/// The stages of one query while it runs. Dropping it deletes the query's
/// exchange files and undelivered streams on every worker that held some.
pub struct QueryRun {
    pub id: String,
    /// The workers' exchange namespace of this run (`FragmentTicket::exchange_scope`),
    /// which dropping the run releases: the query id for a streamed run, the query
    /// id and `.files` for a files run, so a streamed run that is replaced by a
    /// files run never deletes the files run's outputs.
    pub scope: String,
    pub(super) stages: HashMap<u32, StagePlan>,
    pub(super) order: Vec<u32>,
    outputs: Mutex<HashMap<u32, Vec<Option<TaskOutput>>>>,
    /// One recovery at a time per stage, so concurrent readers of a lost output
    /// recompute it once.
    pub(super) recovering: HashMap<u32, tokio::sync::Mutex<()>>,
    reports: HashMap<u32, StageReports>,
    writers: Mutex<HashMap<String, Arc<Worker>>>,
    /// The streamed stages' tasks, placed before the query starts (empty when
    /// every exchange goes through files).
    pub(super) streamed: HashMap<u32, Vec<StreamedTask>>,
    /// Memory limit of each task, when the run sets its own (a streamed run
    /// divides the query's limit among all its tasks, which run at once).
    pub(super) task_memory: Option<u64>,
    /// Counts the outputs stored, for stages that wait for another's keys.
    stored: tokio::sync::watch::Sender<u64>,
}

impl QueryRun {
    pub fn new(id: String, stages: &[StagePlan], reports: HashMap<u32, StageReports>) -> Self {
        let mut run = Self::with_streams(id, stages, reports, HashMap::new());
        run.scope = format!("{}.files", run.id);
        run
    }

    /// A run whose stages in `streamed` stream their outputs from the placed tasks.
    pub fn with_streams(
        id: String,
        stages: &[StagePlan],
        reports: HashMap<u32, StageReports>,
        streamed: HashMap<u32, Vec<StreamedTask>>,
    ) -> Self {
        let writers = streamed
            .values()
            .flatten()
            .map(|t| (t.worker.id.clone(), t.worker.clone()))
            .collect();
        Self {
            streamed,
            task_memory: None,
            scope: id.clone(),
            id,
            order: stages.iter().map(|s| s.id).collect(),
            recovering: stages
                .iter()
                .map(|s| (s.id, tokio::sync::Mutex::new(())))
                .collect(),
            outputs: Mutex::new(
                stages
                    .iter()
                    .map(|s| (s.id, vec![None; s.tasks()]))
                    .collect(),
            ),
            stages: stages.iter().map(|s| (s.id, s.clone())).collect(),
            reports,
            writers: Mutex::new(writers),
            stored: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn is_streamed(&self) -> bool {
        !self.streamed.is_empty()
    }

    pub(super) fn outputs(
        &self,
    ) -> parking_lot::MutexGuard<'_, HashMap<u32, Vec<Option<TaskOutput>>>> {
        self.outputs.lock()
    }

    /// `plan` with every exchange read pointed at the current outputs of its stage.
    pub fn bind(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let outputs = self.outputs();
        plan.clone()
            .transform_up(|node| {
                let Some(read) = node.as_ref().downcast_ref::<ShuffleReadExec>() else {
                    return Ok(Transformed::no(node));
                };
                if let Some(tasks) = self.streamed.get(&read.stage()) {
                    let locations = tasks
                        .iter()
                        .map(|t| ShuffleLocation {
                            address: t.worker.address.clone(),
                            key: t.key.clone(),
                            stream: true,
                        })
                        .collect();
                    return Ok(Transformed::yes(
                        Arc::new(read.bind(locations)) as Arc<dyn ExecutionPlan>
                    ));
                }
                let Some(tasks) = outputs.get(&read.stage()) else {
                    return internal_err!("stage {} is not part of this query", read.stage());
                };
                let locations = tasks
                    .iter()
                    .enumerate()
                    .map(|(t, o)| match o {
                        Some(o) => Ok(ShuffleLocation {
                            address: o.worker.address.clone(),
                            key: o.report.key.clone(),
                            stream: false,
                        }),
                        None => internal_err!("task {t} of stage {} has no output", read.stage()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Transformed::yes(
                    Arc::new(read.bind(locations)) as Arc<dyn ExecutionPlan>
                ))
            })
            .map(|t| t.data)
    }

    pub(super) fn store(&self, stage: u32, task: usize, output: TaskOutput) -> Result<()> {
        {
            let mut w = self.writers.lock();
            w.insert(output.worker.id.clone(), output.worker.clone());
        }
        if let Some(r) = self.reports.get(&stage).map(|r| r.lock()).as_mut() {
            if let Some(slot) = r.get_mut(task) {
                *slot = Some(output.clone());
            }
        }
        let mut outputs = self.outputs();
        match outputs.get_mut(&stage).and_then(|t| t.get_mut(task)) {
            Some(slot) => *slot = Some(output),
            None => return internal_err!("stage {stage} has no task {task}"),
        }
        drop(outputs);
        self.stored.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Whether every task of `stage` has stored its output.
    fn complete(&self, stage: u32) -> bool {
        self.outputs()
            .get(&stage)
            .is_some_and(|tasks| tasks.iter().all(Option::is_some))
    }

    /// Waits, at most `within`, until every stage whose keys filter `stage` is complete.
    pub(super) async fn wait_for_keys(&self, stage: u32, within: std::time::Duration) {
        let builds = match self.stages.get(&stage) {
            Some(s) if !s.filtered_by.is_empty() => s.filtered_by.clone(),
            _ => return,
        };
        let mut stored = self.stored.subscribe();
        let waited = tokio::time::timeout(within, async {
            while !builds.iter().all(|b| self.complete(*b)) {
                if stored.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::info!(query = %self.id, stage, "a build side took too long; the stage runs without its keys");
        }
    }

    /// The condition the keys of `stage`'s complete build stages put on its rows
    /// (listing at most `max_values` keys), if any.
    pub(super) fn key_condition(
        &self,
        stage: u32,
        max_values: usize,
    ) -> Result<Option<Arc<dyn datafusion::physical_plan::PhysicalExpr>>> {
        let Some(plan) = self.stages.get(&stage) else {
            return Ok(None);
        };
        let ShuffleOutput::Hash(keys, _) = &plan.output else {
            return Ok(None);
        };
        let schema = plan.plan.schema();
        let mut conditions = vec![];
        for build in &plan.filtered_by {
            let summaries: Option<Vec<KeySummary>> = self.outputs().get(build).and_then(|tasks| {
                tasks
                    .iter()
                    .map(|t| t.as_ref()?.report.keys.clone())
                    .collect()
            });
            let Some(summary) = summaries.and_then(|s| KeySummary::merge(&s, max_values)) else {
                continue;
            };
            match super::dynamic_filters::condition(keys, &summary, &schema) {
                Ok(Some(c)) => {
                    tracing::debug!(query = %self.id, stage, build, keys = %super::dynamic_filters::describe(&summary), "stage filtered by its join's build-side keys");
                    conditions.push(c);
                }
                Ok(None) => {}
                // A key the filter cannot compare (types a join coerced): no filter, same answer.
                Err(e) => {
                    tracing::debug!(query = %self.id, stage, build, error = %e, "no dynamic filter")
                }
            }
        }
        Ok(conditions.into_iter().reduce(|a, b| {
            Arc::new(datafusion::physical_expr::expressions::BinaryExpr::new(
                a,
                datafusion::logical_expr::Operator::And,
                b,
            ))
        }))
    }

    /// How many outputs of `stage`'s inputs each worker holds.
    pub(super) fn input_share(&self, stage: u32) -> HashMap<String, usize> {
        let mut share = HashMap::new();
        let Some(plan) = self.stages.get(&stage) else {
            return share;
        };
        let outputs = self.outputs.lock();
        for input in &plan.inputs {
            for o in outputs.get(input).into_iter().flatten().flatten() {
                *share.entry(o.worker.id.clone()).or_insert(0) += 1;
            }
        }
        share
    }
}

impl Drop for QueryRun {
    fn drop(&mut self) {
        let workers: Vec<Arc<Worker>> = self.writers.lock().values().cloned().collect();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let id = self.scope.clone();
        handle.spawn(async move {
            for worker in workers {
                let action = Action { r#type: ACTION_RELEASE.into(), body: Bytes::from(id.clone()) };
                if let Err(e) = worker.client().do_action(action).await {
                    tracing::debug!(worker = %worker.id, error = %e.message(), "cannot release exchange files");
                }
            }
        });
    }
}
