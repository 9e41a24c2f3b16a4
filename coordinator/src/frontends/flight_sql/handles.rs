//! Statement handles and tickets.
//!
//! Handles are self-describing: they carry the SQL and, once bound, the parameter
//! row (as Arrow IPC). So any request can be planned from its handle alone, the
//! coordinator keeps no per-query state between `GetFlightInfo` and `DoGet`, and
//! clients that use `DoPutPreparedStatementResult` get stateless prepared statements.
//! Clients that keep the original handle after binding are served from the
//! prepared-statement registry by the handle's id.

use std::io::Cursor;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::metadata::ScalarAndMetadata;
use datafusion::common::{ParamValues, ScalarValue};
use prost::Message;
use tonic::Status;

#[derive(Clone, PartialEq, Message)]
pub struct QueryHandle {
    /// Prepared statement id; empty for plain statements.
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub sql: String,
    /// One parameter row as an Arrow IPC stream; empty when unbound.
    #[prost(bytes = "vec", tag = "3")]
    pub params: Vec<u8>,
    /// The client asked for string and binary views ([`super::requests::STRING_VIEWS_HEADER`]).
    #[prost(bool, tag = "4")]
    pub string_views: bool,
}

impl QueryHandle {
    /// A plain statement: not prepared, no parameters, so its text alone says what it answers.
    pub fn is_plain(&self) -> bool {
        self.id.is_empty() && self.params.is_empty()
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Status> {
        Self::decode(bytes)
            .map_err(|_| Status::invalid_argument("unknown or malformed statement handle"))
    }
}

/// Serializes one parameter row.
pub fn encode_params(batch: &RecordBatch) -> Result<Vec<u8>, Status> {
    if batch.num_rows() != 1 {
        return Err(Status::invalid_argument(format!(
            "a query takes exactly one row of parameters, got {}",
            batch.num_rows()
        )));
    }
    let mut buf = vec![];
    let mut write = || -> Result<(), datafusion::arrow::error::ArrowError> {
        let mut w = StreamWriter::try_new(&mut buf, batch.schema_ref())?;
        w.write(batch)?;
        w.finish()
    };
    write().map_err(|e| Status::internal(format!("cannot encode parameters: {e}")))?;
    Ok(buf)
}

/// Decodes a parameter row into positional values, cast to the types the plan expects
/// (`expected[i]` is the type of `$i+1`, when the planner inferred one).
pub fn decode_params(bytes: &[u8], expected: &[Option<DataType>]) -> Result<ParamValues, Status> {
    let bad = |e: String| Status::invalid_argument(format!("invalid parameters: {e}"));
    let mut reader =
        StreamReader::try_new(Cursor::new(bytes), None).map_err(|e| bad(e.to_string()))?;
    let batch = match reader.next() {
        Some(b) => b.map_err(|e| bad(e.to_string()))?,
        None => return Err(bad("no parameter row".into())),
    };
    let mut values = Vec::with_capacity(batch.num_columns());
    for (i, column) in batch.columns().iter().enumerate() {
        let value = ScalarValue::try_from_array(column, 0).map_err(|e| bad(e.to_string()))?;
        let value = match expected.get(i) {
            Some(Some(t)) if value.data_type() != *t => value.cast_to(t).map_err(|e| {
                bad(format!(
                    "parameter ${} cannot be converted to {t}: {e}",
                    i + 1
                ))
            })?,
            _ => value,
        };
        values.push(value);
    }
    Ok(ParamValues::List(
        values
            .into_iter()
            .map(|v| ScalarAndMetadata::new(v, None))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn params_round_trip_and_cast() {
        let batch = RecordBatch::try_from_iter(vec![
            ("0", Arc::new(Int32Array::from(vec![7])) as _),
            ("1", Arc::new(StringArray::from(vec!["x"])) as _),
        ])
        .expect("batch");
        let bytes = encode_params(&batch).expect("encode");
        let ParamValues::List(values) =
            decode_params(&bytes, &[Some(DataType::Int64), None]).expect("decode")
        else {
            panic!("positional parameters expected")
        };
        assert_eq!(values[0].value(), &ScalarValue::Int64(Some(7)));
        assert_eq!(values[1].value(), &ScalarValue::Utf8(Some("x".into())));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let two =
            RecordBatch::try_from_iter(vec![("0", Arc::new(Int32Array::from(vec![1, 2])) as _)])
                .expect("batch");
        assert!(encode_params(&two).is_err());
        assert!(decode_params(b"garbage", &[]).is_err());
        let text =
            RecordBatch::try_from_iter(vec![("0", Arc::new(StringArray::from(vec!["abc"])) as _)])
                .expect("b");
        let err = decode_params(
            &encode_params(&text).expect("enc"),
            &[Some(DataType::Int64)],
        )
        .unwrap_err();
        assert!(err.message().contains("$1"), "{}", err.message());
    }

    #[test]
    fn garbage_handles_are_refused() {
        assert!(QueryHandle::from_bytes(&[0xff, 0xff]).is_err());
        let h = QueryHandle {
            id: "a".into(),
            sql: "select 1".into(),
            params: vec![],
            string_views: false,
        };
        assert_eq!(QueryHandle::from_bytes(&h.to_bytes()).ok(), Some(h));
    }
}
