//! Where `quiver sql` puts a result: printed as a table (collected, to size the
//! columns), CSV or JSON lines (streamed), or written to a file whose extension
//! picks the format (streamed: a large result never sits in memory).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use arrow::record_batch::RecordBatch;

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

pub enum Sink {
    Table(Vec<RecordBatch>),
    Csv {
        out: Box<dyn Write + Send>,
        header: bool,
        rows: usize,
    },
    Json {
        out: Box<dyn Write + Send>,
        rows: usize,
    },
    Parquet {
        path: std::path::PathBuf,
        file: Option<File>,
        writer: Option<parquet::arrow::ArrowWriter<File>>,
        rows: usize,
    },
    Arrow {
        path: std::path::PathBuf,
        file: Option<File>,
        writer: Option<arrow::ipc::writer::FileWriter<File>>,
        rows: usize,
    },
}

impl Sink {
    pub fn new(format: OutputFormat, output: Option<&Path>) -> Result<Self> {
        let Some(path) = output else {
            return Ok(match format {
                OutputFormat::Table => Sink::Table(vec![]),
                OutputFormat::Csv => Sink::Csv {
                    out: Box::new(std::io::stdout()),
                    header: true,
                    rows: 0,
                },
                OutputFormat::Json => Sink::Json {
                    out: Box::new(std::io::stdout()),
                    rows: 0,
                },
            });
        };
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let create =
            || File::create(path).with_context(|| format!("cannot create {}", path.display()));
        Ok(match ext.as_str() {
            "parquet" => Sink::Parquet {
                path: path.to_path_buf(),
                file: Some(create()?),
                writer: None,
                rows: 0,
            },
            "arrow" | "ipc" | "feather" => Sink::Arrow {
                path: path.to_path_buf(),
                file: Some(create()?),
                writer: None,
                rows: 0,
            },
            "csv" => Sink::Csv {
                out: Box::new(BufWriter::new(create()?)),
                header: true,
                rows: 0,
            },
            "json" | "jsonl" | "ndjson" => Sink::Json {
                out: Box::new(BufWriter::new(create()?)),
                rows: 0,
            },
            other => bail!(
                "cannot tell the format of {} ('{other}'): use .parquet, .csv, .arrow or .json",
                path.display()
            ),
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Sink::Table(batches) => batches.push(batch.clone()),
            Sink::Csv { out, header, rows } => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(out);
                w.write(batch)?;
                *header = false;
                *rows += batch.num_rows();
            }
            Sink::Json { out, rows } => {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(out);
                w.write(batch)?;
                w.finish()?;
                *rows += batch.num_rows();
            }
            Sink::Parquet {
                path,
                file,
                writer,
                rows,
            } => {
                if writer.is_none() {
                    let f = file
                        .take()
                        .with_context(|| format!("{} is closed", path.display()))?;
                    *writer = Some(parquet::arrow::ArrowWriter::try_new(
                        f,
                        batch.schema(),
                        None,
                    )?);
                }
                if let Some(w) = writer.as_mut() {
                    w.write(batch)?;
                }
                *rows += batch.num_rows();
            }
            Sink::Arrow {
                path,
                file,
                writer,
                rows,
            } => {
                if writer.is_none() {
                    let f = file
                        .take()
                        .with_context(|| format!("{} is closed", path.display()))?;
                    *writer = Some(arrow::ipc::writer::FileWriter::try_new(f, &batch.schema())?);
                }
                if let Some(w) = writer.as_mut() {
                    w.write(batch)?;
                }
                *rows += batch.num_rows();
            }
        }
        Ok(())
    }

    /// For a shown result that is a write's answer (one `count` column): the rows the statement wrote.
    pub fn rows_written(&self) -> Option<u64> {
        let Sink::Table(batches) = self else {
            return None;
        };
        let mut total = None;
        for b in batches {
            if b.num_columns() != 1 || b.schema().field(0).name() != "count" {
                return None;
            }
            let counts = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::UInt64Array>()?;
            *total.get_or_insert(0) += counts.iter().flatten().sum::<u64>();
        }
        total
    }

    /// Prints or closes; returns the rows written.
    pub fn finish(self) -> Result<usize> {
        Ok(match self {
            Sink::Table(batches) => {
                if !batches.is_empty() {
                    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
                }
                batches.iter().map(|b| b.num_rows()).sum()
            }
            Sink::Csv { mut out, rows, .. } | Sink::Json { mut out, rows } => {
                out.flush()?;
                rows
            }
            Sink::Parquet {
                path, writer, rows, ..
            } => {
                match writer {
                    Some(w) => {
                        w.close()?;
                    }
                    None => bail!(
                        "the result has no batches, so {} has no schema to write",
                        path.display()
                    ),
                }
                rows
            }
            Sink::Arrow {
                path, writer, rows, ..
            } => {
                match writer {
                    Some(mut w) => w.finish()?,
                    None => bail!(
                        "the result has no batches, so {} has no schema to write",
                        path.display()
                    ),
                }
                rows
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    #[test]
    fn files_by_extension_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batch =
            RecordBatch::try_from_iter(vec![("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)])
                .expect("batch");
        for ext in ["parquet", "arrow", "csv", "json"] {
            let path = dir.path().join(format!("out.{ext}"));
            let mut sink = Sink::new(OutputFormat::Table, Some(&path)).expect("sink");
            sink.write(&batch).expect("write");
            sink.write(&batch).expect("write");
            assert_eq!(sink.finish().expect("finish"), 6, "{ext}");
            assert!(std::fs::metadata(&path).expect("file").len() > 0);
        }
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(dir.path().join("out.parquet")).expect("open"),
        )
        .expect("parquet")
        .build()
        .expect("reader");
        assert_eq!(
            reader.map(|b| b.expect("batch").num_rows()).sum::<usize>(),
            6
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.csv")).expect("csv"),
            "n\n1\n2\n3\n1\n2\n3\n"
        );
        assert!(Sink::new(OutputFormat::Table, Some(&dir.path().join("x.xlsx"))).is_err());
    }
}
