//! [`RemoteFragmentExec`]: how a fragment reaches a worker and its batches come back.

use std::fmt;
use std::sync::Arc;

use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use bytes::Bytes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use quiver_proto::{FragmentStats, FragmentTicket};
use quiver_worker::exchange::{lost_output, LostOutput};
use tonic::Code;

use crate::observe::counters::Counters;
use crate::observe::fragments::{FragmentLog, LoggedAttempt};
use crate::pool::{RunningFragment, Worker, WorkerPool};

/// Runs each partition of `fragment` on a worker. The fragment is kept as this
/// node's child only so `EXPLAIN` shows what the workers run; it never executes here.
pub struct RemoteFragmentExec {
    id: u32,
    fragment: Arc<dyn ExecutionPlan>,
    /// The fragment, serialized once at planning time.
    plan_bytes: Bytes,
    /// Preferred worker of each partition.
    assignment: Vec<Arc<Worker>>,
    pool: Arc<WorkerPool>,
    /// Memory limit of each partition on its worker.
    memory_limit: u64,
    /// Where a query cut into stages records what each partition cost.
    tracking: Option<Tracking>,
    /// Recomputes a lost exchange input and returns the fragment bound to the new output.
    recover: Option<Recover>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// Why this fragment is shaped as it is, for EXPLAIN.
    note: Option<String>,
}

impl RemoteFragmentExec {
    pub fn new(
        id: u32,
        fragment: Arc<dyn ExecutionPlan>,
        plan_bytes: Bytes,
        assignment: Vec<Arc<Worker>>,
        pool: Arc<WorkerPool>,
    ) -> Self {
        let properties = fragment.properties().clone();
        let memory_limit = pool.fragment_memory_limit();
        let metrics = ExecutionPlanMetricsSet::new();
        Self {
            id,
            fragment,
            plan_bytes,
            assignment,
            pool,
            memory_limit,
            tracking: None,
            recover: None,
            properties,
            metrics,
            note: None,
        }
    }

    /// Says in EXPLAIN why the fragment is what it is.
    pub fn with_note(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }

    /// Lets a partition that finds an exchange input lost, before it sent any row,
    /// have `recover` recompute it and run again on the new output.
    pub fn with_recovery(mut self, recover: Recover) -> Self {
        self.recover = Some(recover);
        self
    }

    /// Records each partition's worker and cost in `reports` and `system.fragments` (as stage 0).
    pub fn with_tracking(mut self, reports: FragmentReports, log: Arc<FragmentLog>) -> Self {
        self.tracking = Some(Tracking { reports, log });
        self
    }

    /// Runs each partition under `limit` bytes instead of `workers.fragment_memory_limit`.
    pub fn with_memory_limit(mut self, limit: u64) -> Self {
        self.memory_limit = limit;
        self
    }

    fn ticket(&self, query_id: String, partition: usize, for_client: bool) -> FragmentTicket {
        FragmentTicket {
            query_id,
            fragment_id: self.id,
            partition: partition as u32,
            plan: self.plan_bytes.to_vec(),
            memory_limit: self.memory_limit,
            for_client,
            worker_address: String::new(),
            relay: false,
            string_views: false,
            exchange_scope: String::new(),
        }
    }

    /// Each partition as a ticket a Flight SQL client presents to a worker itself
    /// (sealed for `ttl`), with that worker's address: the assigned one, or another
    /// healthy one when it is not. None when a partition has no worker, or when
    /// the fragment reads exchange outputs, which only the coordinator can recompute.
    pub fn client_tickets(
        &self,
        query_id: &str,
        ttl: std::time::Duration,
    ) -> Option<Vec<(String, arrow_flight::Ticket)>> {
        if self.recover.is_some() {
            return None;
        }
        (0..self.assignment.len())
            .map(|p| {
                let worker = self.candidates(p).into_iter().find(|w| w.is_healthy())?;
                let ticket = worker.client_ticket(&self.ticket(query_id.to_string(), p, true), ttl);
                Some((worker.address.clone(), ticket))
            })
            .collect()
    }

    /// Partition `partition` of query `query_id` as its worker's Flight record
    /// batch messages, for the coordinator to forward to a client as they are
    /// (`crate::frontends::run`): the worker casts to client types (string views
    /// kept when `views`). Retries and recovery are those of [`ExecutionPlan::execute`].
    pub fn relay(&self, partition: usize, query_id: &str, views: bool) -> RelayFrames {
        let mut ticket = self.ticket(query_id.to_string(), partition, false);
        ticket.relay = true;
        ticket.string_views = views;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let pool = self.pool.clone();
        let frames = self.attempts(partition, ticket).filter_map(move |frame| {
            let out = match frame {
                // Only batches go on: the client has its schema from the coordinator,
                // and client types have no dictionaries.
                Ok(Frame {
                    mut data,
                    rows: Some(rows),
                }) => {
                    baseline.record_output(rows);
                    Counters::add(&pool.counters().rows_from_workers, rows as u64);
                    // The worker's statistics were read; they are not the client's.
                    data.app_metadata = Bytes::new();
                    Some(Ok(RelayFrame { data, rows }))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        });
        Box::pin(frames)
    }

    /// Partition `partition` run by its worker, or another one while none has sent a batch yet.
    fn attempts(
        &self,
        partition: usize,
        ticket: FragmentTicket,
    ) -> impl futures::Stream<Item = Result<Frame>> + Send + 'static {
        let attempts = Attempts {
            query_id: ticket.query_id.clone(),
            partition,
            tracking: self.tracking.clone(),
            logged: None,
            attempt: 0,
            stats: Arc::new(parking_lot::Mutex::new(None)),
            recorded: false,
            rows: 0,
            pool: self.pool.clone(),
            candidates: self.candidates(partition).into(),
            ticket,
            recover: self.recover.clone(),
            recoveries: 0,
            current: None,
            yielded: false,
            last_error: None,
        };
        futures::stream::unfold(Some(attempts), |state| async move {
            let mut attempts = state?;
            let item = attempts.next().await?;
            // After an error the stream ends.
            let next = item.is_ok().then_some(attempts);
            Some((item, next))
        })
    }

    /// Workers to try for `partition`: the assigned one, then the other healthy ones.
    fn candidates(&self, partition: usize) -> Vec<Arc<Worker>> {
        let mut out: Vec<Arc<Worker>> = self
            .assignment
            .get(partition)
            .cloned()
            .into_iter()
            .collect();
        for w in self.pool.healthy() {
            if !out.iter().any(|o| Arc::ptr_eq(o, &w)) {
                out.push(w);
            }
        }
        out
    }
}

impl fmt::Debug for RemoteFragmentExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteFragmentExec")
            .field("id", &self.id)
            .finish()
    }
}

impl DisplayAs for RemoteFragmentExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RemoteFragmentExec: fragment={}, partitions={}, workers=[",
            self.id,
            self.assignment.len()
        )?;
        for (i, w) in self.assignment.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}p{i}@{}", w.id)?;
        }
        write!(f, "]")?;
        match &self.note {
            Some(note) => write!(f, ", {note}"),
            None => Ok(()),
        }
    }
}

impl ExecutionPlan for RemoteFragmentExec {
    fn name(&self) -> &str {
        "RemoteFragmentExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.fragment]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The serialized bytes are what runs, so a changed child cannot be accepted silently.
        match children.as_slice() {
            [child] if Arc::ptr_eq(child, &self.fragment) => Ok(self),
            _ => internal_err!(
                "RemoteFragmentExec {} cannot take new children after it is serialized",
                self.id
            ),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let ticket = self.ticket(context.session_id(), partition, false);
        let schema = self.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let pool = self.pool.clone();
        // A worker's data: decoded without copies or re-validation. A retry on
        // another worker starts with its schema message, which resets the decoder.
        let mut decoder = quiver_worker::peer_data::PeerDecoder::new();
        let plan_schema = schema.clone();
        let batches = self.attempts(partition, ticket).filter_map(move |frame| {
            let batch = frame.and_then(|f| {
                decoder
                    .decode(&f.data)
                    .map_err(DataFusionError::from)?
                    // Normalize metadata so batches match the plan's schema exactly.
                    .map(|b| b.with_schema(plan_schema.clone()))
                    .transpose()
                    .map_err(DataFusionError::from)
            });
            futures::future::ready(batch.transpose())
        });
        let batches = batches.inspect_ok(move |b| {
            baseline.record_output(b.num_rows());
            Counters::add(&pool.counters().rows_from_workers, b.num_rows() as u64);
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

type FlightFrames =
    futures::stream::BoxStream<'static, std::result::Result<FlightData, FlightError>>;

/// One message of a fragment's Flight stream as its worker sent it.
struct Frame {
    data: FlightData,
    /// The rows of a record batch message; None for any other message.
    rows: Option<usize>,
}

/// A record batch message relayed from a worker, with its row count.
#[derive(Clone)]
pub struct RelayFrame {
    pub data: FlightData,
    pub rows: usize,
}

/// What [`RemoteFragmentExec::relay`] returns.
pub type RelayFrames = futures::stream::BoxStream<'static, Result<RelayFrame>>;

/// Runs one partition on the first candidate that can, moving on to the next one
/// while the worker is unreachable, or dies, before any batch has come back:
/// nothing has been passed on yet, so the retry cannot duplicate rows.
/// Recomputes a lost exchange output; returns the fragment's plan bound to its replacement.
pub type Recover =
    Arc<dyn Fn(LostOutput) -> futures::future::BoxFuture<'static, Result<Bytes>> + Send + Sync>;

/// Times one partition may have its inputs recomputed before the query fails.
const MAX_RECOVERIES: u32 = 3;

/// What a finished fragment of the root cost, for `EXPLAIN ANALYZE`.
#[derive(Debug, Clone)]
pub struct FragmentReport {
    pub worker: String,
    pub stats: FragmentStats,
    pub attempts: u32,
}

/// One slot per partition.
pub type FragmentReports = Arc<parking_lot::Mutex<Vec<Option<FragmentReport>>>>;

#[derive(Clone)]
struct Tracking {
    reports: FragmentReports,
    log: Arc<FragmentLog>,
}

struct Attempts {
    query_id: String,
    partition: usize,
    tracking: Option<Tracking>,
    logged: Option<LoggedAttempt>,
    attempt: u32,
    /// The worker's closing statistics, once its stream sends them.
    stats: Arc<parking_lot::Mutex<Option<FragmentStats>>>,
    /// The attempt's cost is recorded (at its last batch or at its end).
    recorded: bool,
    rows: u64,
    pool: Arc<WorkerPool>,
    candidates: std::collections::VecDeque<Arc<Worker>>,
    ticket: FragmentTicket,
    recover: Option<Recover>,
    recoveries: u32,
    current: Option<(FlightFrames, Arc<Worker>, RunningFragment)>,
    yielded: bool,
    last_error: Option<String>,
}

impl Attempts {
    async fn next(&mut self) -> Option<Result<Frame>> {
        loop {
            let Some((frames, worker, _running)) = &mut self.current else {
                match self.open().await {
                    Ok(()) => continue,
                    Err(e) => return Some(Err(e)),
                }
            };
            match frames.next().await {
                None => {
                    let worker = worker.id.clone();
                    self.finished(&worker);
                    return None;
                }
                Some(Ok(data)) => {
                    let wire = data.data_header.len() + data.data_body.len();
                    Counters::add(&self.pool.counters().wire_bytes_from_workers, wire as u64);
                    // The fragment's last message carries what it cost.
                    if !data.app_metadata.is_empty() {
                        if let Ok(stats) = FragmentStats::decode_from(&data.app_metadata) {
                            *self.stats.lock() = Some(stats);
                        }
                    }
                    let rows = match quiver_worker::peer_data::batch_rows(&data) {
                        Ok(rows) => rows,
                        Err(e) => return Some(Err(worker_error(&worker.id, e.into()))),
                    };
                    if let Some(rows) = rows {
                        self.yielded = true;
                        self.rows += rows as u64;
                        // The last batch carries the statistics: record them now, the
                        // reader may stop here (a merge with a LIMIT).
                        if self.stats.lock().is_some() {
                            let worker = worker.id.clone();
                            self.finished(&worker);
                        }
                    }
                    return Some(Ok(Frame { data, rows }));
                }
                Some(Err(FlightError::Tonic(status)))
                    if !self.yielded
                        && self.recover.is_some()
                        && lost_output(status.message()).is_some() =>
                {
                    let (Some(recover), Some(lost)) =
                        (self.recover.clone(), lost_output(status.message()))
                    else {
                        continue;
                    };
                    if self.recoveries >= MAX_RECOVERIES {
                        return Some(Err(worker_error(&worker.id, FlightError::Tonic(status))));
                    }
                    self.recoveries += 1;
                    tracing::warn!(worker = %worker.id, lost = %lost, "a fragment's exchange input is lost; recomputing it");
                    Counters::add(&self.pool.counters().fragment_retries, 1);
                    if let Some(l) = self.logged.take() {
                        l.end("retried", 0, 0, 0, Some(lost.to_string()));
                    }
                    self.current = None;
                    match recover(lost).await {
                        Ok(plan) => {
                            self.ticket.plan = plan.to_vec();
                            self.candidates = self.pool.healthy().into();
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
                Some(Err(FlightError::Tonic(status)))
                    if !self.yielded && is_unreachable(&status) =>
                {
                    tracing::warn!(worker = %worker.id, error = %status.message(), "worker lost before its first batch; trying another");
                    worker.set_healthy(false);
                    Counters::add(&self.pool.counters().fragment_retries, 1);
                    self.last_error = Some(status.message().to_string());
                    if let Some(l) = self.logged.take() {
                        l.end("retried", 0, 0, 0, self.last_error.clone());
                    }
                    self.current = None;
                }
                Some(Err(e)) => {
                    let err = worker_error(&worker.id, e);
                    if let Some(l) = self.logged.take() {
                        l.end("failed", self.rows, 0, 0, Some(err.to_string()));
                    }
                    return Some(Err(err));
                }
            }
        }
    }

    /// The stream ended, or sent its statistics: record what it cost (once).
    fn finished(&mut self, worker: &str) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let stats = self.stats.lock().take().unwrap_or(FragmentStats {
            rows: self.rows,
            ..Default::default()
        });
        if let Some(l) = self.logged.take() {
            l.cost(&stats);
            l.end(
                "finished",
                stats.rows,
                stats.bytes,
                stats.spilled_bytes,
                None,
            );
        }
        if let Some(t) = &self.tracking {
            {
                let mut r = t.reports.lock();
                if let Some(slot) = r.get_mut(self.partition) {
                    *slot = Some(FragmentReport {
                        worker: worker.to_string(),
                        stats,
                        attempts: self.attempt,
                    });
                }
            }
        }
    }

    /// Starts the fragment on the next candidate that accepts it.
    async fn open(&mut self) -> Result<()> {
        while let Some(worker) = self.candidates.pop_front() {
            let mut client = worker.client();
            match client.do_get(worker.ticket(&self.ticket)).await {
                Ok(response) => {
                    let running = worker.track_fragment();
                    Counters::add(&self.pool.counters().fragments, 1);
                    self.attempt += 1;
                    self.recorded = false;
                    if let Some(t) = &self.tracking {
                        let task = self.partition as u32;
                        self.logged =
                            Some(
                                t.log
                                    .begin(&self.query_id, 0, task, self.attempt, &worker.id),
                            );
                    }
                    let frames = response
                        .into_inner()
                        .map_err(|s| FlightError::Tonic(Box::new(s)));
                    self.current = Some((frames.boxed(), worker, running));
                    return Ok(());
                }
                Err(status) if is_unreachable(&status) => {
                    tracing::warn!(worker = %worker.id, error = %status.message(), "worker unreachable; trying another");
                    worker.set_healthy(false);
                    Counters::add(&self.pool.counters().fragment_retries, 1);
                    self.last_error = Some(status.message().to_string());
                }
                Err(status) => {
                    return Err(worker_error(
                        &worker.id,
                        FlightError::Tonic(Box::new(status)),
                    ))
                }
            }
        }
        Err(DataFusionError::Execution(match &self.last_error {
            Some(e) => format!("no worker could run the fragment; last error: {e}"),
            None => "no healthy worker to run the fragment".to_string(),
        }))
    }
}

/// A connection failure (the worker is gone), as opposed to an error the worker returned.
pub(super) fn is_unreachable(status: &tonic::Status) -> bool {
    match status.code() {
        // Nothing here cancels a call it still reads, so a cancelled stream means the
        // worker went away mid-answer (h2 resets it with CANCEL when the process dies).
        Code::Unavailable | Code::Cancelled => true,
        // tonic reports connections that failed or broke (a killed worker) as Unknown
        // or Internal, with the transport's message.
        Code::Unknown | Code::Internal => {
            quiver_worker::status::is_transport_failure(status.message())
        }
        _ => false,
    }
}

/// A worker's error, keeping its gRPC status so the client sees the original message and code.
pub(super) fn worker_error(worker: &str, e: FlightError) -> DataFusionError {
    match e {
        FlightError::Tonic(status) => {
            tracing::debug!(worker, error = %status.message(), "fragment failed on worker");
            let kind = quiver_worker::status::kind_of(&status);
            let status = quiver_worker::status::tagged(
                tonic::Status::new(status.code(), status.message().to_string()),
                kind,
            );
            DataFusionError::External(Box::new(status))
        }
        other => DataFusionError::External(Box::new(other)),
    }
}
