//! What happens to a running query's result on its way to the front end, whether
//! it comes as batches or as Flight messages relayed from the workers
//! (`crate::distributed::relay`): the deadline and cancellation ([`guarded`]),
//! the copy for the results cache ([`kept`]), and the count and end in
//! `system.queries` with the admission permit held until then ([`logged`]).

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use futures::stream::BoxStream;
use futures::{stream, Stream, StreamExt};
use quiver_worker::status::from_datafusion;
use tonic::Status;

use super::CANCELLED;
use crate::admission::Permit;
use crate::distributed::relay::RelayFrame;
use crate::engine::QueryEngine;
use crate::observe::queries::RunningQuery;

/// One piece of a result: a batch, or a relayed record batch message.
pub trait Piece: Send + 'static {
    fn rows(&self) -> usize;
    /// The bytes it counts for (memory of a batch, body of a message).
    fn bytes(&self) -> usize;
}

impl Piece for RecordBatch {
    fn rows(&self) -> usize {
        self.num_rows()
    }
    fn bytes(&self) -> usize {
        self.get_array_memory_size()
    }
}

impl Piece for RelayFrame {
    fn rows(&self) -> usize {
        self.rows
    }
    fn bytes(&self) -> usize {
        self.data.data_body.len()
    }
}

/// Ends the query with an error once it has run for the query timeout, or when it
/// is cancelled (console, PostgreSQL cancel request); dropping its stream cancels
/// every fragment and stage task it still runs.
pub(super) fn guarded<T: Piece>(
    pieces: BoxStream<'static, Result<T>>,
    engine: &QueryEngine,
    started: Instant,
    cancel: Arc<tokio::sync::Notify>,
) -> BoxStream<'static, Result<T>> {
    let timeout = engine.query_timeout();
    let pool = engine.pool().clone();
    let deadline = timeout.map(|t| tokio::time::Instant::from_std(started + t));
    stream::unfold(Some(pieces), move |state| {
        let (pool, cancel) = (pool.clone(), cancel.clone());
        async move {
            let mut pieces = state?;
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                next = pieces.next() => next.map(|item| (item, Some(pieces))),
                _ = expired => {
                    drop(pieces);
                    crate::observe::counters::Counters::add(&pool.counters().query_timeouts, 1);
                    let message = format!(
                        "query cancelled: it ran longer than server.query_timeout_secs ({} s)",
                        timeout.map(|t| t.as_secs_f64()).unwrap_or_default()
                    );
                    let status = quiver_worker::status::tagged(Status::resource_exhausted(message), quiver_worker::status::ErrorKind::QueryCanceled);
                    Some((Err(DataFusionError::External(Box::new(status))), None))
                }
                _ = cancel.notified() => {
                    drop(pieces);
                    Some((Err(DataFusionError::External(Box::new(Status::cancelled(format!("{CANCELLED} on request"))))), None))
                }
            }
        }
    })
    .boxed()
}

/// Passes the pieces on and keeps them; a complete answer within
/// `cache.max_entry_bytes` goes into the results cache at its end, as the
/// batches `decode` makes of the pieces kept (in the types of `schema`).
pub(super) fn kept<T: Piece + Clone>(
    pieces: BoxStream<'static, Result<T>>,
    cache: Arc<crate::cache::ResultsCache>,
    key: String,
    objects: Vec<String>,
    schema: SchemaRef,
    decode: impl FnOnce(Vec<T>) -> Result<Vec<RecordBatch>> + Send + 'static,
) -> BoxStream<'static, Result<T>> {
    let limit = cache.max_entry_bytes();
    let state = (
        pieces,
        Some(Vec::new()),
        0usize,
        Some((cache, key, objects, decode)),
    );
    stream::unfold(Some(state), move |state| {
        let schema = schema.clone();
        async move {
            let (mut s, mut kept, mut bytes, mut end) = state?;
            match s.next().await {
                Some(Ok(p)) => {
                    bytes += p.bytes();
                    match kept.as_mut() {
                        Some(k) if bytes <= limit => k.push(p.clone()),
                        _ => kept = None,
                    }
                    Some((Ok(p), Some((s, kept, bytes, end))))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None => {
                    if let (Some(k), Some((cache, key, objects, decode))) = (kept, end.take()) {
                        match decode(k) {
                            Ok(batches) => cache.put(key, schema, batches, objects),
                            Err(e) => tracing::warn!(error = %e, "an answer could not be kept in the results cache"),
                        }
                    }
                    None
                }
            }
        }
    })
    .boxed()
}

/// Counts rows and logs the end of a query (or its failure, or its cancellation);
/// holds its admission permit until then.
pub(super) fn logged<T: Piece>(
    pieces: BoxStream<'static, Result<T>>,
    query: String,
    started: Instant,
    record: RunningQuery,
    permit: Option<Permit>,
    written: Option<fn(&T) -> u64>,
) -> impl Stream<Item = Result<T>> + Send {
    struct Tally {
        query: String,
        started: Instant,
        rows: usize,
        done: bool,
        record: RunningQuery,
        /// The query's place among the running ones, given back when the stream ends.
        _permit: Option<Permit>,
    }
    impl Drop for Tally {
        fn drop(&mut self) {
            let elapsed_ms = self.started.elapsed().as_millis() as u64;
            if self.done {
                tracing::info!(query = %self.query, rows = self.rows, elapsed_ms, "query finished");
            } else {
                tracing::info!(query = %self.query, rows = self.rows, elapsed_ms, "query stopped before its end");
            }
        }
    }
    let tally = Tally {
        query,
        started,
        rows: 0,
        done: false,
        record,
        _permit: permit,
    };
    stream::unfold(Some((pieces, tally)), move |state| async move {
        let (mut s, mut tally) = state?;
        match s.next().await {
            Some(Ok(p)) => {
                tally.rows += p.rows();
                tally.record.add_batch(p.rows(), p.bytes());
                if let Some(written) = written {
                    // A write answers with the rows it wrote.
                    tally.record.written(written(&p));
                }
                Some((Ok(p), Some((s, tally))))
            }
            Some(Err(e)) => {
                tracing::info!(query = %tally.query, error = %e, "query failed");
                match from_datafusion(&e) {
                    s if s.code() == tonic::Code::Cancelled => {
                        tally.record.cancelled(s.message().to_string())
                    }
                    _ => tally.record.failed(e.to_string()),
                }
                // The error ends the stream: nothing after it is a result.
                Some((Err(e), None))
            }
            None => {
                tally.done = true;
                tally.record.finished();
                drop(tally);
                None
            }
        }
    })
}
