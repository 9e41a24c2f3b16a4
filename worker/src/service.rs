//! The worker's Flight service.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quiver_proto::{
    FragmentStats, FragmentTicket, QuiverCodec, ACTION_HEALTH, ACTION_INSTANCE, ACTION_STATS,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use crate::batches::compact_views;
use crate::cluster_auth::ClusterGuard;
use crate::exchange::{
    store, streams, ACTION_RELEASE, SHUFFLE_TICKET_PREFIX, STREAM_TICKET_PREFIX,
};
use crate::executor::{FragmentExecutor, WorkerOptions};
use crate::status::from_datafusion;
use crate::WorkerError;
use crate::MAX_MESSAGE_BYTES;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::MemoryPool;

/// The Flight service of one worker.
#[derive(Clone)]
pub struct WorkerService {
    executor: Arc<FragmentExecutor>,
    guard: ClusterGuard,
}

impl WorkerService {
    pub fn new(options: WorkerOptions, codec: QuiverCodec) -> Result<Self, WorkerError> {
        let guard = ClusterGuard::new(options.cluster.clone());
        Ok(Self {
            executor: Arc::new(FragmentExecutor::new(options, codec)?),
            guard,
        })
    }

    /// Refuses a call without the cluster's credentials, and says so in the log.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.guard
            .check(request.metadata())
            .map_err(|status| self.refused(request, status))
    }

    fn refused<T>(&self, request: &Request<T>, status: Status) -> Status {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        tracing::warn!(worker = %self.executor.options.id, %peer, reason = %status.message(), "refused a call");
        status
    }

    /// This process's instance id (what the `instance` action reports).
    pub fn instance_id(&self) -> &str {
        self.executor.lifecycle.instance_id()
    }

    /// Drains the worker: new fragments are refused at once; returns when every
    /// running fragment has finished and every exchange output it holds has been
    /// released by its coordinator, or when `grace` has passed.
    pub async fn drain(&self, grace: std::time::Duration) -> crate::Drained {
        self.executor.lifecycle.start_draining();
        let id = &self.executor.options.id;
        let running = || self.executor.counters.running.load(Ordering::Relaxed);
        tracing::info!(worker = %id, running = running(), "draining: no new fragments, finishing the running ones");
        let drained =
            crate::lifecycle::wait_idle(grace, running, || store().bytes_on_disk() > 0).await;
        match drained {
            crate::Drained::Clean => tracing::info!(worker = %id, "drained"),
            crate::Drained::GraceExpired { running } => {
                tracing::warn!(worker = %id, running, "drain grace period over; stopping with fragments running")
            }
        }
        drained
    }

    pub fn into_server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Serves a worker on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: WorkerService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(nodelay(TcpListenerStream::new(listener)), shutdown)
        .await?;
    Ok(())
}

/// Accepted connections without Nagle's algorithm. tonic's own `tcp_nodelay` applies
/// only to listeners it binds itself; with Nagle on, every small gRPC message waits
/// for a delayed ACK (~40 ms).
pub fn nodelay(
    incoming: TcpListenerStream,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    incoming.map_ok(|stream| {
        let _ = stream.set_nodelay(true);
        stream
    })
}

/// Decrements the running count when a fragment's stream ends or is dropped
/// (a cancelled query drops it), and records how it ended.
/// Counts a fragment as running while its compute task lives.
struct RunningGuard(Arc<FragmentExecutor>);

impl RunningGuard {
    fn new(executor: Arc<FragmentExecutor>) -> Self {
        executor.counters.running.fetch_add(1, Ordering::Relaxed);
        Self(executor)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.counters.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts how the response stream ended: completed, failed, or dropped (neither);
/// dropped with the response, it also stops the fragment if it still runs.
struct FragmentGuard {
    executor: Arc<FragmentExecutor>,
    failed: bool,
    finished: bool,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for FragmentGuard {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        let c = &self.executor.counters;
        if self.failed {
            c.failed.fetch_add(1, Ordering::Relaxed);
        } else if self.finished {
            c.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for WorkerService {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;
    type DoExchangeStream = Stream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        // Credentials and seal first: nothing of an unauthenticated ticket is decoded.
        // A Flight SQL client fetching a result endpoint has no cluster token; the
        // seal of a ticket the coordinator made for a client is its authorization.
        // (The call token is checked once: a second check would see its nonce as replayed.)
        let call = self.guard.check(request.metadata());
        let ticket = match self.guard.open(&request.get_ref().ticket) {
            Ok(ticket) => ticket,
            Err(status) => {
                // Without a call token, the ticket was the only credential: say what is wrong with both.
                let status = match call {
                    Err(missing) => Status::new(
                        missing.code(),
                        format!(
                            "{}; and the ticket: {}",
                            missing.message(),
                            status.message()
                        ),
                    ),
                    Ok(()) => status,
                };
                tracing::warn!(worker = %self.executor.options.id, reason = %status.message(), "refused a ticket");
                return Err(status);
            }
        };
        let member =
            |call: Result<(), Status>| call.map_err(|status| self.refused(&request, status));
        // What the link to the reader asks for; clients' streams are never compressed.
        let link = self
            .executor
            .options
            .compression
            .write_options(request.remote_addr(), request.local_addr());
        if let Some(rest) = ticket.strip_prefix(SHUFFLE_TICKET_PREFIX.as_bytes()) {
            member(call)?;
            return serve_exchange(rest, link);
        }
        if let Some(rest) = ticket.strip_prefix(STREAM_TICKET_PREFIX.as_bytes()) {
            member(call)?;
            return serve_stream(rest, link);
        }
        let ticket = FragmentTicket::decode_from(ticket)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !ticket.for_client {
            member(call)?;
            // The coordinator names this worker as its readers will: streams produced
            // here are then read from this process without Flight.
            streams().mark_local(&ticket.worker_address);
        }
        // Exchange outputs above are still served while draining; new work is not taken.
        if self.executor.lifecycle.is_draining() {
            return Err(Status::unavailable(format!(
                "worker {} is draining (shutting down) and takes no new fragments",
                self.executor.options.id
            )));
        }
        let span = tracing::info_span!("fragment", query = %ticket.query_id, fragment = ticket.fragment_id, partition = ticket.partition, worker = %self.executor.options.id);
        let executor = self.executor.clone();
        let running_guard = RunningGuard::new(executor.clone());
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut guard = FragmentGuard {
            executor: executor.clone(),
            failed: false,
            finished: false,
            cancel: cancel.clone(),
        };
        // The fragment starts and runs on the compute runtime; its batches come over a
        // small channel, so a slow client slows the fragment down, and a dropped
        // response drops the channel and stops it.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (stats_tx, stats_rx) = tokio::sync::oneshot::channel::<FragmentStats>();
        let (batch_tx, batch_rx) =
            tokio::sync::mpsc::channel::<Result<RecordBatch, DataFusionError>>(2);
        let task_span = span.clone();
        let runner = executor.clone();
        let for_client = ticket.for_client;
        // A client reads these batches: straight from here, or relayed as they are by the coordinator.
        let client_typed = ticket.for_client || ticket.relay;
        let views = ticket.string_views;
        crate::compute::handle().spawn(async move {
            let _running = running_guard;
            let running = match task_span.in_scope(|| runner.start(&ticket, cancel)) {
                Ok(r) => r,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let (stream, pool, plan) = (running.stream, running.pool, running.plan);
            let schema = match client_typed {
                true => Arc::new(quiver_proto::client_types::flight_schema_with(
                    &stream.schema(),
                    views,
                )),
                false => stream.schema(),
            };
            let (mut stream, cpu) = crate::cost::CpuMetered::new(stream);
            if started_tx.send(Ok(schema)).is_err() {
                return;
            }
            let c = &runner.counters;
            let started = std::time::Instant::now();
            let (mut rows, mut bytes, mut complete) = (0u64, 0u64, false);
            loop {
                // A dropped response (the query was cancelled or failed elsewhere)
                // stops the fragment at once, even mid-computation.
                let next = tokio::select! {
                    _ = batch_tx.closed() => break,
                    next = stream.next() => next,
                };
                let Some(batch) = next else {
                    complete = true;
                    break;
                };
                // A client gets the types it reads (the coordinator relies on the exact
                // types the fragment produces, so it gets them unchanged).
                let batch = match client_typed {
                    true => batch.and_then(|b| {
                        let b = quiver_proto::client_types::to_client_types_with(b, views)?;
                        match views {
                            true => compact_views(b),
                            false => Ok(b),
                        }
                        .map_err(DataFusionError::from)
                    }),
                    false => batch.and_then(|b| compact_views(b).map_err(DataFusionError::from)),
                };
                if let Ok(b) = &batch {
                    rows += b.num_rows() as u64;
                    bytes += b.get_array_memory_size() as u64;
                    c.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    c.bytes
                        .fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                }
                c.memory_reserved
                    .store(pool.reserved() as u64, Ordering::Relaxed);
                if batch_tx.send(batch).await.is_err() {
                    break;
                }
            }
            if complete {
                let spilled_bytes = crate::exchange::spilled_bytes(&plan);
                let elapsed_ms = started.elapsed().as_millis() as u64;
                let reads = crate::cost::reads(&plan, &runner.options.sources);
                let _ = stats_tx.send(FragmentStats {
                    rows,
                    bytes,
                    spilled_bytes,
                    elapsed_ms,
                    cpu_nanos: cpu.load(Ordering::Relaxed),
                    peak_memory: pool.peak(),
                    reads,
                });
            }
        });
        let schema = match started_rx.await {
            Ok(Ok(schema)) => schema,
            Ok(Err(e)) => {
                guard.failed = true;
                tracing::warn!(parent: &span, error = %e, "fragment failed to start");
                return Err(from_datafusion(&e));
            }
            Err(_) => {
                guard.failed = true;
                return Err(Status::internal(
                    "the fragment task ended before it started",
                ));
            }
        };
        tracing::debug!(parent: &span, "fragment started");
        let batches = tokio_stream::wrappers::ReceiverStream::new(batch_rx);
        // Dictionaries travel as dictionaries: the coordinator's plan expects the
        // exact types the fragment produces (e.g. hive partition columns).
        let mut encoder =
            FlightDataEncoderBuilder::new().with_dictionary_handling(DictionaryHandling::Resend);
        if !client_typed || views {
            // Batches go whole: slicing a view array would resend its buffers per slice.
            // Otherwise a client's messages stay under gRPC's usual limits.
            encoder = encoder.with_max_flight_data_size(MAX_MESSAGE_BYTES / 2);
        }
        if !client_typed {
            encoder = encoder.with_options(link);
        }
        let encoded = encoder
            .with_schema(schema)
            .build(batches.map_err(|e| FlightError::Tonic(Box::new(from_datafusion(&e)))));
        // A client's stream carries no statistics: a batch-less closing message is
        // one that readers other than the coordinator (Go's IPC reader) refuse.
        let encoded = match for_client {
            true => encoded.boxed(),
            false => with_closing_stats(encoded, stats_rx),
        };
        // The guard travels with the stream: it sees the end, an error, or a drop (cancel).
        let out = stream::unfold(
            (encoded, guard, span),
            |(mut s, mut guard, span)| async move {
                match s.next().await {
                    Some(Ok(data)) => Some((Ok(data), (s, guard, span))),
                    Some(Err(e)) => {
                        guard.failed = true;
                        let status: Status = e.into();
                        tracing::warn!(parent: &span, error = %status.message(), "fragment failed");
                        Some((Err(status), (s, guard, span)))
                    }
                    None => {
                        guard.finished = true;
                        drop(guard);
                        tracing::debug!(parent: &span, "fragment finished");
                        None
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(out)))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        // Only the health check is open (container probes); it tells nothing but "ok".
        // Credentials sent with it are checked, so a coordinator with another secret
        // sees this worker as unhealthy rather than failing every query on it.
        // `instance` is open for reading too (a coordinator of another run asks whether
        // this cluster's owner is alive); a body records a heartbeat and needs credentials.
        let open = match request.get_ref().r#type.as_str() {
            ACTION_HEALTH => true,
            ACTION_INSTANCE => request.get_ref().body.is_empty(),
            _ => false,
        };
        if !open
            || request
                .metadata()
                .contains_key(quiver_proto::CLUSTER_HEADER)
        {
            self.authorize(&request)?;
        }
        let action = request.into_inner();
        let body = match action.r#type.as_str() {
            ACTION_HEALTH => Bytes::from_static(b"ok"),
            ACTION_STATS => Bytes::from(self.executor.stats().encode_to_vec()),
            ACTION_INSTANCE => {
                let lifecycle = &self.executor.lifecycle;
                if !action.body.is_empty() {
                    lifecycle.heartbeat(&String::from_utf8_lossy(&action.body));
                }
                let running = self.executor.counters.running.load(Ordering::Relaxed);
                Bytes::from(lifecycle.describe(running).encode_to_vec())
            }
            ACTION_RELEASE => {
                let query = String::from_utf8_lossy(&action.body);
                let freed = store().release(&query);
                streams().release(&query);
                tracing::debug!(query = %query, freed, "exchange files released");
                Bytes::from(freed.to_string())
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown worker action '{other}'"
                )))
            }
        };
        let result: BoxStream<'static, Result<arrow_flight::Result, Status>> =
            stream::once(async move { Ok(arrow_flight::Result { body }) }).boxed();
        Ok(Response::new(result))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.authorize(&request)?;
        let actions = [
            (ACTION_HEALTH, "answers 'ok' while the worker serves"),
            (ACTION_STATS, "WorkerStats protobuf: running fragments, rows and bytes sent"),
            (ACTION_INSTANCE, "WorkerInstance protobuf: instance id, draining, owner heartbeat; a body records one"),
            (ACTION_RELEASE, "deletes the exchange files of the query named in the body"),
        ]
        .map(|(t, d)| Ok(ActionType { r#type: t.into(), description: d.into() }));
        Ok(Response::new(Box::pin(stream::iter(actions))))
    }

    // The calls workers do not serve still check credentials first, so a caller from
    // outside the cluster learns nothing but that it is refused.
    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented("workers take no handshake"))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented("workers list no flights"))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented(
            "workers only serve fragment tickets through do_get",
        ))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented(
            "workers only serve fragment tickets through do_get",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented(
            "workers only serve fragment tickets through do_get",
        ))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented("workers accept no uploads"))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented("workers do not exchange"))
    }
}

/// Streams one partition of an exchange output this worker holds
/// (`shuffle:<key>:<partition>`).
fn serve_exchange(
    ticket: &[u8],
    link: IpcWriteOptions,
) -> Result<Response<Stream<FlightData>>, Status> {
    let (ticket, key, partition) = exchange_ticket(ticket)?;
    let path = store()
        .partition_path(key, partition)
        .ok_or_else(|| Status::invalid_argument(format!("malformed exchange ticket '{ticket}'")))?;
    let file = std::fs::File::open(&path).map_err(|e| {
        Status::not_found(format!(
            "exchange output {ticket} is not on this worker: {e}"
        ))
    })?;
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)
            .map_err(|e| {
                Status::internal(format!("exchange output {ticket} is unreadable: {e}"))
            })?;
    let schema = reader.schema();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, FlightError>>(2);
    tokio::task::spawn_blocking(move || {
        for batch in reader {
            if tx.blocking_send(batch.map_err(FlightError::from)).is_err() {
                return;
            }
        }
    });
    let encoded = FlightDataEncoderBuilder::new()
        .with_dictionary_handling(DictionaryHandling::Resend)
        .with_max_flight_data_size(MAX_MESSAGE_BYTES / 2)
        .with_options(link)
        .with_schema(schema)
        .build(tokio_stream::wrappers::ReceiverStream::new(rx))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(encoded)))
}

/// The key and partition of an exchange ticket's `<key>:<partition>`, with the text.
fn exchange_ticket(ticket: &[u8]) -> Result<(&str, &str, usize), Status> {
    let text = std::str::from_utf8(ticket)
        .map_err(|_| Status::invalid_argument("exchange ticket is not UTF-8"))?;
    text.rsplit_once(':')
        .and_then(|(key, p)| Some((text, key, p.parse().ok()?)))
        .ok_or_else(|| Status::invalid_argument(format!("malformed exchange ticket '{text}'")))
}

/// Streams one partition of a streamed exchange output produced on this worker
/// (`stream:<key>:<partition>`), as the producer sends it. The producer's own
/// failure goes out as an `Internal` status, which the reader reports as the
/// query's error; any other status means the stream is lost.
fn serve_stream(
    ticket: &[u8],
    link: IpcWriteOptions,
) -> Result<Response<Stream<FlightData>>, Status> {
    let (_, key, partition) = exchange_ticket(ticket)?;
    let rx = streams()
        .receiver(key, partition)
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let batches = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
        item.map_err(|message| FlightError::Tonic(Box::new(Status::internal(message))))
    });
    let encoded = FlightDataEncoderBuilder::new()
        .with_dictionary_handling(DictionaryHandling::Resend)
        .with_max_flight_data_size(MAX_MESSAGE_BYTES / 2)
        .with_options(link)
        .build(batches)
        .map_err(Status::from);
    Ok(Response::new(Box::pin(encoded)))
}

/// Puts what the fragment cost into the `app_metadata` of its last message. The last
/// batch is held back until the stream ends, so the statistics arrive with it: a
/// reader that stops at the last row it needs (a merge with a LIMIT) still gets
/// them. A fragment without batches ends with a batch-less message instead.
fn with_closing_stats(
    encoded: impl futures::Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
    stats: tokio::sync::oneshot::Receiver<FragmentStats>,
) -> BoxStream<'static, Result<FlightData, FlightError>> {
    struct State<S> {
        encoded: S,
        held: Option<FlightData>,
        stats: Option<tokio::sync::oneshot::Receiver<FragmentStats>>,
    }
    // Fused: the end is polled again once the closing message has gone out.
    let state = State {
        encoded: Box::pin(encoded.fuse()),
        held: None,
        stats: Some(stats),
    };
    stream::unfold(state, |mut st| async move {
        loop {
            match st.encoded.next().await {
                // Only batch messages are held back; the schema goes out at once.
                Some(Ok(data)) if !data.data_body.is_empty() => {
                    if let Some(previous) = st.held.replace(data) {
                        return Some((Ok(previous), st));
                    }
                }
                Some(other) => {
                    if other.is_err() {
                        st.stats = None;
                    }
                    return Some((other, st));
                }
                None => {
                    let stats = match st.stats.take() {
                        Some(rx) => rx.await.ok(),
                        None => None,
                    };
                    let mut last = match st.held.take() {
                        Some(held) => held,
                        None if stats.is_some() => FlightData {
                            data_header: metadata_only_header(),
                            ..Default::default()
                        },
                        None => return None,
                    };
                    if let Some(stats) = stats {
                        last.app_metadata = Bytes::from(stats.encode_to_vec());
                    }
                    return Some((Ok(last), st));
                }
            }
        }
    })
    .boxed()
}

/// The IPC header of a Flight message without a batch (`MessageHeader::NONE`):
/// decoders pass its `app_metadata` on and skip it.
fn metadata_only_header() -> Bytes {
    use datafusion::arrow::ipc::{MessageBuilder, MessageHeader, MetadataVersion};
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let mut message = MessageBuilder::new(&mut fbb);
    message.add_version(MetadataVersion::V5);
    message.add_header_type(MessageHeader::NONE);
    message.add_bodyLength(0);
    let message = message.finish();
    fbb.finish(message, None);
    Bytes::copy_from_slice(fbb.finished_data())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_metadata_only_header_decodes_as_no_batch() {
        let header = super::metadata_only_header();
        let message = datafusion::arrow::ipc::root_as_message(&header).expect("valid IPC message");
        assert_eq!(
            message.header_type(),
            datafusion::arrow::ipc::MessageHeader::NONE
        );
    }
}
