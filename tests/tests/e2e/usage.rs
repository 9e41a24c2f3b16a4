//! Cost per query: what a query used, measured on the workers and summed by the
//! coordinator, in `system.queries`, `system.fragments`, `system.usage`, the audit
//! log and Prometheus.

use std::process::Command;

use arrow::array::{Float64Array, Int64Array, StringArray};
use quiver_tests::*;

/// Total size of the Parquet files of one TPC-H table.
fn table_bytes(table: &str) -> u64 {
    let dir = tpch_dir().join(table);
    let files = std::fs::read_dir(&dir)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default();
    files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_records_cpu_memory_bytes_read_and_exchanges() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = dir.path().join("audit.jsonl");
    let config = format!(
        "[server]\naudit_log = {:?}\nhttp_listen = \"127.0.0.1:0\"\n[workers]\nmode = \"embedded\"\ncount = 2\nsingle_stage_max_bytes = 0\n{}",
        audit.to_string_lossy(),
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    // A join with a grouped aggregate: two scans, stages, exchanges.
    let sql = "SELECT o_orderpriority, count(*) AS n, sum(l_quantity) AS q FROM quiver.tpch.orders \
               JOIN quiver.tpch.lineitem ON o_orderkey = l_orderkey GROUP BY o_orderpriority -- costed";
    assert_eq!(row_count(&query(&mut c, sql).await?), 5);

    let usage = query(
        &mut c,
        "SELECT cpu_secs, peak_memory_bytes, bytes_read, bytes_read_by_source, exchange_rows, exchange_bytes, container_secs, worker_wait_ms \
         FROM system.queries WHERE sql LIKE '%-- costed'",
    )
    .await?;
    let b = &usage[0];
    let float = |i: usize| {
        b.column(i)
            .as_any()
            .downcast_ref::<Float64Array>()
            .map(|a| a.value(0))
            .unwrap_or(-1.0)
    };
    let int = |i: usize| {
        b.column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.value(0))
            .unwrap_or(-1)
    };
    let text = b
        .column(3)
        .as_any()
        .downcast_ref::<StringArray>()
        .map(|a| a.value(0).to_string())
        .unwrap_or_default();
    assert!(float(0) > 0.0, "cpu_secs {}", float(0));
    assert!(int(1) > 0, "peak_memory_bytes {}", int(1));
    // Parquet reads what the query needs of both tables: some, not more than the files.
    let files = table_bytes("orders") + table_bytes("lineitem");
    assert!(
        int(2) > 0 && (int(2) as u64) <= files,
        "bytes_read {} of {files} bytes of files",
        int(2)
    );
    assert!(text.starts_with("tpch=") && !text.contains(','), "{text}");
    assert!(
        int(4) > 0 && int(5) > 0,
        "exchange rows {} bytes {}",
        int(4),
        int(5)
    );
    assert!(float(6) > 0.0, "container_secs {}", float(6));
    assert_eq!(int(7), 0, "embedded workers are always there");

    // Per fragment, as measured on the workers.
    let fragments = query(
        &mut c,
        "SELECT sum(f.cpu_ms), max(f.peak_memory_bytes) FROM system.fragments f JOIN system.queries q ON f.query_id = q.id \
         WHERE q.sql LIKE '%-- costed' AND f.state = 'finished'",
    )
    .await?;
    let max_peak = fragments[0]
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(0))
        .unwrap_or(-1);
    assert_eq!(
        max_peak,
        int(1),
        "the query's peak is its largest fragment's"
    );

    // Summed per user and hour.
    let hourly = query(
        &mut c,
        "SELECT queries, cpu_secs, bytes_read FROM system.usage WHERE user IS NULL",
    )
    .await?;
    let hourly = &hourly[0];
    let queries = hourly
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.iter().flatten().sum::<i64>())
        .unwrap_or(0);
    let cpu: f64 = hourly
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .map(|a| a.iter().flatten().sum())
        .unwrap_or(0.0);
    assert!(
        queries >= 2 && cpu >= float(0),
        "usage: {queries} queries, {cpu} cpu secs"
    );

    // The audit log and Prometheus carry it too.
    let line = std::fs::read_to_string(&audit)?
        .lines()
        .find(|l| l.contains("-- costed"))
        .map(str::to_string)
        .unwrap_or_default();
    let entry: serde_json::Value = serde_json::from_str(&line)?;
    assert!(
        entry["cpu_secs"].as_f64().is_some_and(|s| s > 0.0),
        "{line}"
    );
    assert!(
        entry["bytes_read"]["tpch"]
            .as_u64()
            .is_some_and(|n| n == int(2) as u64),
        "{line}"
    );
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{}/metrics", server.http_addr())])
        .output()?;
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains("quiver_query_cpu_seconds_total "),
        "{metrics}"
    );
    assert!(
        metrics.contains("quiver_source_bytes_read_total{source=\"tpch\"} "),
        "{metrics}"
    );
    Ok(())
}
