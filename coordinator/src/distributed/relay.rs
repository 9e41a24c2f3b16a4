//! Results relayed without re-encoding: when a query's result is its root
//! fragment's partitions as they are (the shape `workers.client_endpoints` hands
//! out, see [`super::endpoints`]), the workers cast their batches to the client's
//! types and the coordinator forwards their Flight record batch messages to the
//! Flight SQL client untouched: no decode, cast or encode of the result's bytes
//! here. Partitions are interleaved as they come, as a merge without order does.
//!
//! Only when the workers' types, cast for the client, equal what the client was
//! announced (the logical plan's types): otherwise the batches need the cast of
//! `crate::result_schema` here, and the query runs the usual way.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;

pub use super::remote_fragment_exec::{RelayFrame, RelayFrames};

/// A result the coordinator forwards as its workers' Flight messages.
pub struct Relay {
    /// The schema the client reads (client types).
    pub schema: SchemaRef,
    /// The record batch messages of every partition, in the order they arrive.
    pub frames: RelayFrames,
}

/// Starts relaying `plan`'s result for query `query_id`, or None when the plan's
/// result needs the coordinator (a merge, an operator above the fragments, or
/// types that differ from `announced`).
pub fn relay(
    plan: &Arc<dyn ExecutionPlan>,
    announced: &Schema,
    query_id: &str,
    views: bool,
) -> Option<Relay> {
    let root = super::endpoints::root_fragment(plan)?;
    let schema = quiver_proto::client_types::flight_schema_with(&root.schema(), views);
    let expected = quiver_proto::client_types::flight_schema_with(announced, views);
    if !same_types(&schema, &expected) {
        return None;
    }
    let partitions = root.properties().output_partitioning().partition_count();
    let frames = (0..partitions).map(|p| root.relay(p, query_id, views));
    Some(Relay {
        schema: Arc::new(schema),
        frames: futures::stream::select_all(frames).boxed(),
    })
}

/// Same column types, and none a dictionary (partitions would number theirs alike).
fn same_types(actual: &Schema, expected: &Schema) -> bool {
    actual.fields().len() == expected.fields().len()
        && actual
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(a, e)| a.data_type() == e.data_type() && !has_dictionary(a.data_type()))
}

fn has_dictionary(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_dictionary(f.data_type())),
        DataType::Union(fields, _) => fields.iter().any(|(_, f)| has_dictionary(f.data_type())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    #[test]
    fn types_must_match_and_hold_no_dictionary() {
        let utf8 = Schema::new(vec![Field::new("s", DataType::Utf8, true)]);
        let int = Schema::new(vec![Field::new("s", DataType::Int64, true)]);
        assert!(same_types(&utf8, &utf8));
        assert!(!same_types(&utf8, &int));
        let nested = Schema::new(vec![Field::new_list(
            "l",
            Field::new_dictionary("d", DataType::Int32, DataType::Utf8, true),
            true,
        )]);
        assert!(!same_types(&nested, &nested));
    }
}
