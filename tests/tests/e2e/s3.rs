//! A file source on an S3-compatible store: moto's S3 server (from PyPI, in
//! target/venv) on loopback, credentials from `${ENV}` references.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::record_batch::RecordBatch;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use quiver_tests::*;

/// A client of the test server's `bucket`.
fn s3_store(endpoint: &str, bucket: &str) -> object_store::Result<object_store::aws::AmazonS3> {
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_allow_http(true)
        .build()
}

fn parquet_bytes(values: Vec<i64>) -> Vec<u8> {
    let batch =
        RecordBatch::try_from_iter(vec![("v", Arc::new(Int64Array::from(values)) as ArrayRef)])
            .expect("batch");
    let mut buf = vec![];
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_on_an_s3_compatible_store() -> anyhow::Result<()> {
    let moto = quiver_tests::moto::Moto::start();
    moto.create_bucket("lake");
    let endpoint = moto.endpoint.clone();
    let store = s3_store(&endpoint, "lake")?;
    for (path, values) in [
        ("warehouse/facts/day=1/a.parquet", vec![1, 2, 3]),
        ("warehouse/facts/day=2/b.parquet", vec![10, 20]),
        ("warehouse/dims/d.parquet", vec![7]),
    ] {
        store
            .put(
                &ObjectPath::from(path),
                PutPayload::from(parquet_bytes(values)),
            )
            .await?;
    }

    let config = format!(
        r#"
[[source]]
name = "s3lake"
kind = "files"
location = "s3://lake/warehouse/"
[source.options]
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id = "${{TEST_S3_KEY}}"
secret_access_key = "${{TEST_S3_SECRET}}"
allow_http = "true"
"#
    );
    let server = start_coordinator_with_env(
        &config,
        &[("TEST_S3_KEY", "test"), ("TEST_S3_SECRET", "test")],
    )?;
    let mut c = client(&server.addr).await?;
    let rows = query(
        &mut c,
        "SELECT day, sum(v) FROM quiver.s3lake.facts GROUP BY day ORDER BY day",
    )
    .await?;
    let text = arrow::util::pretty::pretty_format_batches(&rows)?.to_string();
    assert!(
        text.contains("| 1   | 6 ") && text.contains("| 2   | 30 "),
        "{text}"
    );
    let rows = query(&mut c, "SELECT v FROM quiver.s3lake.dims").await?;
    assert_eq!(row_count(&rows), 1);
    Ok(())
}

/// COPY and CREATE TABLE AS onto the S3 test server: write tasks stage under
/// `.quiver-staging/`, the commit renames (copies, then deletes) into place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_create_table_on_an_s3_compatible_store() -> anyhow::Result<()> {
    let moto = quiver_tests::moto::Moto::start();
    moto.create_bucket("sink");
    let endpoint = moto.endpoint.clone();
    let config = format!(
        r#"{}
[[source]]
name = "s3out"
kind = "files"
location = "s3://sink/warehouse/"
writable = true
[source.options]
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
allow_http = "true"
"#,
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    let copied = query(&mut c, "COPY (SELECT n_nationkey, n_regionkey FROM tpch.nation) TO 's3://sink/warehouse/nations/' (FORMAT parquet, PARTITION_BY (n_regionkey))").await?;
    let text = arrow::util::pretty::pretty_format_batches(&copied)?.to_string();
    assert!(text.contains("| 25 "), "{text}");
    let back = query(
        &mut c,
        "SELECT count(*) AS n, sum(n_nationkey) AS s FROM s3out.nations WHERE n_regionkey = '2'",
    )
    .await?;
    let text = arrow::util::pretty::pretty_format_batches(&back)?.to_string();
    assert!(text.contains("| 5 ") && text.contains("| 68 "), "{text}");
    query(&mut c, "CREATE TABLE s3out.orders_1995 AS SELECT o_orderkey FROM tpch.orders WHERE o_orderdate < DATE '1992-03-01'").await?;
    let expected = query(
        &mut c,
        "SELECT count(*) FROM tpch.orders WHERE o_orderdate < DATE '1992-03-01'",
    )
    .await?;
    let got = query(&mut c, "SELECT count(*) FROM s3out.orders_1995").await?;
    assert_eq!(
        arrow::util::pretty::pretty_format_batches(&got)?.to_string(),
        arrow::util::pretty::pretty_format_batches(&expected)?.to_string()
    );
    // Nothing is left under the staging prefix.
    let store = s3_store(&endpoint, "sink")?;
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let staged: Vec<_> = store
        .list(Some(&ObjectPath::from("warehouse/.quiver-staging")))
        .try_collect()
        .await?;
    assert!(staged.is_empty(), "{staged:?}");
    let marker = store
        .list(Some(&ObjectPath::from("warehouse/orders_1995")))
        .try_collect::<Vec<_>>()
        .await?;
    assert!(
        marker
            .iter()
            .any(|o| o.location.as_ref().ends_with("_quiver_table")),
        "{marker:?}"
    );
    Ok(())
}
