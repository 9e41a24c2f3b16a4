//! File sources in every supported format, hive-style partition folders, and a
//! query that joins across formats.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use quiver_tests::*;

fn batch(ids: Vec<i64>, names: Vec<&str>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(names)) as ArrayRef,
        ],
    )
    .expect("batch")
}

fn write_parquet(path: &Path, b: &RecordBatch) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        fs::File::create(path).expect("create"),
        b.schema(),
        None,
    )
    .expect("w");
    w.write(b).expect("write");
    w.close().expect("close");
}

fn write_arrow(path: &Path, b: &RecordBatch) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut w = arrow::ipc::writer::FileWriter::try_new(
        fs::File::create(path).expect("create"),
        &b.schema(),
    )
    .expect("w");
    w.write(b).expect("write");
    w.finish().expect("finish");
}

fn i64_at(rows: &[RecordBatch], col: usize) -> Vec<i64> {
    rows.iter()
        .flat_map(|b| {
            let a = arrow::compute::cast(b.column(col), &DataType::Int64).expect("cast");
            let a = a
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("ints")
                .clone();
            (0..a.len()).map(move |i| a.value(i))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_and_hive_partitions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    // Discovered tables: a folder per table under the source location.
    write_parquet(
        &root.join("lake/people/part-0.parquet"),
        &batch(vec![1, 2, 3], vec!["ann", "bob", "cy"]),
    );
    write_parquet(
        &root.join("lake/people/part-1.parquet"),
        &batch(vec![4], vec!["dee"]),
    );
    write_parquet(
        &root.join("lake/sales/year=2024/part-0.parquet"),
        &batch(vec![1, 2], vec!["a", "b"]),
    );
    write_parquet(
        &root.join("lake/sales/year=2025/part-0.parquet"),
        &batch(vec![1, 3, 4], vec!["c", "d", "e"]),
    );
    // Declared tables in the other formats.
    fs::create_dir_all(root.join("csv"))?;
    fs::write(root.join("csv/cities.tbl"), "1|Oslo\n2|Lima\n3|Pune\n")?;
    fs::write(root.join("csv/more.tbl"), "4|Kobe\n")?;
    fs::create_dir_all(root.join("json"))?;
    fs::write(
        root.join("json/scores.json"),
        "{\"id\": 1, \"score\": 10}\n{\"id\": 2, \"score\": 20}\n{\"id\": 4, \"score\": 40}\n",
    )?;
    write_arrow(
        &root.join("ipc/tags.arrow"),
        &batch(vec![2, 3], vec!["x", "y"]),
    );

    let config = format!(
        r#"
[[source]]
name = "lake"
kind = "files"
location = "{root}/lake"

[[source]]
name = "other"
kind = "files"
[[source.table]]
name = "cities"
location = "{root}/csv/"
format = "csv"
csv = {{ header = false, delimiter = "|", extension = ".tbl" }}
[[source.table]]
name = "scores"
location = "{root}/json/scores.json"
format = "json"
[[source.table]]
name = "tags"
location = "{root}/ipc/"
format = "arrow"
"#,
        root = root.display()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;

    let q = |sql: &'static str| sql;
    let rows = query(
        &mut c,
        q("SELECT count(*), sum(id) FROM quiver.lake.people"),
    )
    .await?;
    assert_eq!((i64_at(&rows, 0), i64_at(&rows, 1)), (vec![4], vec![10]));

    // Partition column from the folder names, and pruning by it.
    let rows = query(
        &mut c,
        q("SELECT year, count(*) FROM quiver.lake.sales GROUP BY year ORDER BY year"),
    )
    .await?;
    assert_eq!(
        (i64_at(&rows, 0), i64_at(&rows, 1)),
        (vec![2024, 2025], vec![2, 3])
    );
    let rows = query(
        &mut c,
        q("SELECT sum(id) FROM quiver.lake.sales WHERE year = '2025'"),
    )
    .await?;
    assert_eq!(i64_at(&rows, 0), vec![8]);

    let rows = query(&mut c, q("SELECT count(*) FROM quiver.other.cities")).await?;
    assert_eq!(i64_at(&rows, 0), vec![4]);

    // One query over Parquet, CSV, NDJSON and Arrow IPC.
    let rows = query(
        &mut c,
        q("SELECT p.id, c.column_2 AS city, s.score
           FROM quiver.lake.people p
           JOIN quiver.other.cities c ON c.column_1 = p.id
           JOIN quiver.other.scores s ON s.id = p.id
           WHERE p.id IN (SELECT id FROM quiver.other.tags) OR p.id = 4
           ORDER BY p.id"),
    )
    .await?;
    assert_eq!(i64_at(&rows, 0), vec![2, 4]);
    assert_eq!(i64_at(&rows, 2), vec![20, 40]);
    let cities = arrow::compute::cast(rows[0].column(1), &DataType::Utf8)?;
    let cities = cities.as_any().downcast_ref::<StringArray>().expect("text");
    assert_eq!(cities.value(0), "Lima");
    Ok(())
}
