//! How a query's result reaches a Flight SQL client through the coordinator: cast
//! to the types every Flight SQL client reads ([`quiver_proto::client_types`]),
//! and encoded as Flight data; or, when the workers sent it in those types, their
//! Flight messages forwarded as they are ([`relay`]).

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use datafusion::arrow::array::RecordBatch;
use futures::{Stream, StreamExt, TryStreamExt};
use quiver_worker::status::from_datafusion;
use tonic::Status;

use super::DoGetStream;

/// The announced schema: [`quiver_proto::client_types::flight_schema`], or with string views kept when the client asked.
pub(super) fn flight_schema(
    schema: &datafusion::arrow::datatypes::Schema,
    views: bool,
) -> datafusion::arrow::datatypes::Schema {
    quiver_proto::client_types::flight_schema_with(schema, views)
}

pub(super) fn encode(
    batches: impl Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static,
    views: bool,
) -> DoGetStream {
    let batches = batches.and_then(move |b| {
        futures::future::ready(
            quiver_proto::client_types::to_client_types_with(b, views).map_err(Into::into),
        )
    });
    let flight = FlightDataEncoderBuilder::new()
        .build(batches.map_err(|e| FlightError::Tonic(Box::new(from_datafusion(&e)))))
        .map_err(Status::from);
    Box::pin(flight)
}

/// The schema message, then the workers' record batch messages as they came.
pub(super) fn relay(relayed: crate::frontends::run::Relayed) -> DoGetStream {
    let schema = crate::frontends::run::schema_message(&relayed.schema);
    let frames = relayed
        .frames
        .map_ok(|f| f.data)
        .map_err(|e| from_datafusion(&e));
    Box::pin(futures::stream::once(async { Ok(schema) }).chain(frames))
}
