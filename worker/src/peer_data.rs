//! Decoding Arrow Flight data sent by this cluster's own processes: exchange
//! streams between workers, and fragments' results on their way to the
//! coordinator.
//!
//! arrow-flight's decoder copies every message body into a new buffer and then
//! validates every array (UTF-8 of each string, every offset). Between Quiver's
//! processes both are wasted work: the sender built and validated those arrays
//! itself before arrow-rs encoded them, and the stream is authenticated with the
//! cluster's secret (a party that holds it can already answer any query
//! wrongly). [`PeerDecoder`] therefore keeps the body where the gRPC layer put it
//! and skips validation, as DataFusion does for the spill files it wrote itself.
//! Buffers that are not aligned for their type are still copied (arrow-ipc
//! does that). Data from outside the cluster (clients, Flight SQL sources) never
//! goes through here.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_flight::FlightData;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::{read_dictionary, RecordBatchDecoder};
use datafusion::arrow::ipc::{root_as_message, MessageHeader};
use datafusion::arrow::record_batch::RecordBatch;

/// Decodes one Flight stream from a peer, message by message.
#[derive(Default)]
pub struct PeerDecoder {
    schema: Option<SchemaRef>,
    dictionaries: HashMap<i64, ArrayRef>,
}

impl PeerDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream's schema, once its schema message has arrived.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    /// The batch `data` carries, if any (a schema or dictionary message, or one
    /// with only `app_metadata`, carries none).
    pub fn decode(&mut self, data: &FlightData) -> Result<Option<RecordBatch>, ArrowError> {
        if data.data_header.is_empty() {
            return Ok(None);
        }
        let message = root_as_message(&data.data_header)
            .map_err(|e| ArrowError::ParseError(format!("malformed Flight data header: {e}")))?;
        match message.header_type() {
            MessageHeader::Schema => {
                self.schema = Some(Arc::new(Schema::try_from(data)?));
                self.dictionaries.clear();
                Ok(None)
            }
            MessageHeader::DictionaryBatch => {
                let schema = self.expect_schema()?;
                let batch = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| ArrowError::ParseError("malformed dictionary batch".into()))?;
                let body = Buffer::from(data.data_body.clone());
                read_dictionary(
                    &body,
                    batch,
                    &schema,
                    &mut self.dictionaries,
                    &message.version(),
                )?;
                Ok(None)
            }
            MessageHeader::RecordBatch => {
                let schema = self.expect_schema()?;
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| ArrowError::ParseError("malformed record batch".into()))?;
                // The body stays in the buffer gRPC received it in.
                let body = Buffer::from(data.data_body.clone());
                let mut trusted = arrow_data::UnsafeFlag::new();
                // SAFETY: the sender is a process of this cluster (the stream is
                // authenticated with the cluster's secret), and arrow-rs encoded
                // these arrays from ones it had built and validated (see the module doc).
                unsafe { trusted.set(true) };
                RecordBatchDecoder::try_new(
                    &body,
                    batch,
                    schema,
                    &self.dictionaries,
                    &message.version(),
                )?
                .with_require_alignment(false)
                .with_skip_validation(trusted)
                .read_record_batch()
                .map(Some)
            }
            _ => Ok(None),
        }
    }

    fn expect_schema(&self) -> Result<SchemaRef, ArrowError> {
        self.schema
            .clone()
            .ok_or_else(|| ArrowError::ParseError("Flight data arrived before its schema".into()))
    }
}

/// The row count of a record batch message, read from its header alone; None for
/// any other message (schema, dictionary, or one with only `app_metadata`).
pub fn batch_rows(data: &FlightData) -> Result<Option<usize>, ArrowError> {
    if data.data_header.is_empty() {
        return Ok(None);
    }
    let message = root_as_message(&data.data_header)
        .map_err(|e| ArrowError::ParseError(format!("malformed Flight data header: {e}")))?;
    Ok(message
        .header_as_record_batch()
        .map(|b| usize::try_from(b.length()).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
    use datafusion::arrow::array::{DictionaryArray, Int64Array, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::Int32Type;
    use futures::TryStreamExt;

    fn batches() -> Vec<RecordBatch> {
        (0..3)
            .map(|i| {
                let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
                RecordBatch::try_from_iter(vec![
                    (
                        "n",
                        Arc::new(Int64Array::from(vec![i, i + 1, i + 2])) as ArrayRef,
                    ),
                    (
                        "s",
                        Arc::new(StringArray::from(vec![Some("x"), None, Some("zé")])) as ArrayRef,
                    ),
                    (
                        "v",
                        Arc::new(StringViewArray::from(vec![
                            "a string longer than twelve bytes",
                            "",
                            "short",
                        ])) as ArrayRef,
                    ),
                    ("d", Arc::new(dict) as ArrayRef),
                ])
                .expect("batch")
            })
            .collect()
    }

    /// Whatever arrow-flight's encoder sends (schema, dictionaries, batches of
    /// plain and view strings) comes back equal.
    #[tokio::test]
    async fn what_the_encoder_sends_decodes_to_the_same_batches() {
        let input = batches();
        let encoded: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_dictionary_handling(DictionaryHandling::Resend)
            .build(futures::stream::iter(input.clone().into_iter().map(Ok)))
            .try_collect()
            .await
            .expect("encode");
        let mut decoder = PeerDecoder::new();
        let mut output = vec![];
        for data in &encoded {
            if let Some(b) = decoder.decode(data).expect("decode") {
                output.push(b);
            }
        }
        assert_eq!(output, input);
        assert_eq!(decoder.schema().map(|s| s.fields().len()), Some(4));
        // The header alone tells a batch message and its rows.
        let rows: Vec<usize> = encoded
            .iter()
            .filter_map(|d| batch_rows(d).expect("header"))
            .collect();
        assert_eq!(rows, vec![3, 3, 3]);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut decoder = PeerDecoder::new();
        let junk = FlightData {
            data_header: vec![1, 2, 3, 4, 5, 6, 7, 8].into(),
            ..Default::default()
        };
        assert!(decoder.decode(&junk).is_err());
        assert!(batch_rows(&junk).is_err());
        assert!(decoder
            .decode(&FlightData::default())
            .expect("empty")
            .is_none());
    }
}
