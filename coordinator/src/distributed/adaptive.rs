//! Adaptive small queries: a query whose inputs are small runs whole, as one
//! fragment on one worker, instead of as stages.
//!
//! Stages pay per-stage latency (scheduling, an exchange written and read) that
//! a query over a few megabytes never earns back. When the bytes a plan reads add
//! up to at most `workers.single_stage_max_bytes`, the plan goes to the least
//! busy worker as it is: DataFusion runs all its partitions there, with the
//! joins' dynamic filters pruning the probe-side scans as on a single node, and
//! the coordinator only relays the result. `EXPLAIN` shows it as a
//! `RemoteFragmentExec` marked `single_stage`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use object_store::path::Path;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use quiver_connectors::SourceScanExec;

/// Bytes of files `plan` reads, or `None` when it reads something whose size is
/// unknown or large by construction (a database table split into ranges) or
/// writes (writes keep their own per-task protocol).
///
/// A file (or a byte range of one) counts the share of its bytes that belongs to
/// the columns the scans read, by the file's column statistics: q22 reads one
/// column of `orders`' nine, a small share of the file. Without statistics the
/// whole file counts. Two scans of the same file count it once, with the union
/// of their columns: the second read comes from the page cache.
pub(super) fn input_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<u64> {
    let mut known = true;
    let mut reads: HashMap<(Path, Option<(i64, i64)>), FileRead> = HashMap::new();
    let _ = plan.apply(|node| {
        let n = node.as_ref();
        if let Some(files) = n
            .downcast_ref::<DataSourceExec>()
            .and_then(|d| d.data_source().downcast_ref::<FileScanConfig>())
        {
            // The file's columns the scan reads (partition columns come after them);
            // no projection reads them all.
            let width = files.file_schema().fields().len();
            let columns: Vec<usize> = match files.file_source().projection() {
                Some(p) => p
                    .column_indices()
                    .into_iter()
                    .filter(|&i| i < width)
                    .collect(),
                None => (0..width).collect(),
            };
            for group in &files.file_groups {
                for file in group.iter() {
                    // A large file is split into byte ranges, one per partition.
                    let (size, range) = match &file.range {
                        Some(r) => (
                            u64::try_from(r.end - r.start).unwrap_or(0),
                            Some((r.start, r.end)),
                        ),
                        None => (file.object_meta.size, None),
                    };
                    let read = reads
                        .entry((file.object_meta.location.clone(), range))
                        .or_insert_with(|| FileRead {
                            size,
                            column_sizes: file.statistics.as_ref().and_then(|s| {
                                s.column_statistics
                                    .iter()
                                    .map(|c| c.byte_size.get_value().copied())
                                    .collect()
                            }),
                            columns: BTreeSet::new(),
                        });
                    read.columns.extend(columns.iter().copied());
                }
            }
        } else if n
            .downcast_ref::<SourceScanExec>()
            .is_some_and(|s| s.statements().len() > 1)
            || n.is::<DataSinkExec>()
            || n.is::<quiver_worker::write::WriteFilesExec>()
            || n.is::<quiver_connectors::lakehouse::delta_write::DeltaWriteExec>()
        {
            known = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    known.then(|| {
        reads
            .values()
            .map(FileRead::bytes)
            .fold(0u64, u64::saturating_add)
    })
}

/// What the scans of a plan read of one file (or byte range).
struct FileRead {
    size: u64,
    /// Each column's estimated size, from the file's statistics, when all are known.
    column_sizes: Option<Vec<usize>>,
    columns: BTreeSet<usize>,
}

impl FileRead {
    /// The size, scaled by the columns' share of the data.
    fn bytes(&self) -> u64 {
        let Some(sizes) = &self.column_sizes else {
            return self.size;
        };
        let total: u128 = sizes.iter().map(|&s| s as u128).sum();
        // Distinct columns of `sizes`: at most `total`.
        let read: u128 = self
            .columns
            .iter()
            .filter_map(|&c| sizes.get(c))
            .map(|&s| s as u128)
            .sum();
        match total {
            0 => self.size,
            // u128: a size times a share can't overflow; the result is at most `size`.
            total => u64::try_from(u128::from(self.size) * read / total).unwrap_or(self.size),
        }
    }
}

/// "12.3 MiB".
pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};

    /// A file counts the share of the columns read: a small integer column of a
    /// file that is mostly strings is a small part of it; every column, or the
    /// union of two scans' columns, is all of it.
    #[tokio::test]
    async fn a_file_counts_the_columns_read() -> datafusion::error::Result<()> {
        let dir = tempfile::tempdir()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let path = dir.path().join("t.parquet").to_string_lossy().to_string();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("text", DataType::Utf8, false),
        ]));
        let text: StringArray = (0..20_000)
            .map(|i| {
                Some(format!(
                    "{i:08} a long and distinct comment that does not compress {}",
                    i * 7919
                ))
            })
            .collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from_iter_values(0..20_000)),
                Arc::new(text),
            ],
        )?;
        let ctx = SessionContext::new();
        ctx.read_batch(batch)?
            .write_parquet(&path, Default::default(), None)
            .await?;
        let ctx = SessionContext::new();
        ctx.register_parquet("t", &path, ParquetReadOptions::default())
            .await?;
        let size = std::fs::metadata(&path)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
            .len();
        let bytes = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                Ok::<_, datafusion::error::DataFusionError>(input_bytes(
                    &ctx.sql(sql).await?.create_physical_plan().await?,
                ))
            }
        };
        let id_only = bytes("SELECT sum(id) FROM t").await?.unwrap_or(u64::MAX);
        assert!(
            id_only > 0 && id_only < size / 4,
            "one small column of {size} bytes: {id_only}"
        );
        assert_eq!(bytes("SELECT * FROM t").await?, Some(size));
        assert_eq!(
            bytes("SELECT a.id, b.text FROM t a JOIN t b ON a.id = b.id").await?,
            Some(size)
        );
        Ok(())
    }
}
