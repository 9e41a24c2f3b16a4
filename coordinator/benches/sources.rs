//! SQL-source benchmarks against the PostgreSQL instance of scripts/services.sh:
//! a fully pushed-down aggregate through Quiver vs `psql` running the same SQL,
//! and a full scan into Arrow vs ConnectorX (from PyPI, in target/venv), in one run.
//!
//! scripts/services.sh && target/venv/bin/pip install -r scripts/bench-requirements.txt
//! cargo bench -p quiver-coordinator --bench sources -- [--rows-agg 1000000] [--rows-scan 6000000]

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use common::{arg, median, timed, PG};
use tonic::transport::Endpoint;

fn psql(sql: &str) -> Result<std::time::Duration> {
    common::psql(sql).map(|(_, t)| t)
}

/// ConnectorX's rate (rows/s) reading bench_scan with `parts` partitions on id;
/// None when it is not installed.
fn connectorx(parts: usize) -> Option<f64> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let partition = if parts > 1 {
        format!(", partition_on='id', partition_num={parts}")
    } else {
        String::new()
    };
    let script = format!(
        "import connectorx as cx, time, statistics as st\nruns=[]\nfor i in range(4):\n    t=time.perf_counter(); tb=cx.read_sql('postgresql://quiver:quiver@127.0.0.1:54329/quiver', 'SELECT * FROM bench_scan', return_type='arrow'{partition}); runs.append(time.perf_counter()-t)\nprint(tb.num_rows, st.median(runs[1:]))"
    );
    match Command::new(root.join("target/venv/bin/python"))
        .args(["-c", &script])
        .output()
    {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            let mut parts = text.split_whitespace();
            let rows: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let secs: f64 = parts
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            Some(rows / secs)
        }
        Ok(o) => {
            eprintln!(
                "ConnectorX skipped: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            None
        }
        Err(e) => {
            eprintln!("ConnectorX skipped: {e}");
            None
        }
    }
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let (agg_rows, scan_rows) = (arg("--rows-agg", 1_000_000), arg("--rows-scan", 6_000_000));
    // Tables are rebuilt only when their size changed.
    for (table, rows, ddl) in [
        ("bench_agg", agg_rows, "id bigint, g int, v float8"),
        (
            "bench_scan",
            scan_rows,
            "id bigint, qty int, price numeric(15,2), ship date, comment text",
        ),
    ] {
        let have = Command::new("psql")
            .args(PG)
            .args(["-qtA", "-c", &format!("SELECT count(*) FROM {table}")])
            .env("PGPASSWORD", "quiver")
            .output()?;
        if String::from_utf8_lossy(&have.stdout).trim() != rows.to_string() {
            eprintln!("loading {rows} rows into {table}...");
            let fill = if table == "bench_agg" {
                format!("INSERT INTO {table} SELECT g, g % 100, g * 0.5 FROM generate_series(1, {rows}) g")
            } else {
                format!("INSERT INTO {table} SELECT g, g % 50, (g % 100000) / 100.0, date '1995-01-01' + (g % 2000), md5(g::text) FROM generate_series(1, {rows}) g")
            };
            psql(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({ddl}); {fill}"
            ))?;
            // VACUUM cannot share psql -c's implicit transaction.
            psql(&format!("VACUUM ANALYZE {table}"))?;
        }
    }

    let config = "[server]\nlisten = \"127.0.0.1:0\"\n[[source]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"postgres://quiver:quiver@127.0.0.1:54329/quiver\"\nstatement_timeout_secs = 0\n";
    let config =
        quiver_coordinator::QuiverConfig::parse(config, Path::new("/")).map_err(|e| anyhow!(e))?;
    let server = quiver_coordinator::start(config).await?;
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut client = FlightSqlServiceClient::new(channel);

    let agg = "SELECT g, count(*) AS n, sum(v) AS s FROM bench_agg WHERE id % 2 = 0 GROUP BY g";
    let (mut tq, mut tp) = (vec![], vec![]);
    for i in 0..6 {
        let (d, rows) = timed(
            &mut client,
            &agg.replace("bench_agg", "quiver.pg.bench_agg"),
        )
        .await?;
        anyhow::ensure!(
            rows == 50,
            "aggregate returned {rows} groups, expected the 50 even ones"
        );
        let p = psql(agg)?;
        if i > 0 {
            tq.push(d);
            tp.push(p);
        }
    }
    let (q, p) = (median(tq), median(tp));

    // Full scans with the table split into 1, 2 and 4 page ranges (read by the 2
    // embedded workers), against ConnectorX with as many partitions on `id`.
    let mut scan_rates = vec![];
    for parts in [1usize, 2, 4] {
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[workers]\ncount = 2\n[[source]]\nname = \"pg\"\nkind = \"postgres\"\n\
             url = \"postgres://quiver:quiver@127.0.0.1:54329/quiver\"\nstatement_timeout_secs = 0\n\
             scan_partitions = {parts}\npartition_min_mb = 1\n"
        );
        let config = quiver_coordinator::QuiverConfig::parse(&config, Path::new("/"))
            .map_err(|e| anyhow!(e))?;
        let scan_server = quiver_coordinator::start(config).await?;
        let channel = Endpoint::from_shared(format!("http://{}", scan_server.addr))?
            .connect()
            .await?;
        let mut scan_client = FlightSqlServiceClient::new(channel);
        let mut scans = vec![];
        for i in 0..4 {
            let (d, rows) = timed(&mut scan_client, "SELECT * FROM quiver.pg.bench_scan").await?;
            anyhow::ensure!(
                rows == scan_rows,
                "scan with {parts} partitions returned {rows} rows"
            );
            if i > 0 {
                scans.push(d);
            }
        }
        scan_server.shutdown().await?;
        scan_rates.push((
            parts,
            scan_rows as f64 / median(scans).as_secs_f64(),
            connectorx(parts),
        ));
    }

    println!(
        "### PostgreSQL sources ({} cores)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measurement | Quiver | baseline | ratio |\n|---|---:|---:|---:|");
    println!(
        "| pushed-down aggregate over {agg_rows} rows (median of 5) | {:.1} ms | psql {:.1} ms | {:.2}× |",
        q.as_secs_f64() * 1e3,
        p.as_secs_f64() * 1e3,
        q.as_secs_f64() / p.as_secs_f64()
    );
    for (parts, rate, cx) in scan_rates {
        let label =
            format!("full scan of {scan_rows} rows into Arrow, {parts} partition(s) (median of 3)");
        match cx {
            Some(cx) => println!(
                "| {label} | {:.2} M rows/s | ConnectorX ({parts}) {:.2} M rows/s | {:.2}× |",
                rate / 1e6,
                cx / 1e6,
                rate / cx
            ),
            None => println!("| {label} | {:.2} M rows/s | — | — |", rate / 1e6),
        }
    }
    server.shutdown().await?;
    Ok(())
}
