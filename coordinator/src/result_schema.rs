//! A result's stream in the types its plan announced.
//!
//! Every door announces a result's columns before the first row (Flight SQL's
//! `FlightInfo`, PostgreSQL's `RowDescription`, the HTTP door's header) from the
//! logical plan. DataFusion's optimizer may change a column's type on the way to
//! the physical plan: the distinct-aggregate rewrite turns `sum(d)` next to a
//! `count(DISTINCT …)` into a sum of partial sums, widening `decimal(25, 2)` to
//! `decimal(35, 2)`. Strict clients (ADBC) refuse a stream that differs from what
//! was announced, so the stream is cast back to the plan's types here, once, for
//! every door.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

/// `stream` with the column types of `announced` (names and nullability stay the
/// stream's). Unchanged when they already agree or the column counts differ.
pub fn conform(stream: SendableRecordBatchStream, announced: &Schema) -> SendableRecordBatchStream {
    let Some(target) = target_schema(&stream.schema(), announced) else {
        return stream;
    };
    let schema = target.clone();
    let batches = stream.map(move |batch| batch.and_then(|b| cast_batch(&b, &target)));
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

/// The schema [`conform`] gives a stream of `actual`.
pub fn conformed_schema(actual: &SchemaRef, announced: &Schema) -> SchemaRef {
    target_schema(actual, announced).unwrap_or_else(|| actual.clone())
}

/// The schema to cast to, or None when nothing needs casting.
fn target_schema(actual: &SchemaRef, announced: &Schema) -> Option<SchemaRef> {
    if actual.fields().len() != announced.fields().len() {
        return None;
    }
    let differs = actual
        .fields()
        .iter()
        .zip(announced.fields())
        .any(|(a, b)| a.data_type() != b.data_type());
    if !differs {
        return None;
    }
    let fields: Vec<Field> = actual
        .fields()
        .iter()
        .zip(announced.fields())
        .map(|(a, b)| a.as_ref().clone().with_data_type(b.data_type().clone()))
        .collect();
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        actual.metadata().clone(),
    )))
}

/// `batch` with the column types of `target` (same column count).
pub fn cast_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(c.clone()),
            false => datafusion::arrow::compute::cast(c, f.data_type()),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(target.clone(), columns)
        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, Int64Array};
    use datafusion::arrow::datatypes::DataType;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn a_widened_decimal_is_cast_back_to_the_announced_type() -> Result<()> {
        let wide = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Decimal128(35, 2), true),
        ]));
        let batch = RecordBatch::try_new(
            wide.clone(),
            vec![
                Arc::new(Int64Array::from(vec![3])),
                Arc::new(Decimal128Array::from(vec![Some(12345)]).with_precision_and_scale(35, 2)?),
            ],
        )?;
        let stream: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            wide,
            futures::stream::iter([Ok(batch)]),
        ));
        let announced = Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Decimal128(25, 2), true),
        ]);
        let out = conform(stream, &announced);
        assert_eq!(
            out.schema().field(1).data_type(),
            &DataType::Decimal128(25, 2)
        );
        let batches: Vec<RecordBatch> = out.try_collect().await?;
        assert_eq!(
            batches[0].schema().field(1).data_type(),
            &DataType::Decimal128(25, 2)
        );
        let s = batches[0]
            .column(1)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .ok_or_else(|| DataFusionError::Internal("type".into()))?;
        assert_eq!(s.value_as_string(0), "123.45");
        Ok(())
    }

    #[test]
    fn agreeing_schemas_are_left_alone() {
        let s = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)]));
        assert!(target_schema(&s, &s).is_none());
        let other = Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        assert!(target_schema(&s, &other).is_none());
    }
}
