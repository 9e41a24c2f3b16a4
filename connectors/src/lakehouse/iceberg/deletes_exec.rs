//! [`IcebergDeletesExec`]: a scan of data files with merge-on-read deletes applied,
//! and its wire form ([`IcebergDeletesCodec`]) so that workers run it.
//!
//! Position deletes become a row selection on each data file: DataFusion's
//! Parquet reader skips those rows as it skips rows for a page index, so they cost
//! nothing per row. Equality deletes are sets of key rows: a scanned row whose key
//! columns equal one of them (NULL equal to NULL, as the spec says) is dropped.
//! The coordinator reads the delete files when it plans ([`super::deletes`]); the
//! node carries what they say to the worker that runs it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::internal_err;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use prost::Message;
use quiver_proto::plan_nodes::single_child;
use quiver_proto::NodeCodec;

/// The deleted rows of one data file.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePositions {
    /// The file's row count (a row selection must cover every row).
    pub rows: u64,
    /// Deleted row positions, ascending, each below `rows`.
    pub deleted: Vec<u64>,
}

impl FilePositions {
    /// The rows to read: runs of kept rows between the deleted ones.
    fn selection(&self) -> RowSelection {
        let mut selectors = vec![];
        let mut next = 0u64;
        for &pos in &self.deleted {
            if pos < next || pos >= self.rows {
                continue;
            }
            if pos > next {
                selectors.push(RowSelector::select((pos - next) as usize));
            }
            selectors.push(RowSelector::skip(1));
            next = pos + 1;
        }
        if next < self.rows {
            selectors.push(RowSelector::select((self.rows - next) as usize));
        }
        RowSelection::from(selectors)
    }
}

/// Rows whose `columns` (positions in the scan's output) equal a row of `keys`.
#[derive(Debug, Clone)]
pub struct EqualityKeys {
    pub columns: Vec<usize>,
    pub keys: RecordBatch,
}

/// A file scan (`DataSourceExec`) without its deleted rows.
#[derive(Debug)]
pub struct IcebergDeletesExec {
    input: Arc<dyn ExecutionPlan>,
    /// By object-store location of the data file.
    positions: Arc<BTreeMap<String, FilePositions>>,
    equality: Arc<Vec<EqualityKeys>>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl IcebergDeletesExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        positions: BTreeMap<String, FilePositions>,
        equality: Vec<EqualityKeys>,
    ) -> Self {
        Self::with_parts(input, Arc::new(positions), Arc::new(equality))
    }

    fn with_parts(
        input: Arc<dyn ExecutionPlan>,
        positions: Arc<BTreeMap<String, FilePositions>>,
        equality: Arc<Vec<EqualityKeys>>,
    ) -> Self {
        // Deleting rows keeps the input's partitions, order and bounds.
        let props = Arc::new(input.properties().as_ref().clone());
        Self {
            input,
            positions,
            equality,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The input with each file's deleted positions as its row selection, in every
    /// file scan under it (the optimizer may have put a repartition in between).
    fn selected_input(&self) -> Result<Arc<dyn ExecutionPlan>> {
        if self.positions.is_empty() {
            return Ok(self.input.clone());
        }
        let selected = self.input.clone().transform_down(|node| {
            let Some(config) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|d| d.data_source().downcast_ref::<FileScanConfig>())
            else {
                return Ok(Transformed::no(node));
            };
            let groups: Vec<FileGroup> = config
                .file_groups
                .iter()
                .map(|group| {
                    let files = group.files().iter().map(|file| {
                        let mut file = file.clone();
                        if let Some(p) = self.positions.get(file.object_meta.location.as_ref()) {
                            file.extensions
                                .insert(ParquetRowSelection::new(p.selection()));
                        }
                        file
                    });
                    FileGroup::new(files.collect())
                })
                .collect();
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(groups)
                .build();
            let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
            Ok(Transformed::new(scan, true, TreeNodeRecursion::Jump))
        })?;
        if !selected.transformed {
            return internal_err!(
                "Iceberg position deletes apply to a file scan, and there is none under {}",
                self.input.name()
            );
        }
        Ok(selected.data)
    }
}

/// One set of equality keys, ready to probe.
struct KeySet {
    columns: Vec<usize>,
    converter: RowConverter,
    keys: HashSet<Box<[u8]>>,
}

impl KeySet {
    fn new(eq: &EqualityKeys, input: &datafusion::arrow::datatypes::Schema) -> Result<Self> {
        let types: Vec<_> = eq
            .columns
            .iter()
            .map(|&i| input.field(i).data_type().clone())
            .collect();
        let converter = RowConverter::new(types.iter().cloned().map(SortField::new).collect())?;
        // The keys are read with the table's types; cast in case the scan's differ.
        let columns: Vec<ArrayRef> = eq
            .keys
            .columns()
            .iter()
            .zip(&types)
            .map(|(c, t)| cast(c, t))
            .collect::<std::result::Result<_, _>>()?;
        let rows = converter.convert_columns(&columns)?;
        let keys = rows.iter().map(|r| r.as_ref().into()).collect();
        Ok(Self {
            columns: eq.columns.clone(),
            converter,
            keys,
        })
    }

    fn keep(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.convert_columns(&columns)?;
        Ok(rows
            .iter()
            .map(|r| Some(!self.keys.contains(r.as_ref())))
            .collect())
    }
}

impl DisplayAs for IcebergDeletesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let deleted: usize = self.positions.values().map(|p| p.deleted.len()).sum();
        let keys: usize = self.equality.iter().map(|e| e.keys.num_rows()).sum();
        write!(
            f,
            "IcebergDeletesExec: position deletes in {} files ({deleted} rows), \
             equality deletes {} sets ({keys} keys)",
            self.positions.len(),
            self.equality.len()
        )
    }
}

impl ExecutionPlan for IcebergDeletesExec {
    fn name(&self) -> &str {
        "IcebergDeletesExec"
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
        Ok(Arc::new(Self::with_parts(
            single_child("IcebergDeletesExec", children)?,
            self.positions.clone(),
            self.equality.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.selected_input()?.execute(partition, context)?;
        let schema = input.schema();
        let sets = self
            .equality
            .iter()
            .map(|eq| KeySet::new(eq, &schema))
            .collect::<Result<Vec<_>>>()?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let rows = input.map(move |batch| {
            let mut batch = batch?;
            for set in &sets {
                batch = filter_record_batch(&batch, &set.keep(&batch)?)?;
            }
            baseline.record_output(batch.num_rows());
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    // Filters commute with deleting rows: let them reach the scan for pruning.
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }
}

#[derive(Clone, PartialEq, Message)]
struct DeletesNode {
    #[prost(message, repeated, tag = "1")]
    files: Vec<FileNode>,
    #[prost(message, repeated, tag = "2")]
    equality: Vec<EqualityNode>,
}

#[derive(Clone, PartialEq, Message)]
struct FileNode {
    #[prost(string, tag = "1")]
    location: String,
    #[prost(uint64, tag = "2")]
    rows: u64,
    #[prost(uint64, repeated, tag = "3")]
    deleted: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct EqualityNode {
    #[prost(uint32, repeated, tag = "1")]
    columns: Vec<u32>,
    /// The keys as one Arrow IPC stream.
    #[prost(bytes = "vec", tag = "2")]
    keys: Vec<u8>,
}

/// Wire form of [`IcebergDeletesExec`] for the plan codec.
#[derive(Debug, Default)]
pub struct IcebergDeletesCodec;

fn to_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = vec![];
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

fn from_ipc(bytes: &[u8]) -> Result<RecordBatch> {
    let reader = StreamReader::try_new(bytes, None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?)
}

impl NodeCodec for IcebergDeletesCodec {
    fn kind(&self) -> &'static str {
        "iceberg_deletes"
    }

    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Result<Vec<u8>>> {
        let exec = node.as_ref().downcast_ref::<IcebergDeletesExec>()?;
        let encode = || -> Result<Vec<u8>> {
            let equality = exec
                .equality
                .iter()
                .map(|e| {
                    Ok(EqualityNode {
                        columns: e.columns.iter().map(|&c| c as u32).collect(),
                        keys: to_ipc(&e.keys)?,
                    })
                })
                .collect::<Result<_>>()?;
            let files = exec
                .positions
                .iter()
                .map(|(location, p)| FileNode {
                    location: location.clone(),
                    rows: p.rows,
                    deleted: p.deleted.clone(),
                })
                .collect();
            Ok(DeletesNode { files, equality }.encode_to_vec())
        };
        Some(encode())
    }

    fn decode(
        &self,
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let malformed = |e: &dyn fmt::Display| {
            DataFusionError::Internal(format!("malformed Iceberg deletes node: {e}"))
        };
        let node = DeletesNode::decode(payload).map_err(|e| malformed(&e))?;
        let [input] = inputs else {
            return Err(malformed(&"it has one input"));
        };
        let positions = node
            .files
            .into_iter()
            .map(|f| {
                (
                    f.location,
                    FilePositions {
                        rows: f.rows,
                        deleted: f.deleted,
                    },
                )
            })
            .collect();
        let equality = node
            .equality
            .into_iter()
            .map(|e| {
                Ok(EqualityKeys {
                    columns: e.columns.into_iter().map(|c| c as usize).collect(),
                    keys: from_ipc(&e.keys)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Arc::new(IcebergDeletesExec::new(
            input.clone(),
            positions,
            equality,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::empty::EmptyExec;

    #[test]
    fn positions_become_a_selection_of_every_row() {
        let p = FilePositions {
            rows: 10,
            deleted: vec![0, 3, 4, 9, 12],
        };
        let selectors: Vec<RowSelector> = p.selection().into();
        assert_eq!(
            selectors,
            vec![
                RowSelector::skip(1),
                RowSelector::select(2),
                RowSelector::skip(2),
                RowSelector::select(4),
                RowSelector::skip(1),
            ]
        );
        let total: usize = selectors.iter().map(|s| s.row_count).sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn equality_keys_match_nulls_and_drop_rows() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let keys = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec![Some("b"), None]))],
        )?;
        let set = KeySet::new(
            &EqualityKeys {
                columns: vec![1],
                keys,
            },
            &schema,
        )?;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("c"),
                ])),
            ],
        )?;
        let kept = filter_record_batch(&batch, &set.keep(&batch)?)?;
        let ids = kept.column(0).as_any().downcast_ref::<Int64Array>();
        assert_eq!(ids.map(|a| a.values().to_vec()), Some(vec![1, 4]));
        Ok(())
    }

    #[test]
    fn the_node_round_trips_through_the_codec() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let keys =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![5, 6]))])?;
        let mut positions = BTreeMap::new();
        positions.insert(
            "w/t/data/a.parquet".to_string(),
            FilePositions {
                rows: 8,
                deleted: vec![1, 2],
            },
        );
        let input: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(schema));
        let node: Arc<dyn ExecutionPlan> = Arc::new(IcebergDeletesExec::new(
            input.clone(),
            positions.clone(),
            vec![EqualityKeys {
                columns: vec![0],
                keys: keys.clone(),
            }],
        ));
        let codec = IcebergDeletesCodec;
        let bytes = codec
            .encode(&node)
            .ok_or_else(|| DataFusionError::Internal("not encoded".into()))??;
        let back = codec.decode(&bytes, &[input], &TaskContext::default())?;
        let back = back
            .as_ref()
            .downcast_ref::<IcebergDeletesExec>()
            .ok_or_else(|| DataFusionError::Internal("another node".into()))?;
        assert_eq!(*back.positions, positions);
        assert_eq!(back.equality[0].columns, vec![0]);
        assert_eq!(back.equality[0].keys, keys);
        Ok(())
    }
}
