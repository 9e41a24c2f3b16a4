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
use quiver_worker::exchange::{ShuffleLocation, ShuffleReadExec, TaskReport, ACTION_RELEASE};

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
}

impl QueryRun {
    pub fn new(id: String, stages: &[StagePlan], reports: HashMap<u32, StageReports>) -> Self {
        Self::with_streams(id, stages, reports, HashMap::new())
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
        Ok(())
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
        let id = self.id.clone();
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
