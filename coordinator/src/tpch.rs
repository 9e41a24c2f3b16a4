//! TPC-H sample data for the demo and the benchmarks, generated in-process
//! (tpchgen) straight into Parquet, one folder per table.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow,
    RecordBatchIterator, RegionArrow, SupplierArrow,
};

pub const TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

#[derive(Debug, thiserror::Error)]
pub enum TpchError {
    #[error("cannot write TPC-H data under {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write Parquet file {path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("TPC-H generator thread failed")]
    Thread,
}

/// Generates TPC-H at `scale` into `dir` unless it is already there. The data is
/// written to a sibling folder first and renamed, so an interrupted run leaves
/// nothing half-written behind.
pub fn ensure(dir: &Path, scale: f64) -> Result<bool, TpchError> {
    if dir.join("lineitem").is_dir() {
        return Ok(false);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TpchError::Io { path, source }
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("tpch"),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    // Big tables are split into several files: it parallelizes generation and gives
    // scans several file groups to spread over workers.
    let parts = ((scale * 4.0).ceil() as i32).clamp(1, 64);
    let mut jobs: Vec<(&'static str, i32, i32)> =
        vec![("nation", 1, 1), ("region", 1, 1), ("supplier", 1, 1)];
    for table in ["part", "partsupp", "customer", "orders", "lineitem"] {
        jobs.extend((1..=parts).map(|p| (table, p, parts)));
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let jobs = Arc::new(parking_lot::Mutex::new(jobs));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let jobs = jobs.clone();
            let tmp = tmp.clone();
            std::thread::spawn(move || -> Result<(), TpchError> {
                loop {
                    let job = jobs.lock().pop();
                    let Some((table, part, count)) = job else {
                        return Ok(());
                    };
                    write_part(&tmp, table, scale, part, count)?;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| TpchError::Thread)??;
    }
    fs::rename(&tmp, dir).map_err(io(dir))?;
    Ok(true)
}

fn batches(table: &str, scale: f64, part: i32, count: i32) -> Box<dyn RecordBatchIterator> {
    match table {
        "nation" => Box::new(NationArrow::new(NationGenerator::new(scale, part, count))),
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(scale, part, count))),
        "part" => Box::new(PartArrow::new(PartGenerator::new(scale, part, count))),
        "supplier" => Box::new(SupplierArrow::new(SupplierGenerator::new(
            scale, part, count,
        ))),
        "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(
            scale, part, count,
        ))),
        "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(
            scale, part, count,
        ))),
        "orders" => Box::new(OrderArrow::new(OrderGenerator::new(scale, part, count))),
        _ => Box::new(LineItemArrow::new(LineItemGenerator::new(
            scale, part, count,
        ))),
    }
}

fn write_part(
    root: &Path,
    table: &str,
    scale: f64,
    part: i32,
    count: i32,
) -> Result<(), TpchError> {
    let folder = root.join(table);
    fs::create_dir_all(&folder).map_err(|source| TpchError::Io {
        path: folder.clone(),
        source,
    })?;
    let path = folder.join(format!("part-{part}.parquet"));
    let file = fs::File::create(&path).map_err(|source| TpchError::Io {
        path: path.clone(),
        source,
    })?;
    let parquet = |source| TpchError::Parquet {
        path: path.clone(),
        source,
    };
    let mut it = batches(table, scale, part, count);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        ArrowWriter::try_new(file, it.schema().clone(), Some(props)).map_err(parquet)?;
    for batch in it.by_ref() {
        let batch: RecordBatch = batch;
        writer.write(&batch).map_err(parquet)?;
    }
    writer.close().map_err(parquet)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_table_once() {
        let dir = tempfile_dir();
        let target = dir.join("tpch");
        assert!(ensure(&target, 0.001).expect("generate"));
        for t in TABLES {
            let files: Vec<_> = fs::read_dir(target.join(t))
                .expect("table folder")
                .collect();
            assert!(!files.is_empty(), "{t} has files");
        }
        // Second call finds the data and does nothing.
        assert!(!ensure(&target, 0.001).expect("noop"));
        let _ = fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("quiver-tpch-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }
}
