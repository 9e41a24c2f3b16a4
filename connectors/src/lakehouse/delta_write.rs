//! Delta writes: the workers write the files, the coordinator commits once.
//!
//! An `INSERT`, `INSERT OVERWRITE` or `CREATE TABLE … AS` into a writable Delta
//! source is planned as [`DeltaCommitExec`] over [`DeltaWriteExec`]. Each partition
//! of the rows is one write task, sent to a worker like any fragment (the plan
//! codec carries it): deltalake's data-file writer writes Parquet files straight
//! into the table folder and the task answers with their `add` actions (path, size,
//! partition values, column statistics). The coordinator gathers every task's
//! actions and makes one commit: it creates the table, adds the files, or replaces
//! the old ones. A file of a failed or retried task is in no commit, so no reader
//! sees it (`VACUUM` removes it); a failed statement commits nothing. Workers
//! never read the log.

use std::fmt;
use std::sync::{Arc, Weak};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    collect_partitioned, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use deltalake_core::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake_core::kernel::transaction::CommitBuilder;
use deltalake_core::kernel::{Action, Add, StructType};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use futures::StreamExt;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use prost::Message;
use quiver_proto::NodeCodec;
use url::Url;

use quiver_proto::plan_nodes::single_child;

use super::LakeSchema;

/// What a statement does to its table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Create,
    Append,
    Overwrite,
}

/// The schema as Delta files hold it: string and binary views as plain strings
/// and binaries, nanosecond timestamps as microseconds (deltalake's own rule).
pub(crate) fn file_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
                t => t.clone(),
            };
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    let plain = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    deltalake_core::kernel::schema::cast::normalize_for_delta(&plain)
}

/// Columns of one write task's answer.
fn task_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rows", DataType::UInt64, false),
        Field::new("adds", DataType::Utf8, false),
    ]))
}

fn external(context: &str, e: impl fmt::Display) -> DataFusionError {
    DataFusionError::External(format!("{context}: {e}").into())
}

/// One write task per input partition: Parquet files into the table folder.
#[derive(Debug)]
pub struct DeltaWriteExec {
    input: Arc<dyn ExecutionPlan>,
    /// The table's folder, ending in `/`.
    table: Url,
    /// The table's columns as its files hold them (partition columns included).
    schema: SchemaRef,
    partition_columns: Vec<String>,
    props: Arc<PlanProperties>,
}

impl DeltaWriteExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        table: Url,
        schema: SchemaRef,
        partition_columns: Vec<String>,
    ) -> Self {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(task_schema()),
            Partitioning::UnknownPartitioning(input.properties().partitioning.partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            table,
            schema,
            partition_columns,
            props,
        }
    }

    /// deltalake's writer over the table folder of this task's store.
    fn writer(&self, ctx: &TaskContext) -> Result<DeltaWriter> {
        let store_url = ObjectStoreUrl::parse(&self.table[..url::Position::BeforePath])?;
        let root = ctx.runtime_env().object_store(&store_url)?;
        let prefix = object_store::path::Path::from_url_path(self.table.path())
            .map_err(|e| external("table folder", e))?;
        let store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(root, prefix));
        let config = WriterConfig::new(
            self.schema.clone(),
            self.partition_columns.clone(),
            None,
            None,
            None,
            delta_kernel::table_properties::DataSkippingNumIndexedCols::NumColumns(32),
            None,
        );
        Ok(DeltaWriter::new(store, config))
    }
}

/// `batch` with the columns of `schema` (views cast to plain types).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<std::result::Result<_, _>>()?;
    // Nullability as the rows have it: a NOT NULL table column may come from a
    // nullable expression that holds no NULL.
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| {
            f.as_ref()
                .clone()
                .with_nullable(f.is_nullable() || c.null_count() > 0)
        })
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )?)
}

impl DisplayAs for DeltaWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DeltaWriteExec: {}", self.table)
    }
}

impl ExecutionPlan for DeltaWriteExec {
    fn name(&self) -> &str {
        "DeltaWriteExec"
    }

    // One write task per partition as the rows come: no repartition in between,
    // which would keep the tasks off the workers.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(
            single_child("DeltaWriteExec", children)?,
            self.table.clone(),
            self.schema.clone(),
            self.partition_columns.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context.clone())?;
        let mut writer = self.writer(&context)?;
        let schema = self.schema.clone();
        let write = async move {
            let mut rows = 0u64;
            let mut failed = None;
            while let Some(batch) = input.next().await {
                let written = match batch.and_then(|b| conform(b, &schema)) {
                    Ok(b) => {
                        rows += b.num_rows() as u64;
                        writer
                            .write(&b)
                            .await
                            .map_err(|e| external("writing Delta files", e))
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(e) = failed {
                // Uploads under way are cancelled; finished files are in no commit.
                let _ = writer.abort().await;
                return Err(e);
            }
            let adds = writer
                .close()
                .await
                .map_err(|e| external("writing Delta files", e))?;
            let adds = serde_json::to_string(&adds).map_err(|e| external("add actions", e))?;
            Ok(RecordBatch::try_new(
                task_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![rows])),
                    Arc::new(StringArray::from(vec![adds])),
                ],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            task_schema(),
            futures::stream::once(write),
        )))
    }
}

/// The single commit of a statement's write tasks.
#[derive(Debug)]
pub(crate) struct DeltaCommit {
    pub name: String,
    pub url: Url,
    pub store: Arc<dyn ObjectStore>,
    /// The table's columns as its files hold them.
    pub schema: SchemaRef,
    pub mode: Mode,
    pub lake: Weak<LakeSchema>,
}

impl DeltaCommit {
    fn fail(&self, e: impl fmt::Display) -> DataFusionError {
        DataFusionError::External(format!("Delta table {}: {e}", self.name).into())
    }

    async fn commit(&self, adds: Vec<Add>) -> Result<()> {
        let builder = deltalake_core::DeltaTableBuilder::from_url(self.url.clone())
            .map_err(|e| self.fail(e))?
            .with_storage_backend(self.store.clone(), self.url.clone());
        let actions = adds.into_iter().map(Action::Add);
        match self.mode {
            Mode::Create => {
                use delta_kernel::engine::arrow_conversion::TryIntoKernel;
                let table = builder.build().map_err(|e| self.fail(e))?;
                let columns: StructType = self
                    .schema
                    .as_ref()
                    .try_into_kernel()
                    .map_err(|e| self.fail(e))?;
                CreateBuilder::new()
                    .with_log_store(table.log_store())
                    .with_table_name(self.name.clone())
                    .with_columns(columns.fields().cloned())
                    .with_save_mode(SaveMode::ErrorIfExists)
                    .with_actions(actions)
                    .await
                    .map_err(|e| self.fail(e))?;
            }
            Mode::Append | Mode::Overwrite => {
                let table = builder.load().await.map_err(|e| self.fail(e))?;
                let snapshot = table.snapshot().map_err(|e| self.fail(e))?;
                let mut actions: Vec<Action> = actions.collect();
                let mode = if self.mode == Mode::Overwrite {
                    actions.extend(
                        snapshot
                            .log_data()
                            .iter()
                            .map(|f| Action::Remove(f.remove_action(true))),
                    );
                    SaveMode::Overwrite
                } else {
                    SaveMode::Append
                };
                // Fails (and changes nothing) if a concurrent commit conflicts.
                CommitBuilder::default()
                    .with_actions(actions)
                    .build(
                        Some(snapshot),
                        table.log_store(),
                        DeltaOperation::Write {
                            mode,
                            partition_by: None,
                            predicate: None,
                        },
                    )
                    .await
                    .map_err(|e| self.fail(e))?;
            }
        }
        if let Some(lake) = self.lake.upgrade() {
            if self.mode == Mode::Create {
                lake.add_table(&self.name, self.url.clone());
            }
            lake.written(&self.name).await;
        }
        Ok(())
    }
}

/// Runs every write task, then commits their files once; answers the row count.
#[derive(Debug)]
pub(crate) struct DeltaCommitExec {
    input: Arc<dyn ExecutionPlan>,
    commit: Arc<DeltaCommit>,
    props: Arc<PlanProperties>,
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl DeltaCommitExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, commit: Arc<DeltaCommit>) -> Self {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            commit,
            props,
        }
    }
}

impl DisplayAs for DeltaCommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DeltaCommitExec: {:?} {}",
            self.commit.mode, self.commit.url
        )
    }
}

impl ExecutionPlan for DeltaCommitExec {
    fn name(&self) -> &str {
        "DeltaCommitExec"
    }

    // One write task per partition as the rows come: no repartition in between,
    // which would keep the tasks off the workers.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = single_child("DeltaCommitExec", children)?;
        Ok(Arc::new(Self::new(input, self.commit.clone())))
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (input, commit) = (self.input.clone(), self.commit.clone());
        let run = async move {
            let answers = collect_partitioned(input, context).await?;
            let (mut rows, mut adds) = (0u64, vec![]);
            for batch in answers.iter().flatten() {
                let counts = batch.column(0).as_primitive::<UInt64Type>();
                let files = batch.column(1).as_string::<i32>();
                for i in 0..batch.num_rows() {
                    rows += counts.value(i);
                    let task: Vec<Add> = serde_json::from_str(files.value(i))
                        .map_err(|e| commit.fail(format!("a write task's answer: {e}")))?;
                    adds.extend(task);
                }
            }
            commit.commit(adds).await?;
            Ok(RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(UInt64Array::from(vec![rows]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(run),
        )))
    }
}

#[derive(Clone, PartialEq, Message)]
struct DeltaWriteNode {
    #[prost(string, tag = "1")]
    table: String,
    /// datafusion-proto's Schema message.
    #[prost(bytes = "vec", tag = "2")]
    schema: Vec<u8>,
    #[prost(string, repeated, tag = "3")]
    partition_columns: Vec<String>,
}

/// Wire form of [`DeltaWriteExec`] for the plan codec.
#[derive(Debug, Default)]
pub struct DeltaWriteCodec;

impl NodeCodec for DeltaWriteCodec {
    fn kind(&self) -> &'static str {
        "delta_write"
    }

    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Result<Vec<u8>>> {
        let exec = node.as_ref().downcast_ref::<DeltaWriteExec>()?;
        let schema = datafusion_proto::protobuf::Schema::try_from(exec.schema.as_ref())
            .map_err(|e| DataFusionError::Internal(e.to_string()));
        Some(schema.map(|schema| {
            DeltaWriteNode {
                table: exec.table.to_string(),
                schema: schema.encode_to_vec(),
                partition_columns: exec.partition_columns.clone(),
            }
            .encode_to_vec()
        }))
    }

    fn decode(
        &self,
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let malformed =
            |e: &dyn fmt::Display| DataFusionError::Internal(format!("malformed Delta write: {e}"));
        let node = DeltaWriteNode::decode(payload).map_err(|e| malformed(&e))?;
        let schema = datafusion_proto::protobuf::Schema::decode(node.schema.as_slice())
            .map_err(|e| malformed(&e))?;
        let schema = Schema::try_from(&schema).map_err(|e| malformed(&e))?;
        let table = Url::parse(&node.table).map_err(|e| malformed(&e))?;
        let [input] = inputs else {
            return Err(malformed(&"it has one input"));
        };
        Ok(Arc::new(DeltaWriteExec::new(
            input.clone(),
            table,
            Arc::new(schema),
            node.partition_columns,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::empty::EmptyExec;

    #[test]
    fn file_schemas_hold_plain_strings() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("b", DataType::BinaryView, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let types: Vec<DataType> = file_schema(&schema)
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(types, [DataType::Utf8, DataType::Binary, DataType::Int64]);
    }

    #[test]
    fn write_tasks_round_trip_through_the_codec() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let input: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(schema.clone()));
        let table = Url::parse("file:///w/lake/t/").map_err(|e| external("url", e))?;
        let node: Arc<dyn ExecutionPlan> = Arc::new(DeltaWriteExec::new(
            input.clone(),
            table.clone(),
            schema.clone(),
            vec!["n".into()],
        ));
        let codec = DeltaWriteCodec;
        let bytes = codec
            .encode(&node)
            .ok_or_else(|| DataFusionError::Internal("not encoded".into()))??;
        let back = codec.decode(&bytes, &[input], &TaskContext::default())?;
        let back = back
            .as_ref()
            .downcast_ref::<DeltaWriteExec>()
            .ok_or_else(|| DataFusionError::Internal("another node".into()))?;
        assert_eq!(
            (&back.table, &back.schema, &back.partition_columns),
            (&table, &schema, &vec!["n".to_string()])
        );
        Ok(())
    }
}
