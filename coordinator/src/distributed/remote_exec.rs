//! [`RemoteFragmentExec`]: how a fragment reaches a worker and its batches come back.

use std::fmt;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::Ticket;
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
use quiver_proto::FragmentTicket;
use tonic::Code;

use crate::pool::{Worker, WorkerPool};

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
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
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
        Self { id, fragment, plan_bytes, assignment, pool, properties, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// Workers to try for `partition`: the assigned one, then the other healthy ones.
    fn candidates(&self, partition: usize) -> Vec<Arc<Worker>> {
        let mut out: Vec<Arc<Worker>> = self.assignment.get(partition).cloned().into_iter().collect();
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
        f.debug_struct("RemoteFragmentExec").field("id", &self.id).finish()
    }
}

impl DisplayAs for RemoteFragmentExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RemoteFragmentExec: fragment={}, partitions={}, workers=[", self.id, self.assignment.len())?;
        for (i, w) in self.assignment.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}p{i}@{}", w.id)?;
        }
        write!(f, "]")
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
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        // The serialized bytes are what runs, so a changed child cannot be accepted silently.
        match children.as_slice() {
            [child] if Arc::ptr_eq(child, &self.fragment) => Ok(self),
            _ => internal_err!("RemoteFragmentExec {} cannot take new children after it is serialized", self.id),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let ticket = FragmentTicket {
            query_id: context.session_id(),
            fragment_id: self.id,
            partition: partition as u32,
            plan: self.plan_bytes.to_vec(),
            memory_limit: self.pool.fragment_memory_limit(),
        };
        let candidates = self.candidates(partition);
        let schema = self.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let open = open_fragment(candidates, Bytes::from(prost::Message::encode_to_vec(&ticket)), schema.clone());
        let stream = futures::stream::once(open).try_flatten().inspect_ok(move |b| baseline.record_output(b.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Starts the fragment on the first candidate that accepts it. A worker that cannot
/// be reached is marked unhealthy and the next one is tried; nothing has been
/// read from it yet, so the retry cannot duplicate rows.
async fn open_fragment(
    candidates: Vec<Arc<Worker>>,
    ticket: Bytes,
    schema: datafusion::arrow::datatypes::SchemaRef,
) -> Result<impl futures::Stream<Item = Result<datafusion::arrow::record_batch::RecordBatch>>> {
    let mut last_error = None;
    for worker in candidates {
        let mut client = worker.client();
        match client.do_get(Ticket { ticket: ticket.clone() }).await {
            Ok(response) => {
                let guard = worker.track_fragment();
                let worker_id = worker.id.clone();
                let schema = schema.clone();
                let flight = FlightRecordBatchStream::new_from_flight_data(
                    response.into_inner().map_err(|s| FlightError::Tonic(Box::new(s))),
                );
                return Ok(flight.map(move |item| {
                    let _running = &guard;
                    match item {
                        // Normalize metadata so batches match the plan's schema exactly.
                        Ok(batch) => batch.with_schema(schema.clone()).map_err(DataFusionError::from),
                        Err(e) => Err(worker_error(&worker_id, e)),
                    }
                }));
            }
            Err(status) if is_unreachable(&status) => {
                tracing::warn!(worker = %worker.id, error = %status.message(), "worker unreachable; trying another");
                worker.set_healthy(false);
                last_error = Some(status);
            }
            Err(status) => return Err(worker_error(&worker.id, FlightError::Tonic(Box::new(status)))),
        }
    }
    Err(DataFusionError::Execution(match last_error {
        Some(s) => format!("no worker could run the fragment; last error: {}", s.message()),
        None => "no healthy worker to run the fragment".to_string(),
    }))
}

/// A connection failure (the worker is gone), as opposed to an error the worker returned.
fn is_unreachable(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        // tonic reports some connection failures as Unknown with a transport message.
        Code::Unknown => status.message().contains("transport") || status.message().contains("connect"),
        _ => false,
    }
}

/// A worker's error, keeping its gRPC status so the client sees the original message and code.
fn worker_error(worker: &str, e: FlightError) -> DataFusionError {
    match e {
        FlightError::Tonic(status) => {
            tracing::debug!(worker, error = %status.message(), "fragment failed on worker");
            DataFusionError::External(Box::new(tonic::Status::new(status.code(), status.message().to_string())))
        }
        other => DataFusionError::External(Box::new(other)),
    }
}
