//! Wire form of the exchange nodes, for [`quiver_proto::QuiverCodec`].

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
use datafusion_proto::protobuf::PhysicalExprNode;
use prost::Message;
use quiver_proto::NodeCodec;

use super::read::{ShuffleLocation, ShuffleReadExec};
use super::write::{ShuffleOutput, ShuffleWriteExec};

#[derive(Clone, PartialEq, Message)]
struct ShuffleWriteNode {
    #[prost(uint32, tag = "1")]
    stage: u32,
    #[prost(uint32, tag = "2")]
    partitions: u32,
    /// Empty for a single-partition output.
    #[prost(message, repeated, tag = "3")]
    hash: Vec<PhysicalExprNode>,
    /// The streamed output's key; empty for an output written to files.
    #[prost(string, tag = "4")]
    stream_key: String,
    /// Report a summary of the hash keys, listing at most this many values.
    #[prost(uint64, optional, tag = "5")]
    key_summary: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct ShuffleReadNode {
    #[prost(uint32, tag = "1")]
    stage: u32,
    #[prost(uint32, tag = "2")]
    partitions: u32,
    /// A datafusion-proto `Schema`.
    #[prost(bytes = "vec", tag = "3")]
    schema: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    locations: Vec<LocationNode>,
    /// Keys of a hash-partitioned read; empty otherwise.
    #[prost(message, repeated, tag = "5")]
    hash: Vec<PhysicalExprNode>,
}

#[derive(Clone, PartialEq, Message)]
struct LocationNode {
    #[prost(string, tag = "1")]
    address: String,
    #[prost(string, tag = "2")]
    key: String,
    /// A streamed output (read once, while it is produced), not a file.
    #[prost(bool, tag = "3")]
    stream: bool,
}

/// Hash keys are plain column expressions: DataFusion's own codec carries them.
fn encode_exprs(exprs: &[Arc<dyn PhysicalExpr>]) -> Result<Vec<PhysicalExprNode>> {
    exprs
        .iter()
        .map(|e| serialize_physical_expr(e, &DefaultPhysicalExtensionCodec {}))
        .collect()
}

fn decode_exprs(
    nodes: &[PhysicalExprNode],
    ctx: &TaskContext,
    schema: &Schema,
) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
    nodes
        .iter()
        .map(|e| parse_physical_expr(e, ctx, schema, &DefaultPhysicalExtensionCodec {}))
        .collect()
}

fn malformed(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("malformed {what}: {e}"))
}

/// Codec of [`ShuffleWriteExec`] ("shuffle_write").
pub struct ShuffleWriteCodec;

impl NodeCodec for ShuffleWriteCodec {
    fn kind(&self) -> &'static str {
        "shuffle_write"
    }

    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Result<Vec<u8>>> {
        let write = node.as_ref().downcast_ref::<ShuffleWriteExec>()?;
        let hash = match write.output() {
            ShuffleOutput::Hash(exprs, _) => match encode_exprs(exprs) {
                Ok(h) => h,
                Err(e) => return Some(Err(e)),
            },
            ShuffleOutput::Single => vec![],
        };
        let partitions = write.output().partitions() as u32;
        Some(Ok(ShuffleWriteNode {
            stage: write.stage(),
            partitions,
            hash,
            stream_key: write.stream_key().unwrap_or_default().to_string(),
            key_summary: write.key_summary().map(|n| n as u64),
        }
        .encode_to_vec()))
    }

    fn decode(
        &self,
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = ShuffleWriteNode::decode(payload).map_err(|e| malformed("shuffle write", e))?;
        let [input] = inputs else {
            return Err(malformed("shuffle write", "it needs one input"));
        };
        let output = if node.hash.is_empty() {
            ShuffleOutput::Single
        } else {
            ShuffleOutput::Hash(
                decode_exprs(&node.hash, ctx, &input.schema())?,
                node.partitions as usize,
            )
        };
        let mut write = ShuffleWriteExec::new(node.stage, input.clone(), output);
        if let Some(max) = node.key_summary {
            write = write.with_key_summary(usize::try_from(max).unwrap_or(usize::MAX));
        }
        Ok(Arc::new(if node.stream_key.is_empty() {
            write
        } else {
            write.streamed(node.stream_key)
        }))
    }
}

/// Codec of [`ShuffleReadExec`] ("shuffle_read").
pub struct ShuffleReadCodec;

impl NodeCodec for ShuffleReadCodec {
    fn kind(&self) -> &'static str {
        "shuffle_read"
    }

    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Result<Vec<u8>>> {
        let read = node.as_ref().downcast_ref::<ShuffleReadExec>()?;
        let schema = match datafusion_proto::protobuf::Schema::try_from(read.schema().as_ref()) {
            Ok(s) => s.encode_to_vec(),
            Err(e) => return Some(Err(malformed("exchange schema", e))),
        };
        let locations = read
            .locations()
            .iter()
            .map(|l| LocationNode {
                address: l.address.clone(),
                key: l.key.clone(),
                stream: l.stream,
            })
            .collect();
        let hash = match read.partitioning() {
            Partitioning::Hash(exprs, _) => match encode_exprs(exprs) {
                Ok(h) => h,
                Err(e) => return Some(Err(e)),
            },
            _ => vec![],
        };
        Some(Ok(ShuffleReadNode {
            stage: read.stage(),
            partitions: read.partitions() as u32,
            schema,
            locations,
            hash,
        }
        .encode_to_vec()))
    }

    fn decode(
        &self,
        payload: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = ShuffleReadNode::decode(payload).map_err(|e| malformed("shuffle read", e))?;
        let schema = datafusion_proto::protobuf::Schema::decode(node.schema.as_slice())
            .map_err(|e| malformed("exchange schema", e))?;
        let schema = Schema::try_from(&schema).map_err(|e| malformed("exchange schema", e))?;
        let partitioning = if node.hash.is_empty() {
            Partitioning::UnknownPartitioning(node.partitions as usize)
        } else {
            Partitioning::Hash(
                decode_exprs(&node.hash, ctx, &schema)?,
                node.partitions as usize,
            )
        };
        let locations = node
            .locations
            .into_iter()
            .map(|l| ShuffleLocation {
                address: l.address,
                key: l.key,
                stream: l.stream,
            })
            .collect();
        Ok(Arc::new(ShuffleReadExec::with_locations(
            node.stage,
            Arc::new(schema),
            partitioning,
            locations,
        )))
    }
}
