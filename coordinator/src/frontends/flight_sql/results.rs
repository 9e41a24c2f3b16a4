//! How a query's result reaches a Flight SQL client through the coordinator: cast
//! to the types every Flight SQL client reads ([`quiver_proto::client_types`]),
//! and encoded as Flight data.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use datafusion::arrow::array::RecordBatch;
use futures::{Stream, TryStreamExt};
use quiver_worker::status::from_datafusion;
use tonic::Status;

use super::DoGetStream;

pub(crate) use quiver_proto::client_types::{flight_schema, to_client_types};

pub(super) fn encode(
    batches: impl Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static,
) -> DoGetStream {
    let batches =
        batches.and_then(|b| futures::future::ready(to_client_types(b).map_err(Into::into)));
    let flight = FlightDataEncoderBuilder::new()
        .build(batches.map_err(|e| FlightError::Tonic(Box::new(from_datafusion(&e)))))
        .map_err(Status::from);
    Box::pin(flight)
}
