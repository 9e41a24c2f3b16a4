//! One Iceberg snapshot as a DataFusion table: its live files, pruned by the
//! query's filters, read by DataFusion's own Parquet scan.
//!
//! Columns are matched to files by Iceberg field id, not by name: files written
//! before a column was renamed are scanned under their old names and renamed back,
//! and a column added later is absent from older files and reads NULL. Each group
//! of files with the same names is one plain `DataSourceExec`, so the distributed
//! planner splits them across workers like any Parquet scan.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::Statistics;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;

use super::deletes::{applies, DeleteCache};
use super::deletes_exec::{EqualityKeys, FilePositions, IcebergDeletesExec};
use super::manifests::{to_url, Content, DataFile};
use super::metadata::{IcebergSchema, TableMetadata};
use super::pruning::FileStatistics;

/// The files of one snapshot, ready to scan.
#[derive(Debug)]
pub struct IcebergTable {
    pub(super) name: String,
    pub(super) metadata: Arc<TableMetadata>,
    pub(super) schema: IcebergSchema,
    pub(super) arrow: SchemaRef,
    /// Data and delete files.
    pub(super) files: Vec<DataFile>,
    pub(super) deletes: Arc<DeleteCache>,
    /// Per column, over every data file (from the manifests' bounds).
    pub(super) columns: Vec<datafusion::common::ColumnStatistics>,
}

impl IcebergTable {
    /// Column statistics over every data file, for [`Self::columns`].
    pub(super) fn column_statistics(&self) -> Vec<datafusion::common::ColumnStatistics> {
        let data: Vec<&DataFile> = self
            .files
            .iter()
            .filter(|f| f.content == Content::Data)
            .collect();
        let stats = FileStatistics {
            files: &data,
            schema: &self.schema,
            arrow: &self.arrow,
            metadata: &self.metadata,
        };
        crate::lakehouse::column_statistics(&stats, &self.arrow)
    }

    /// Refuses what this reader cannot read correctly, naming the table and why.
    pub(super) fn check(&self) -> std::result::Result<(), String> {
        if let Some(f) = self
            .files
            .iter()
            .find(|f| !f.format.eq_ignore_ascii_case("parquet"))
        {
            let what = match f.content {
                Content::Data => "data file",
                _ => "delete file",
            };
            return Err(format!(
                "{what} {} is {}; only Parquet data and delete files are read (not v3 \
                 deletion vectors)",
                f.path, f.format
            ));
        }
        Ok(())
    }

    /// The data files that may hold rows passing `predicate` (the query's filters).
    fn prune(&self, predicate: Option<&Arc<dyn PhysicalExpr>>) -> Vec<&DataFile> {
        let all: Vec<&DataFile> = self
            .files
            .iter()
            .filter(|f| f.content == Content::Data)
            .collect();
        let Some(predicate) = predicate.cloned() else {
            return all;
        };
        let Some(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(self.arrow.clone())
            .build(predicate)
        else {
            return all;
        };
        let stats = FileStatistics {
            files: &all,
            schema: &self.schema,
            arrow: &self.arrow,
            metadata: &self.metadata,
        };
        match pruning.prune(&stats) {
            Ok(keep) => all
                .iter()
                .zip(keep)
                .filter_map(|(f, k)| k.then_some(*f))
                .collect(),
            Err(e) => {
                tracing::debug!(table = %self.name, error = %e, "no file pruning");
                all
            }
        }
    }

    /// The columns of an equality delete file: the fields `ids`, under the names
    /// the delete file's writer gave them.
    fn key_schema(&self, delete: &DataFile, ids: &[i32]) -> SchemaRef {
        let fields: Vec<Field> = ids
            .iter()
            .filter_map(|id| {
                let at = self.schema.fields.iter().position(|f| f.id == *id)?;
                let field = self.arrow.field(at).clone();
                Some(match delete.writer_names.get(id) {
                    Some(name) => field.with_name(name),
                    None => field,
                })
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The file schema of files written with `names` (field id → name then).
    fn renamed(&self, names: &[String]) -> SchemaRef {
        let fields: Vec<Field> = self
            .arrow
            .fields()
            .iter()
            .zip(names)
            .map(|(f, n)| f.as_ref().clone().with_name(n))
            .collect();
        Arc::new(Schema::new_with_metadata(
            fields,
            self.arrow.metadata().clone(),
        ))
    }
}

#[async_trait]
impl TableProvider for IcebergTable {
    fn schema(&self) -> SchemaRef {
        self.arrow.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used to skip files and row groups; DataFusion still applies every filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    fn statistics(&self) -> Option<Statistics> {
        let mut stats = self.stats(self.files.iter().filter(|f| f.content == Content::Data));
        if self.files.iter().any(|f| f.content != Content::Data) {
            stats.num_rows = stats.num_rows.to_inexact();
        }
        Some(stats)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let external = |e: String| {
            DataFusionError::External(format!("Iceberg table {}: {e}", self.name).into())
        };
        self.check().map_err(external)?;
        let predicate = crate::lakehouse::physical_filter(state, filters, &self.arrow);
        let files = self.prune(predicate.as_ref());
        let deletes: Vec<&DataFile> = self
            .files
            .iter()
            .filter(|f| f.content != Content::Data)
            .collect();
        let current: Vec<String> = self
            .arrow
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        // Files grouped by (store, the names their columns had when written, the
        // equality delete files that apply to them).
        type Key = (String, Vec<String>, Vec<usize>);
        let mut groups: BTreeMap<Key, Vec<&DataFile>> = BTreeMap::new();
        for file in files {
            let url = to_url(&file.path).map_err(|e| DataFusionError::External(e.into()))?;
            let store = url[..url::Position::BeforePath].to_string();
            let names = self
                .schema
                .fields
                .iter()
                .map(|f| {
                    file.writer_names
                        .get(&f.id)
                        .cloned()
                        .unwrap_or_else(|| f.name.clone())
                })
                .collect();
            let equality = deletes
                .iter()
                .enumerate()
                .filter(|(_, d)| d.content == Content::EqualityDeletes && applies(d, file))
                .map(|(i, _)| i)
                .collect();
            groups
                .entry((store, names, equality))
                .or_default()
                .push(file);
        }
        let options = state.table_options().parquet.clone();
        let partitions = state.config().target_partitions().max(1);
        let mut scans: Vec<Arc<dyn ExecutionPlan>> = vec![];
        for ((store, names, equality), files) in groups {
            let mut positions = BTreeMap::new();
            for file in &files {
                let deleted = self.deletes.positions(state, file, &deletes).await?;
                if !deleted.is_empty() {
                    positions.insert(
                        location(file)?.to_string(),
                        FilePositions {
                            rows: u64::try_from(file.record_count).unwrap_or(0),
                            deleted,
                        },
                    );
                }
            }
            let equality: Vec<&DataFile> = equality.iter().map(|&i| deletes[i]).collect();
            // The scan reads the equality columns too; they are dropped after.
            let mut columns: Vec<usize> = projection
                .cloned()
                .unwrap_or_else(|| (0..current.len()).collect());
            let wanted = columns.len();
            let mut keys = vec![];
            for ids in unique_ids(&equality) {
                let mut at = vec![];
                for id in &ids {
                    let index = self
                        .schema
                        .fields
                        .iter()
                        .position(|f| f.id == *id)
                        .ok_or_else(|| {
                            external(format!(
                                "an equality delete file names field id {id}, which the \
                                 schema being read does not have"
                            ))
                        })?;
                    at.push(columns.iter().position(|&c| c == index).unwrap_or_else(|| {
                        columns.push(index);
                        columns.len() - 1
                    }));
                }
                let mut batches = vec![];
                for delete in equality.iter().filter(|d| d.equality_ids == ids) {
                    let schema = self.key_schema(delete, &ids);
                    batches.push(self.deletes.equality_keys(state, delete, schema).await?);
                }
                let schema = batches
                    .first()
                    .map(|b| b.schema())
                    .unwrap_or_else(|| Arc::new(Schema::empty()));
                let batches = batches
                    .into_iter()
                    .map(|b| b.with_schema(schema.clone()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                keys.push(EqualityKeys {
                    columns: at,
                    keys: datafusion::arrow::compute::concat_batches(&schema, &batches)?,
                });
            }
            let deleting = !positions.is_empty() || !keys.is_empty();
            let file_schema = self.renamed(&names);
            let mut source =
                ParquetSource::new(file_schema.clone()).with_table_parquet_options(options.clone());
            // Row-group and page pruning inside the files, when the names match.
            if names == current {
                if let Some(p) = &predicate {
                    source = source.with_predicate(p.clone());
                }
            }
            let mut stats = self.stats(files.iter().copied());
            if deleting {
                stats.num_rows = stats.num_rows.to_inexact();
            }
            let config =
                FileScanConfigBuilder::new(ObjectStoreUrl::parse(&store)?, Arc::new(source))
                    .with_file_groups(crate::lakehouse::file_groups(
                        files
                            .iter()
                            .map(|f| Ok(crate::lakehouse::scan_file(location(f)?, f.size)))
                            .collect::<Result<_>>()?,
                        partitions,
                    ))
                    .with_projection_indices(Some(columns.clone()))?
                    // A limit counts rows left after deletes: only without them.
                    .with_limit(if deleting { None } else { limit })
                    .with_statistics(stats)
                    .build();
            let mut scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
            if deleting {
                scan = Arc::new(IcebergDeletesExec::new(scan, positions, keys));
            }
            if names != current {
                scan = rename(scan, &self.arrow)?;
            }
            if columns.len() > wanted {
                scan = narrow(scan, wanted)?;
            }
            scans.push(scan);
        }
        let projected = match projection {
            Some(p) => Arc::new(self.arrow.project(p)?),
            None => self.arrow.clone(),
        };
        match scans.len() {
            0 => Ok(Arc::new(EmptyExec::new(projected))),
            _ => UnionExec::try_new(scans),
        }
    }
}

impl IcebergTable {
    fn stats<'a>(&self, files: impl Iterator<Item = &'a DataFile>) -> Statistics {
        let (mut rows, mut bytes) = (0usize, 0usize);
        for f in files {
            rows = rows.saturating_add(usize::try_from(f.record_count).unwrap_or(0));
            bytes = bytes.saturating_add(usize::try_from(f.size).unwrap_or(0));
        }
        let mut stats = Statistics::new_unknown(&self.arrow);
        stats.num_rows = Precision::Exact(rows);
        stats.total_byte_size = Precision::Inexact(bytes);
        stats.column_statistics = self.columns.clone();
        stats
    }
}

/// A data file's location in its object store.
fn location(file: &DataFile) -> Result<object_store::path::Path> {
    let url = to_url(&file.path).map_err(|e| DataFusionError::External(e.into()))?;
    object_store::path::Path::from_url_path(url.path())
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The distinct equality-id lists of `deletes`, in a stable order.
fn unique_ids(deletes: &[&DataFile]) -> Vec<Vec<i32>> {
    let mut ids: Vec<Vec<i32>> = deletes.iter().map(|d| d.equality_ids.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The first `n` columns of `plan`.
fn narrow(plan: Arc<dyn ExecutionPlan>, n: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = schema
        .fields()
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, f)| {
            (
                Arc::new(ColumnExpr::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                f.name().clone(),
            )
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

/// Renames a scan's columns (old names) to the table's current ones, by position.
fn rename(scan: Arc<dyn ExecutionPlan>, table: &SchemaRef) -> Result<Arc<dyn ExecutionPlan>> {
    let input = scan.schema();
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = input
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            // The field id says which current column this was.
            let id = f.metadata().get(super::metadata::FIELD_ID_KEY);
            let name = table
                .fields()
                .iter()
                .find(|t| t.metadata().get(super::metadata::FIELD_ID_KEY) == id)
                .map_or_else(|| f.name().clone(), |t| t.name().clone());
            (
                Arc::new(ColumnExpr::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                name,
            )
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
}
