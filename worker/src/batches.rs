//! Preparing batches for the wire.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;

/// Rewrites string/binary *view* columns so they own only the bytes they use.
///
/// A view array produced by a filter or a slice still points into the whole
/// buffers it came from, and Arrow IPC sends those buffers whole: without this, a
/// selective filter over Parquet would ship every page it touched.
pub fn compact_views(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    if !batch.columns().iter().any(|c| is_view(c.data_type())) {
        return Ok(batch);
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8View => Arc::new(c.as_string_view().gc()) as ArrayRef,
            DataType::BinaryView => Arc::new(c.as_binary_view().gc()) as ArrayRef,
            _ => c.clone(),
        })
        .collect();
    RecordBatch::try_new(batch.schema(), columns)
}

fn is_view(t: &DataType) -> bool {
    matches!(t, DataType::Utf8View | DataType::BinaryView)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringViewArray;

    #[test]
    fn compaction_drops_unreferenced_bytes_and_keeps_values() {
        let long: Vec<String> = (0..1000)
            .map(|i| format!("a fairly long string value number {i}"))
            .collect();
        let array = StringViewArray::from_iter_values(long.iter());
        let batch =
            RecordBatch::try_from_iter(vec![("s", Arc::new(array) as ArrayRef)]).expect("batch");
        let slice = batch.slice(10, 2);
        let before = slice.get_array_memory_size();
        let compact = compact_views(slice.clone()).expect("compact");
        assert!(
            compact.get_array_memory_size() < before / 10,
            "{} vs {before}",
            compact.get_array_memory_size()
        );
        assert_eq!(compact, slice);
    }
}
