//! [`WriteFilesExec`]: one task of a distributed file write.
//!
//! Each input partition is written by the worker that runs it, straight to the
//! target's store, but under the statement's *staging* folder, in a folder of its
//! own per attempt (`<staging>/task-<partition>-<uuid>/`). A retried or
//! cancelled attempt therefore never mixes with another one. The task answers
//! with one row: the rows written, its folder and the files in it; the
//! coordinator's commit publishes exactly those files once every task succeeded
//! (see `quiver_coordinator::writes`).
//!
//! Writing itself is DataFusion's: the task rebuilds the statement's file sink
//! (Parquet, CSV or JSON, with its options and hive partition columns) pointed at
//! its own folder.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::not_impl_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::json::JsonSink;
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileOutputMode, FileSink, FileSinkConfig};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quiver_proto::plan_nodes::single_child;
use quiver_proto::NodeCodec;

/// Columns of a write task's answer.
pub fn task_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rows", DataType::UInt64, false),
        Field::new("folder", DataType::Utf8, false),
        Field::new("files", DataType::Utf8, false),
    ]))
}

/// Writes each input partition under the statement's staging folder.
#[derive(Debug)]
pub struct WriteFilesExec {
    input: Arc<dyn ExecutionPlan>,
    /// The statement's sink (over an empty input): format, options, partition columns.
    template: Arc<dyn ExecutionPlan>,
    /// `<store>/<root>/.quiver-staging/<statement>/`.
    staging: String,
    properties: Arc<PlanProperties>,
}

impl WriteFilesExec {
    /// `sink` is the `DataSinkExec` DataFusion planned for the statement; its input
    /// is replaced by `input`, whose partitions become the write tasks.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        sink: &DataSinkExec,
        staging: String,
    ) -> Result<Self> {
        file_sink(sink.sink())?;
        let template = DataSinkExec::new(
            Arc::new(EmptyExec::new(sink.input().schema())),
            Arc::from(rebuild(sink.sink(), None)?),
            None,
        );
        Ok(Self::with_template(input, Arc::new(template), staging))
    }

    fn with_template(
        input: Arc<dyn ExecutionPlan>,
        template: Arc<dyn ExecutionPlan>,
        staging: String,
    ) -> Self {
        let partitions = input.properties().partitioning.partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(task_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            template,
            staging,
            properties,
        }
    }

    pub fn staging(&self) -> &str {
        &self.staging
    }

    /// The statement's file sink configuration (its target, format and partitioning).
    pub fn config(&self) -> Result<&FileSinkConfig> {
        Ok(file_sink(template_sink(&self.template)?)?.config())
    }
}

fn template_sink(template: &Arc<dyn ExecutionPlan>) -> Result<&dyn DataSink> {
    template
        .as_ref()
        .downcast_ref::<DataSinkExec>()
        .map(|d| d.sink())
        .ok_or_else(|| {
            DataFusionError::Internal("a write task's sink is not a DataSinkExec".into())
        })
}

/// The configuration of a sink that writes files Quiver can distribute (None for
/// any other sink, such as a database's).
pub fn file_sink_config(sink: &DataSinkExec) -> Option<&FileSinkConfig> {
    file_sink(sink.sink()).ok().map(|s| s.config())
}

/// The sink as a file sink, if it is one Quiver can distribute.
fn file_sink(sink: &dyn DataSink) -> Result<&dyn FileSink> {
    if let Some(s) = sink.downcast_ref::<ParquetSink>() {
        return Ok(s);
    }
    if let Some(s) = sink.downcast_ref::<CsvSink>() {
        return Ok(s);
    }
    if let Some(s) = sink.downcast_ref::<JsonSink>() {
        return Ok(s);
    }
    not_impl_err!("writing files through {sink:?} (only Parquet, CSV and JSON can be written)")
}

/// The same file write, but one that replaces the files the target has (`INSERT
/// OVERWRITE`, ingest's replace): DataFusion's own sinks only append, so the
/// commit removes the old files once the new ones are in.
pub fn replacing(sink: &DataSinkExec) -> Result<DataSinkExec> {
    let rebuilt = with_config(sink.sink(), |c| c.insert_op = InsertOp::Overwrite)?;
    Ok(DataSinkExec::new(
        sink.input().clone(),
        Arc::from(rebuilt),
        None,
    ))
}

/// The same sink writing to `folder` (a directory, whatever the statement's target
/// was) instead of its own target; `None` keeps the target.
fn rebuild(sink: &dyn DataSink, folder: Option<&str>) -> Result<Box<dyn DataSink>> {
    let folder = folder.map(ListingTableUrl::parse).transpose()?;
    with_config(sink, |config| {
        if let Some(folder) = folder {
            config.original_url = folder.as_str().to_string();
            config.table_paths = vec![folder];
            config.file_group = Default::default();
            config.insert_op = InsertOp::Append;
            config.file_output_mode = FileOutputMode::Directory;
            config.output_schema = plain_schema(&config.output_schema);
        }
    })
}

/// String and binary views written as plain strings and binaries: files of one
/// table then agree on their types whether their rows came from a client, a
/// Parquet scan (which reads views) or a database.
fn plain_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    }
}

fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match plain_type(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn plain_batches(input: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = plain_schema(&input.schema());
    if schema == input.schema() {
        return input;
    }
    let target = schema.clone();
    let stream = input.map(move |batch| {
        let batch = batch?;
        let columns = batch
            .columns()
            .iter()
            .map(|c| match plain_type(c.data_type()) {
                Some(t) => datafusion::arrow::compute::cast(c, &t),
                None => Ok(c.clone()),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(target.clone(), columns)?)
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

fn with_config(
    sink: &dyn DataSink,
    change: impl FnOnce(&mut FileSinkConfig),
) -> Result<Box<dyn DataSink>> {
    let mut config = file_sink(sink)?.config().clone();
    change(&mut config);
    if let Some(s) = sink.downcast_ref::<ParquetSink>() {
        return Ok(Box::new(ParquetSink::new(
            config,
            s.parquet_options().clone(),
        )));
    }
    if let Some(s) = sink.downcast_ref::<CsvSink>() {
        return Ok(Box::new(CsvSink::new(config, s.writer_options().clone())));
    }
    if let Some(s) = sink.downcast_ref::<JsonSink>() {
        return Ok(Box::new(JsonSink::new(config, s.writer_options().clone())));
    }
    Err(DataFusionError::NotImplemented(
        "this file format cannot be written".into(),
    ))
}

impl DisplayAs for WriteFilesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let target = self
            .config()
            .map(|c| c.original_url.clone())
            .unwrap_or_default();
        write!(
            f,
            "WriteFilesExec: target={target}, tasks={}",
            self.properties.partitioning.partition_count()
        )
    }
}

impl ExecutionPlan for WriteFilesExec {
    fn name(&self) -> &str {
        "WriteFilesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = single_child("WriteFilesExec", children)?;
        Ok(Arc::new(Self::with_template(
            input,
            self.template.clone(),
            self.staging.clone(),
        )))
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let folder = format!(
            "{}task-{partition}-{}/",
            self.staging,
            uuid::Uuid::new_v4().simple()
        );
        let sink = rebuild(template_sink(&self.template)?, Some(&folder))?;
        let input = plain_batches(self.input.execute(partition, context.clone())?);
        let url = ListingTableUrl::parse(&folder)?;
        let store = context.runtime_env().object_store(&url)?;
        let work = async move {
            let rows = sink.write_all(input, &context).await?;
            let prefix = url.prefix().clone();
            let mut files: Vec<String> = store
                .list(Some(&prefix))
                .map_ok(|o| {
                    o.location
                        .as_ref()
                        .strip_prefix(prefix.as_ref())
                        .unwrap_or(o.location.as_ref())
                        .trim_start_matches('/')
                        .to_string()
                })
                .try_collect()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            files.sort();
            tracing::debug!(%folder, rows, files = files.len(), "write task finished");
            let columns: Vec<ArrayRef> = vec![
                Arc::new(UInt64Array::from(vec![rows])),
                Arc::new(StringArray::from(vec![folder])),
                Arc::new(StringArray::from(vec![files.join("\n")])),
            ];
            Ok(RecordBatch::try_new(task_schema(), columns)?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            task_schema(),
            futures::stream::once(work).boxed(),
        )))
    }
}

#[derive(Clone, PartialEq, Message)]
struct WriteFilesNode {
    /// A datafusion-proto `DataSinkExec` over an empty input.
    #[prost(bytes = "vec", tag = "1")]
    template: Vec<u8>,
    #[prost(string, tag = "2")]
    staging: String,
}

/// Codec of [`WriteFilesExec`] ("write_files").
pub struct WriteFilesCodec;

impl NodeCodec for WriteFilesCodec {
    fn kind(&self) -> &'static str {
        "write_files"
    }

    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Result<Vec<u8>>> {
        let write = node.as_ref().downcast_ref::<WriteFilesExec>()?;
        Some(
            physical_plan_to_bytes_with_extension_codec(
                write.template.clone(),
                &DefaultPhysicalExtensionCodec {},
            )
            .map(|t| {
                WriteFilesNode {
                    template: t.to_vec(),
                    staging: write.staging.clone(),
                }
                .encode_to_vec()
            }),
        )
    }

    fn decode(
        &self,
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let malformed =
            |e: &dyn fmt::Display| DataFusionError::Internal(format!("malformed write task: {e}"));
        let node = WriteFilesNode::decode(payload).map_err(|e| malformed(&e))?;
        let [input] = inputs else {
            return Err(malformed(&"it needs one input"));
        };
        let template = physical_plan_from_bytes_with_extension_codec(
            &node.template,
            ctx,
            &DefaultPhysicalExtensionCodec {},
        )?;
        file_sink(template_sink(&template)?)?;
        Ok(Arc::new(WriteFilesExec::with_template(
            input.clone(),
            template,
            node.staging,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// A COPY planned by DataFusion becomes write tasks that survive the wire and
    /// write each partition into its own folder under the staging prefix.
    #[tokio::test]
    async fn tasks_write_their_partitions_under_staging() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| DataFusionError::External(Box::new(e)))?;
        let target = format!("{}/out/", dir.path().display());
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_target_partitions(3),
        );
        let sql = format!(
            "COPY (SELECT * FROM generate_series(1, 3000) AS t(v)) TO '{target}' STORED AS PARQUET"
        );
        let plan = ctx.sql(&sql).await?.create_physical_plan().await?;
        let sink = plan
            .as_ref()
            .downcast_ref::<DataSinkExec>()
            .expect("COPY plans a DataSinkExec");
        let staging = format!("file://{}/.quiver-staging/s1/", dir.path().display());
        let exec: Arc<dyn ExecutionPlan> = Arc::new(WriteFilesExec::try_new(
            sink.input().clone(),
            sink,
            staging.clone(),
        )?);
        let codec = quiver_proto::QuiverCodec::new().with_node(Arc::new(WriteFilesCodec));
        let bytes = physical_plan_to_bytes_with_extension_codec(exec, &codec)?;
        let back = physical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &codec)?;
        let mut total = 0;
        for p in 0..back.properties().partitioning.partition_count() {
            let batches: Vec<RecordBatch> = back.execute(p, ctx.task_ctx())?.try_collect().await?;
            let rows = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .expect("rows")
                .value(0);
            let folder = batches[0]
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("folder")
                .value(0)
                .to_string();
            assert!(
                folder.starts_with(&staging) && folder.contains(&format!("task-{p}-")),
                "{folder}"
            );
            total += rows;
        }
        assert_eq!(total, 3000);
        assert!(
            !std::path::Path::new(&target).exists(),
            "nothing is written to the target before the commit"
        );
        Ok(())
    }
}
