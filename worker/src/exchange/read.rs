//! [`ShuffleReadExec`]: the consuming end of an exchange.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow_flight::Ticket;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tonic::transport::{Channel, Endpoint};

use crate::cluster_auth::{ClusterCredentials, WorkerClient};
use crate::peer_data::PeerDecoder;

use super::store::{store, SHUFFLE_TICKET_PREFIX};
use super::stream::{streams, STREAM_TICKET_PREFIX};

/// Where one producer task of a stage left its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShuffleLocation {
    /// Flight address of the worker that holds it.
    pub address: String,
    /// Its key in that worker's exchange store (or its streams).
    pub key: String,
    /// A streamed output: read once, while its producer runs.
    pub stream: bool,
}

/// Reads partition `p` of a stage's output: the rows every producer task wrote
/// for `p`. Locations are filled in by the coordinator once the stage has run.
pub struct ShuffleReadExec {
    stage: u32,
    schema: SchemaRef,
    /// Hash partitioning for a shuffle (joins above check that their sides are
    /// co-partitioned), unknown for a single partition.
    partitioning: Partitioning,
    locations: Vec<ShuffleLocation>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleReadExec {
    pub fn new(stage: u32, schema: SchemaRef, partitioning: Partitioning) -> Self {
        Self::with_locations(stage, schema, partitioning, vec![])
    }

    pub fn with_locations(
        stage: u32,
        schema: SchemaRef,
        partitioning: Partitioning,
        locations: Vec<ShuffleLocation>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            partitioning.clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            stage,
            schema,
            partitioning,
            locations,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn stage(&self) -> u32 {
        self.stage
    }

    pub fn partitioning(&self) -> &Partitioning {
        &self.partitioning
    }

    pub fn partitions(&self) -> usize {
        self.partitioning.partition_count()
    }

    pub fn locations(&self) -> &[ShuffleLocation] {
        &self.locations
    }

    /// The same reader, reading from `locations`.
    pub fn bind(&self, locations: Vec<ShuffleLocation>) -> Self {
        Self::with_locations(
            self.stage,
            self.schema.clone(),
            self.partitioning.clone(),
            locations,
        )
    }
}

impl fmt::Debug for ShuffleReadExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShuffleReadExec")
            .field("stage", &self.stage)
            .finish()
    }
}

impl DisplayAs for ShuffleReadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShuffleReadExec: stage={}, partitions={}",
            self.stage,
            self.partitions()
        )?;
        if !self.locations.is_empty() {
            write!(f, ", inputs={}", self.locations.len())?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ShuffleReadExec {
    fn name(&self) -> &str {
        "ShuffleReadExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
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
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "ShuffleReadExec is a leaf".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // No locations: the stage had no tasks (an empty input), so no rows.
        let credentials: ClusterCredentials = context
            .session_config()
            .get_extension::<ClusterCredentials>()
            .map(|c| (*c).clone())
            .unwrap_or_default();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let fetched = MetricBuilder::new(&self.metrics).counter("fetched_bytes", partition);
        let streams = self.locations.iter().map(|loc| {
            let lost = LostOutput {
                stage: self.stage,
                key: loc.key.clone(),
                address: loc.address.clone(),
                cause: String::new(),
            };
            open(loc, partition, self.schema.clone(), &credentials)
                .map_err(move |e| match e {
                    Failure::Lost(cause) => DataFusionError::External(Box::new(LostOutput {
                        cause,
                        ..lost.clone()
                    })),
                    Failure::Producer(message) => DataFusionError::Execution(message),
                })
                .boxed()
        });
        // Producers are read concurrently: a slow one does not hold up the rest.
        let merged = futures::stream::select_all(streams).inspect_ok(move |b| {
            baseline.record_output(b.num_rows());
            fetched.add(b.get_array_memory_size());
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            merged,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Why reading one producer's output failed.
enum Failure {
    /// The output cannot be read (its worker is gone, its file or stream lost):
    /// the coordinator recomputes it.
    Lost(String),
    /// The producer of a streamed output failed: its error is the query's.
    Producer(String),
}

type Batches = BoxStream<'static, std::result::Result<RecordBatch, Failure>>;

/// The batches of partition `partition` of one producer's output: from this
/// process (the stream's channel, or the file) when it holds it, else from the
/// worker that does.
fn open(
    loc: &ShuffleLocation,
    partition: usize,
    schema: SchemaRef,
    credentials: &ClusterCredentials,
) -> Batches {
    if loc.stream {
        let ticket = format!("{STREAM_TICKET_PREFIX}{}:{partition}", loc.key);
        return if streams().is_local(&loc.address) {
            read_channel(&loc.key, partition, schema)
        } else {
            fetch(loc.clone(), ticket, schema, credentials.clone(), true)
        };
    }
    match store()
        .partition_path(&loc.key, partition)
        .filter(|p| p.exists())
    {
        Some(path) => read_file(path, schema),
        None => {
            let ticket = format!("{SHUFFLE_TICKET_PREFIX}{}:{partition}", loc.key);
            fetch(loc.clone(), ticket, schema, credentials.clone(), false)
        }
    }
}

/// A streamed partition produced in this process: its channel, batches as they are.
fn read_channel(key: &str, partition: usize, schema: SchemaRef) -> Batches {
    match streams().receiver(key, partition) {
        Ok(rx) => tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(move |item| match item {
                Ok(b) => b
                    .with_schema(schema.clone())
                    .map_err(|e| Failure::Producer(e.to_string())),
                Err(message) => Err(Failure::Producer(message)),
            })
            .boxed(),
        Err(taken) => {
            futures::stream::once(async move { Err(Failure::Lost(taken.to_string())) }).boxed()
        }
    }
}

fn read_file(path: PathBuf, schema: SchemaRef) -> Batches {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    tokio::task::spawn_blocking(move || {
        let reader = match File::open(&path)
            .map_err(DataFusionError::from)
            .and_then(|f| {
                StreamReader::try_new(BufReader::new(f), None).map_err(DataFusionError::from)
            }) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        for batch in reader {
            let batch = batch
                .and_then(|b| b.with_schema(schema.clone()))
                .map_err(DataFusionError::from);
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .map_err(|e| Failure::Lost(e.to_string()))
        .boxed()
}

/// Reads a partition from the worker that holds it. For a stream, an `Internal`
/// status is the producer's own failure; anything else means the stream is lost.
fn fetch(
    loc: ShuffleLocation,
    ticket: String,
    schema: SchemaRef,
    credentials: ClusterCredentials,
    stream: bool,
) -> Batches {
    // tonic also reports a broken connection as Internal, with the transport's words.
    let classify = move |s: &tonic::Status| {
        if stream
            && s.code() == tonic::Code::Internal
            && !crate::status::is_transport_failure(s.message())
        {
            Failure::Producer(s.message().to_string())
        } else {
            Failure::Lost(s.message().to_string())
        }
    };
    let ticket = credentials.seal(ticket.into_bytes());
    futures::stream::once(async move {
        let mut client =
            client(&loc.address, credentials).map_err(|e| Failure::Lost(e.to_string()))?;
        let response = client
            .do_get(Ticket { ticket })
            .await
            .map_err(|s| classify(&s))?;
        // A peer's data: decoded without copies or re-validation (peer_data.rs).
        let mut decoder = PeerDecoder::new();
        Ok::<_, Failure>(response.into_inner().filter_map(move |data| {
            let item = match data {
                Ok(data) => match decoder.decode(&data) {
                    Ok(Some(b)) => Some(
                        b.with_schema(schema.clone())
                            .map_err(|e| Failure::Lost(e.to_string())),
                    ),
                    Ok(None) => None,
                    Err(e) => Some(Err(Failure::Lost(e.to_string()))),
                },
                Err(s) => Some(Err(classify(&s))),
            };
            futures::future::ready(item)
        }))
    })
    .try_flatten()
    .boxed()
}

/// HTTP/2 flow-control windows of exchange reads: per stream, and per connection.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 1 << 30;

/// A client to the worker at `address`. Connections are shared by all reads of this
/// process; the credentials are the reading task's own.
fn client(address: &str, credentials: ClusterCredentials) -> Result<WorkerClient> {
    static CHANNELS: OnceLock<Mutex<HashMap<String, Channel>>> = OnceLock::new();
    let channels = CHANNELS.get_or_init(Default::default);
    let mut channels = channels.lock();
    let channel = match channels.get(address) {
        Some(c) => c.clone(),
        None => {
            let channel = Endpoint::from_shared(address.to_string())
                .map_err(|e| {
                    DataFusionError::Execution(format!("invalid worker address {address}: {e}"))
                })?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                // All reads from one worker share this connection, and a consumer
                // may stop reading a stream it opened (a join's probe side, held
                // back while its output waits for a reader). HTTP/2 counts what such
                // a stream received against the connection's window too: at the
                // default 5 MiB a few of them stalled every other stream on the
                // connection, including the one the consumer waited for (TPC-H q18 at
                // SF10 hung, every task idle). A stream still holds at most its own
                // window; the connection's is large enough never to run out first.
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .connect_lazy();
            channels.insert(address.to_string(), channel.clone());
            channel
        }
    };
    Ok(crate::cluster_auth::client_over(channel, credentials))
}

/// A producer's output could not be read: its worker is gone, or it lost the files.
/// The coordinator recognizes this error (by [`lost_output`]) and recomputes the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostOutput {
    pub stage: u32,
    pub key: String,
    pub address: String,
    pub cause: String,
}

const LOST_PREFIX: &str = "lost exchange output ";

impl fmt::Display for LostOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{LOST_PREFIX}{} of stage {} on {}: {}",
            self.key, self.stage, self.address, self.cause
        )
    }
}

impl std::error::Error for LostOutput {}

/// Finds a [`LostOutput`] in an error message that crossed processes as text.
pub fn lost_output(message: &str) -> Option<LostOutput> {
    let rest = &message[message.find(LOST_PREFIX)? + LOST_PREFIX.len()..];
    let (key, rest) = rest.split_once(" of stage ")?;
    let (stage, rest) = rest.split_once(" on ")?;
    let (address, cause) = rest.split_once(": ").unwrap_or((rest, ""));
    Some(LostOutput {
        stage: stage.parse().ok()?,
        key: key.into(),
        address: address.into(),
        cause: cause.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// Streams a reader opened and stopped reading (a join's probe side held back)
    /// do not stall the other streams from the same worker, which share one HTTP/2
    /// connection: with the default windows three of them took the whole
    /// connection window and the fourth stream never got a byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_left_unread_do_not_stall_their_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let service = crate::service::WorkerService::new(
            crate::executor::WorkerOptions::default(),
            quiver_proto::QuiverCodec::new(),
        )
        .expect("service");
        tokio::spawn(crate::service::serve(
            listener,
            service,
            futures::future::pending(),
        ));
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        // 1 MiB batches, 16 per partition: far more than a stream's window.
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..131_072)) as ArrayRef],
        )
        .expect("batch");
        let key = format!("window-test-{}", std::process::id());
        for p in 0..4 {
            let tx = streams().sender(&key, p).expect("sender");
            let batch = batch.clone();
            tokio::spawn(async move {
                for _ in 0..16 {
                    if tx.send(Ok(batch.clone())).await.is_err() {
                        return;
                    }
                }
            });
        }
        let loc = ShuffleLocation {
            address,
            key,
            stream: true,
        };
        let credentials = ClusterCredentials::default();
        let mut held = vec![];
        for p in 0..3 {
            let mut s = open(&loc, p, schema.clone(), &credentials);
            assert!(s.next().await.expect("a batch").is_ok());
            held.push(s);
        }
        // Let the held streams fill whatever window they are given.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let last = open(&loc, 3, schema.clone(), &credentials);
        let read = tokio::time::timeout(Duration::from_secs(20), last.try_collect::<Vec<_>>())
            .await
            .expect("the fourth stream stalled behind the unread ones")
            .unwrap_or_else(|_| panic!("the fourth stream failed"));
        assert_eq!(
            read.iter().map(|b| b.num_rows()).sum::<usize>(),
            16 * 131_072
        );
        drop(held);
    }

    #[test]
    fn lost_outputs_survive_being_text() {
        let lost = LostOutput {
            stage: 3,
            key: "q/abc".into(),
            address: "http://10.0.0.2:50061".into(),
            cause: "transport error: x".into(),
        };
        let message = format!("Execution error: External error: {lost}");
        assert_eq!(lost_output(&message), Some(lost));
        assert_eq!(lost_output("Execution error: division by zero"), None);
        assert_eq!(
            lost_output("lost exchange output k of stage x on y: z"),
            None
        );
    }
}
