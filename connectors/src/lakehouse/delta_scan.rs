//! A Delta snapshot scanned as a plain DataFusion Parquet scan.
//!
//! deltalake's own scan (`DeltaScanExec`) turns each file's rows into the table's
//! rows with kernel expressions (partition values, column mapping, deletion
//! vectors). That node cannot be sent to a worker, so every row crossed to the
//! coordinator and the query's aggregates ran there. For the common table, none of
//! that is needed: without column mapping and deletion vectors a Delta file is a
//! Parquet file of the table's columns by name, and its partition values are
//! constants in the log. Such a snapshot is planned here as one `DataSourceExec`
//! with partition columns, files pruned by the log's partition values and
//! statistics, that the distributed planner splits across workers like any
//! Parquet scan. Other snapshots keep deltalake's scan ([`plain_files`] says
//! which).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::internal_err;
use datafusion::common::stats::Precision;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use deltalake_core::DeltaTable;
use object_store::path::Path;
use url::Url;

/// One data file of the snapshot.
#[derive(Debug, Clone)]
struct DeltaFile {
    location: Path,
    size: u64,
    /// In the order of [`DeltaFiles::partition_fields`].
    partition_values: Vec<ScalarValue>,
    rows: Option<usize>,
}

/// The files of a Delta snapshot without column mapping or deletion vectors.
#[derive(Debug)]
pub(super) struct DeltaFiles {
    name: String,
    /// The snapshot; also the pruning statistics of its files, in `files` order.
    table: DeltaTable,
    /// The table's columns, as deltalake's own scan announces them.
    schema: SchemaRef,
    store: ObjectStoreUrl,
    /// Columns the files hold, in table order.
    file_fields: Vec<FieldRef>,
    /// Partition columns, in table order.
    partition_fields: Vec<FieldRef>,
    files: Vec<DeltaFile>,
    /// Per column, over every file of the snapshot (from the log's statistics).
    columns: Vec<datafusion::common::ColumnStatistics>,
}

/// The snapshot of `table` as plain files, or the reason deltalake's scan must read it.
pub(super) fn plain_files(
    name: &str,
    table: &DeltaTable,
    schema: SchemaRef,
    handle: &Url,
) -> std::result::Result<DeltaFiles, String> {
    use delta_kernel::table_features::ColumnMappingMode;
    let state = table.snapshot().map_err(|e| e.to_string())?;
    let config = state.snapshot().table_configuration();
    if config.column_mapping_mode() != ColumnMappingMode::None {
        return Err("column mapping".into());
    }
    let partition_columns = state.metadata().partition_columns().to_vec();
    let (mut file_fields, mut partition_fields) = (vec![], vec![]);
    for f in schema.fields() {
        if partition_columns.contains(f.name()) {
            partition_fields.push(f.clone());
        } else {
            file_fields.push(f.clone());
        }
    }
    let store =
        ObjectStoreUrl::parse(&handle[..url::Position::BeforePath]).map_err(|e| e.to_string())?;
    let base = Path::from_url_path(handle.path()).map_err(|e| e.to_string())?;
    let mut files = vec![];
    for f in state.log_data().iter() {
        if f.deletion_vector_descriptor().is_some() {
            return Err("deletion vectors".into());
        }
        let path = f.path();
        let location = match Url::parse(&path) {
            // An absolute URL (a shallow clone's files): its path in the same store.
            Ok(url) if url.scheme().len() > 1 => {
                if url[..url::Position::BeforePath] != handle[..url::Position::BeforePath] {
                    return Err(format!("a file in another store ({url})"));
                }
                Path::from_url_path(url.path()).map_err(|e| e.to_string())?
            }
            _ => Path::from_iter(base.parts().chain(Path::from(path.as_ref()).parts())),
        };
        let values = f.partition_values_map();
        let partition_values = partition_fields
            .iter()
            .map(|field| match values.get(field.name()).cloned().flatten() {
                Some(v) => ScalarValue::try_from_string(v, field.data_type()),
                None => ScalarValue::try_from(field.data_type()),
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|e| format!("a partition value of {path}: {e}"))?;
        files.push(DeltaFile {
            location,
            size: u64::try_from(f.size()).unwrap_or(0),
            partition_values,
            rows: f.num_records(),
        });
    }
    let columns = super::column_statistics(state.snapshot(), &schema);
    Ok(DeltaFiles {
        name: name.to_string(),
        table: table.clone(),
        columns,
        schema,
        store,
        file_fields,
        partition_fields,
        files,
    })
}

impl DeltaFiles {
    /// Indexes of the files that may hold rows passing `predicate`.
    fn prune(&self, predicate: Option<&Arc<dyn PhysicalExpr>>) -> Vec<usize> {
        let all: Vec<usize> = (0..self.files.len()).collect();
        let Some(predicate) = predicate.cloned() else {
            return all;
        };
        let Ok(state) = self.table.snapshot() else {
            return all;
        };
        let Some(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .build(predicate)
        else {
            return all;
        };
        match pruning.prune(state.snapshot()) {
            Ok(keep) if keep.len() == all.len() => all.into_iter().filter(|&i| keep[i]).collect(),
            Ok(_) => all,
            Err(e) => {
                tracing::debug!(table = %self.name, error = %e, "no file pruning");
                all
            }
        }
    }

    fn stats(&self, files: &[&DeltaFile]) -> Statistics {
        let mut stats = Statistics::new_unknown(&self.schema);
        let rows: Option<usize> = files.iter().map(|f| f.rows).sum();
        if let Some(rows) = rows {
            stats.num_rows = Precision::Exact(rows);
        }
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        stats.total_byte_size = Precision::Inexact(usize::try_from(bytes).unwrap_or(usize::MAX));
        if self.columns.len() == stats.column_statistics.len() {
            stats.column_statistics = self.columns.clone();
        }
        stats
    }
}

#[async_trait]
impl TableProvider for DeltaFiles {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
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
        Some(self.stats(&self.files.iter().collect::<Vec<_>>()))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let predicate = super::physical_filter(state, filters, &self.schema);
        let kept: Vec<&DeltaFile> = self
            .prune(predicate.as_ref())
            .into_iter()
            .map(|i| &self.files[i])
            .collect();
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        if kept.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        // The scan's columns are the files' then the partition columns; `order`
        // maps each table column to its place there.
        let scan_fields: Vec<&FieldRef> = self
            .file_fields
            .iter()
            .chain(&self.partition_fields)
            .collect();
        let place = |name: &str| scan_fields.iter().position(|f| f.name() == name);
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let order = wanted
            .iter()
            .map(|&i| place(self.schema.field(i).name()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| DataFusionError::Internal("a Delta column is not scanned".into()))?;
        let file_schema = Arc::new(Schema::new(
            self.file_fields
                .iter()
                .map(|f| f.as_ref().clone())
                .collect::<Vec<Field>>(),
        ));
        let table_schema = TableSchema::builder(file_schema)
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let mut source = ParquetSource::new(table_schema)
            .with_table_parquet_options(state.table_options().parquet.clone());
        if let Some(p) = &predicate {
            // Row-group pruning inside files; the predicate is over the table's
            // columns, so it is mapped onto the scan's order first.
            if let Ok(p) = remap(p, &self.schema, &scan_fields) {
                source = source.with_predicate(p);
            }
        }
        let files = kept
            .iter()
            .map(|f| {
                let mut file = super::scan_file(f.location.clone(), f.size);
                file.partition_values = f.partition_values.clone();
                file
            })
            .collect();
        let groups = super::file_groups(files, state.config().target_partitions().max(1));
        let mut unique = order.clone();
        unique.sort_unstable();
        unique.dedup();
        let config = FileScanConfigBuilder::new(self.store.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_projection_indices(Some(unique.clone()))?
            .with_limit(limit)
            .with_statistics(self.stats(&kept))
            .build();
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        if unique == order {
            return Ok(scan);
        }
        // Back to the order the query asked for.
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = order
            .iter()
            .map(|o| {
                let at = unique.iter().position(|u| u == o).unwrap_or(0);
                let name = scan_fields[*o].name().clone();
                (
                    Arc::new(ColumnExpr::new(&name, at)) as Arc<dyn PhysicalExpr>,
                    name,
                )
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
    }
}

/// `expr` over `from`'s columns rewritten to the same columns at their places in `to`.
fn remap(
    expr: &Arc<dyn PhysicalExpr>,
    from: &SchemaRef,
    to: &[&FieldRef],
) -> Result<Arc<dyn PhysicalExpr>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    expr.clone()
        .transform(|e| {
            let Some(c) = e.downcast_ref::<ColumnExpr>() else {
                return Ok(Transformed::no(e));
            };
            let name = from.field(c.index()).name();
            match to.iter().position(|f| f.name() == name) {
                Some(i) => Ok(Transformed::yes(
                    Arc::new(ColumnExpr::new(name, i)) as Arc<dyn PhysicalExpr>
                )),
                None => internal_err!("no column {name}"),
            }
        })
        .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, Literal};

    #[test]
    fn predicates_follow_columns_to_their_scan_places() -> Result<()> {
        let table: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Utf8, true),
            Field::new("id", DataType::Int64, true),
        ]));
        // The scan reads the file column first, the partition column after.
        let id: FieldRef = Arc::new(Field::new("id", DataType::Int64, true));
        let day: FieldRef = Arc::new(Field::new("day", DataType::Utf8, true));
        let expr: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(ColumnExpr::new("day", 0)),
            Operator::Eq,
            Arc::new(Literal::new(ScalarValue::from("2026-11-02"))),
        ));
        let moved = remap(&expr, &table, &[&id, &day])?;
        assert_eq!(moved.to_string(), "day@1 = 2026-11-02");
        Ok(())
    }
}
