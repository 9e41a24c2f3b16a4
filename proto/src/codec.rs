//! The datafusion-proto extension codec for Quiver's own execution-plan nodes.
//!
//! Standard DataFusion nodes (file scans, filters, aggregates, joins...) are
//! serialized by datafusion-proto itself. A node that only Quiver knows (a
//! database scan, an exchange reader) implements [`NodeCodec`] and is
//! registered here under a stable name; on the wire it becomes
//! `QuiverNode { kind, payload }` inside the plan's extension slot.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::common::{internal_err, plan_err, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;

/// Encodes and decodes one kind of Quiver plan node.
pub trait NodeCodec: Send + Sync {
    /// Stable name written on the wire.
    fn kind(&self) -> &'static str;
    /// Returns `Some(payload)` when `node` is this codec's kind.
    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Result<Vec<u8>>>;
    /// Rebuilds the node from its payload and its already-decoded children.
    fn decode(
        &self,
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>>;
}

#[derive(Clone, PartialEq, Message)]
struct QuiverNode {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(bytes = "vec", tag = "2")]
    payload: Vec<u8>,
}

/// The codec both sides use; cheap to clone.
#[derive(Clone, Default)]
pub struct QuiverCodec {
    nodes: Arc<HashMap<&'static str, Arc<dyn NodeCodec>>>,
}

impl fmt::Debug for QuiverCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<_> = self.nodes.keys().collect();
        kinds.sort();
        f.debug_struct("QuiverCodec")
            .field("kinds", &kinds)
            .finish()
    }
}

impl QuiverCodec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node kind. A later registration of the same kind replaces the earlier one.
    pub fn with_node(mut self, codec: Arc<dyn NodeCodec>) -> Self {
        Arc::make_mut(&mut self.nodes).insert(codec.kind(), codec);
        self
    }
}

impl PhysicalExtensionCodec for QuiverCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = QuiverNode::decode(buf).map_err(|e| {
            datafusion::error::DataFusionError::Internal(format!("malformed Quiver plan node: {e}"))
        })?;
        match self.nodes.get(node.kind.as_str()) {
            Some(codec) => codec.decode(&node.payload, inputs, ctx),
            None => plan_err!(
                "this worker does not know the plan node kind '{}'",
                node.kind
            ),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        for codec in self.nodes.values() {
            if let Some(payload) = codec.encode(&node) {
                let wire = QuiverNode {
                    kind: codec.kind().to_string(),
                    payload: payload?,
                };
                wire.encode(buf)
                    .map_err(|e| datafusion::error::DataFusionError::Internal(e.to_string()))?;
                return Ok(());
            }
        }
        internal_err!("plan node {} cannot be sent to a worker", node.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };

    /// A stand-in for a Quiver node: PlaceholderRowExec is not what we test, the envelope is.
    struct PlaceholderCodec;

    impl NodeCodec for PlaceholderCodec {
        fn kind(&self) -> &'static str {
            "placeholder"
        }
        fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Result<Vec<u8>>> {
            node.as_ref()
                .downcast_ref::<EmptyExec>()
                .map(|e| Ok(e.schema().fields().len().to_le_bytes().to_vec()))
        }
        fn decode(
            &self,
            payload: &[u8],
            _: &[Arc<dyn ExecutionPlan>],
            _: &TaskContext,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            let n =
                usize::from_le_bytes(payload.try_into().map_err(|_| {
                    datafusion::error::DataFusionError::Internal("bad payload".into())
                })?);
            let fields: Vec<_> = (0..n)
                .map(|i| Field::new(format!("c{i}"), DataType::Int32, true))
                .collect();
            Ok(Arc::new(PlaceholderRowExec::new(Arc::new(Schema::new(
                fields,
            )))))
        }
    }

    #[test]
    fn unknown_nodes_are_refused_by_name() {
        let codec = QuiverCodec::new();
        let plan: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
        // EmptyExec is a built-in node, so this must round-trip without the codec.
        let bytes = physical_plan_to_bytes_with_extension_codec(plan, &codec).expect("encode");
        let ctx = TaskContext::default();
        let back =
            physical_plan_from_bytes_with_extension_codec(&bytes, &ctx, &codec).expect("decode");
        assert_eq!(back.name(), "EmptyExec");

        let wire = QuiverNode {
            kind: "nope".into(),
            payload: vec![],
        }
        .encode_to_vec();
        let conv = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        let err = codec.try_decode(&wire, &[], &ctx, &conv).unwrap_err();
        assert!(err.to_string().contains("'nope'"), "{err}");
    }

    #[test]
    fn registered_nodes_use_the_envelope() {
        let codec = QuiverCodec::new().with_node(Arc::new(PlaceholderCodec));
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        let node: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(schema));
        let conv = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        let mut buf = vec![];
        codec.try_encode(node, &mut buf, &conv).expect("encode");
        let back = codec
            .try_decode(&buf, &[], &TaskContext::default(), &conv)
            .expect("decode");
        assert_eq!(back.name(), "PlaceholderRowExec");
        assert_eq!(back.schema().fields().len(), 1);
    }
}
