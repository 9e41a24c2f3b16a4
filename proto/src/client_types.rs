//! The types a Flight SQL client receives, whoever sends the batches (the
//! coordinator relaying a query, or a worker serving a result endpoint): the
//! announced schema and the stream must agree, and every client must read them.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;

/// The type a client receives for `t`: dictionaries hydrated, and string/binary
/// views as plain strings/binaries, which every Flight SQL client (JDBC, older
/// pyarrow) reads and which IPC sends compactly.
fn client_type(t: &DataType, views: bool) -> DataType {
    match t {
        DataType::Dictionary(_, value) => client_type(value, views),
        DataType::Utf8View if !views => DataType::Utf8,
        DataType::BinaryView if !views => DataType::Binary,
        other => other.clone(),
    }
}

/// The schema clients receive; FlightInfo and the stream agree on it. Every column
/// is nullable: the FlightInfo comes from the logical plan and the stream from the
/// optimized one, which may know more (a folded constant is never null), and strict
/// clients (ADBC) refuse a stream whose schema differs from the announced one.
pub fn flight_schema(schema: &Schema) -> Schema {
    flight_schema_with(schema, false)
}

/// [`flight_schema`], with string and binary views kept as views when `views`
/// (clients that read them and ask, saving the casts).
pub fn flight_schema_with(schema: &Schema, views: bool) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_data_type(client_type(f.data_type(), views))
                .with_nullable(true)
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// Casts a result batch to the client types of [`flight_schema`].
pub fn to_client_types(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    to_client_types_with(batch, false)
}

/// [`to_client_types`] for [`flight_schema_with`].
pub fn to_client_types_with(batch: RecordBatch, views: bool) -> Result<RecordBatch, ArrowError> {
    if batch
        .schema()
        .fields()
        .iter()
        .all(|f| f.is_nullable() && client_type(f.data_type(), views) == *f.data_type())
    {
        return Ok(batch);
    }
    let schema = Arc::new(flight_schema_with(batch.schema_ref(), views));
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}
