//! How a query's result reaches the client: cut off at the query timeout, counted
//! into `system.queries` and the log, cast to the types every Flight SQL client
//! reads, and encoded as Flight data.

use std::sync::Arc;
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::execution::SendableRecordBatchStream;
use futures::{stream, Stream, StreamExt, TryStreamExt};
use quiver_worker::status::from_datafusion;
use tonic::Status;

use super::DoGetStream;
use crate::admission::Permit;
use crate::queries::RunningQuery;

/// Ends the query with an error once it has run for `timeout`; dropping its stream
/// cancels every fragment and stage task it still runs.
pub(super) fn with_deadline(
    batches: SendableRecordBatchStream,
    timeout: Option<std::time::Duration>,
    started: Instant,
    pool: Arc<crate::pool::WorkerPool>,
) -> SendableRecordBatchStream {
    let Some(timeout) = timeout else { return batches };
    let schema = batches.schema();
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let limited = stream::unfold(Some(batches), move |state| {
        let pool = pool.clone();
        async move {
            let mut batches = state?;
            tokio::select! {
                next = batches.next() => next.map(|item| (item, Some(batches))),
                _ = tokio::time::sleep_until(deadline) => {
                    drop(batches);
                    crate::metrics::Counters::add(&pool.counters().query_timeouts, 1);
                    let message = format!(
                        "query cancelled: it ran longer than server.query_timeout_secs ({} s)",
                        timeout.as_secs_f64()
                    );
                    Some((Err(datafusion::error::DataFusionError::ResourcesExhausted(message)), None))
                }
            }
        }
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, limited))
}

/// Counts rows and logs the end of a query (or its failure, or its cancellation);
/// holds its admission permit until then.
pub(super) fn logged(
    batches: SendableRecordBatchStream,
    query: String,
    started: Instant,
    record: RunningQuery,
    permit: Option<Permit>,
) -> impl Stream<Item = datafusion::error::Result<RecordBatch>> + Send {
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
    let tally = Tally { query, started, rows: 0, done: false, record, _permit: permit };
    stream::unfold((batches, tally), |(mut s, mut tally)| async move {
        match s.next().await {
            Some(Ok(b)) => {
                tally.rows += b.num_rows();
                tally.record.add_rows(b.num_rows());
                tally.record.add_bytes(b.get_array_memory_size());
                Some((Ok(b), (s, tally)))
            }
            Some(Err(e)) => {
                tracing::info!(query = %tally.query, error = %e, "query failed");
                tally.record.failed(e.to_string());
                Some((Err(e), (s, tally)))
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

pub(super) fn encode(batches: impl Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static) -> DoGetStream {
    let batches = batches.and_then(|b| futures::future::ready(to_client_types(b)));
    let flight = FlightDataEncoderBuilder::new()
        .build(batches.map_err(|e| FlightError::Tonic(Box::new(from_datafusion(&e)))))
        .map_err(Status::from);
    Box::pin(flight)
}

/// The type a client receives for `t`: dictionaries hydrated, and string/binary
/// views as plain strings/binaries, which every Flight SQL client (JDBC, older
/// pyarrow) reads and which IPC sends compactly.
fn client_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, value) => client_type(value),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

/// The schema clients receive; FlightInfo and the stream agree on it. Every column
/// is nullable: the FlightInfo comes from the logical plan and the stream from the
/// optimized one, which may know more (a folded constant is never null), and strict
/// clients (ADBC) refuse a stream whose schema differs from the announced one.
pub(super) fn flight_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(client_type(f.data_type())).with_nullable(true))
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Casts a result batch to the client types of [`flight_schema`].
fn to_client_types(batch: RecordBatch) -> datafusion::error::Result<RecordBatch> {
    if batch.schema().fields().iter().all(|f| f.is_nullable() && client_type(f.data_type()) == *f.data_type()) {
        return Ok(batch);
    }
    let schema = Arc::new(flight_schema(batch.schema_ref()));
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}
