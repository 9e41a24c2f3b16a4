//! The front doors, in one run: `SELECT * FROM lineitem` (TPC-H) fetched whole by a
//! client of each door (Flight SQL, the PostgreSQL protocol in binary through
//! tokio-postgres and in text through psql, `/v1/sql` as Arrow, CSV and JSON
//! through curl), against single-node DataFusion collecting the same query in
//! process (the baseline: the query without any transport). Plus a small query's
//! round trip through each door.
//!
//! cargo bench -p quiver-coordinator --bench doors -- [--scale 1] [--iterations 3]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::{StreamExt, TryStreamExt};
use tonic::transport::Endpoint;

const SCAN: &str = "SELECT * FROM lineitem";
const SMALL: &str = "SELECT count(*) FROM nation WHERE n_regionkey = 3";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `f` `n` times after one warm-up; the median time and the last count.
async fn measure<F, Fut>(n: usize, mut f: F) -> Result<(Duration, u64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    f().await?;
    let mut times = vec![];
    let mut count = 0;
    for _ in 0..n {
        let t = Instant::now();
        count = f().await?;
        times.push(t.elapsed());
    }
    Ok((median(times), count))
}

async fn flight(
    client: &FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<u64> {
    let mut client = client.clone();
    let info = client.execute(sql.to_string(), None).await?;
    let mut rows = 0;
    for ep in info.endpoint {
        let mut s = client.do_get(ep.ticket.context("ticket")?).await?;
        while let Some(b) = s.try_next().await? {
            rows += b.num_rows() as u64;
        }
    }
    Ok(rows)
}

async fn postgres(client: &tokio_postgres::Client, sql: &str) -> Result<u64> {
    // query_raw: rows stream in binary, none held.
    let rows = client
        .query_raw(
            sql,
            Vec::<&(dyn tokio_postgres::types::ToSql + Sync)>::new(),
        )
        .await?;
    futures::pin_mut!(rows);
    let mut n = 0;
    while let Some(r) = rows.next().await {
        r?;
        n += 1;
    }
    Ok(n)
}

/// `psql` printing the rows unaligned into a pipe we drain: a person's client, text format.
fn psql(addr: &str, sql: &str) -> Result<u64> {
    let out = Command::new("psql")
        .args([
            &format!("postgres://quiver@{addr}/quiver"),
            "-X",
            "-qtA",
            "-c",
            sql,
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout.iter().filter(|b| **b == b'\n').count() as u64)
}

/// curl to /dev/null; returns the bytes it downloaded.
fn curl(addr: &str, format: &str, sql: &str) -> Result<u64> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "-d",
            sql,
            &format!("http://{addr}/v1/sql?format={format}"),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = text.split_whitespace();
    anyhow::ensure!(
        parts.next() == Some("200"),
        "curl {format}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parts
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("curl printed {text}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut scale = 1.0;
    let mut iterations = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--scale" => scale = args.next().context("--scale N")?.parse()?,
            "--iterations" => iterations = args.next().context("--iterations N")?.parse()?,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let dir = repo_root()
        .join("target")
        .join("bench-data")
        .join(format!("tpch-sf{scale}"));
    quiver_coordinator::tpch::ensure(&dir, scale)?;
    let dir = std::fs::canonicalize(&dir)?;

    // The baseline: single-node DataFusion over the same files, collecting in process.
    let df = datafusion::prelude::SessionContext::new();
    for t in ["lineitem", "nation"] {
        df.register_parquet(t, &format!("{}/{t}/", dir.display()), Default::default())
            .await?;
    }
    let df_run = |sql: &'static str| {
        let df = df.clone();
        async move {
            let mut s = df.sql(sql).await?.execute_stream().await?;
            let mut n = 0u64;
            while let Some(b) = s.try_next().await? {
                n += b.num_rows() as u64;
            }
            Ok::<_, anyhow::Error>(n)
        }
    };

    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\npostgres_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [workers]\ncount = 2\n[[source]]\nname = \"tpch\"\nkind = \"files\"\nlocation = {:?}\nformat = \"parquet\"\n",
        dir.display().to_string()
    );
    let config =
        quiver_coordinator::QuiverConfig::parse(&config, Path::new("/")).map_err(|e| anyhow!(e))?;
    let server = quiver_coordinator::start(config).await?;
    let (pg, http) = (
        server.postgres.context("postgres port")?.to_string(),
        server.http.context("http port")?.to_string(),
    );
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let fl = FlightSqlServiceClient::new(channel);
    let (pgc, connection) = tokio_postgres::connect(
        &format!("postgres://quiver@{pg}/quiver"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);

    let (base, rows) = measure(iterations, || df_run(SCAN)).await?;
    let (base_small, _) = measure(iterations, || df_run(SMALL)).await?;
    let mut results: Vec<(&str, Duration, Duration, String)> = vec![];
    let (t, n) = measure(iterations, || flight(&fl, SCAN)).await?;
    anyhow::ensure!(n == rows, "Flight SQL returned {n} rows, not {rows}");
    let (s, _) = measure(iterations, || flight(&fl, SMALL)).await?;
    results.push(("Flight SQL (arrow-flight client)", t, s, String::new()));
    let (t, n) = measure(iterations, || postgres(&pgc, SCAN)).await?;
    anyhow::ensure!(n == rows, "PostgreSQL returned {n} rows, not {rows}");
    let (s, _) = measure(iterations, || postgres(&pgc, SMALL)).await?;
    results.push((
        "PostgreSQL protocol, binary (tokio-postgres)",
        t,
        s,
        String::new(),
    ));
    let (t, n) = measure(iterations, || async { psql(&pg, SCAN) }).await?;
    anyhow::ensure!(n == rows, "psql printed {n} rows, not {rows}");
    let (s, _) = measure(iterations, || async { psql(&pg, SMALL) }).await?;
    results.push(("PostgreSQL protocol, text (psql -A)", t, s, String::new()));
    for (format, label) in [
        ("arrow", "/v1/sql, Arrow IPC stream (curl)"),
        ("csv", "/v1/sql, CSV (curl)"),
        ("json", "/v1/sql, JSON (curl)"),
    ] {
        let (t, bytes) = measure(iterations, || async { curl(&http, format, SCAN) }).await?;
        let (s, _) = measure(iterations, || async { curl(&http, format, SMALL) }).await?;
        results.push((label, t, s, format!("{:.0} MB", bytes as f64 / 1e6)));
    }
    server.shutdown().await?;

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("### Front doors: TPC-H SF{scale} `{SCAN}` ({rows} rows), 2 embedded workers, {cores} cores, median of {iterations}\n");
    println!("| client | whole result | rows/s | × DataFusion in process | small query | body |\n|---|---:|---:|---:|---:|---:|");
    println!(
        "| single-node DataFusion, in process (baseline) | {:.2} s | {:.2} M | 1.00× | {:.1} ms | |",
        base.as_secs_f64(),
        rows as f64 / base.as_secs_f64() / 1e6,
        base_small.as_secs_f64() * 1e3
    );
    for (label, t, s, body) in results {
        println!(
            "| {label} | {:.2} s | {:.2} M | {:.2}× | {:.1} ms | {body} |",
            t.as_secs_f64(),
            rows as f64 / t.as_secs_f64() / 1e6,
            t.as_secs_f64() / base.as_secs_f64(),
            s.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
