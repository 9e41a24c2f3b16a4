//! Write benchmarks, in one run, with their baselines:
//!
//! 1. `COPY (SELECT * FROM lineitem) TO … (FORMAT parquet)` at TPC-H SF1 through a
//!    coordinator with 2 embedded workers, against DuckDB's `COPY` of the same
//!    Parquet files (DuckDB from PyPI, target/venv): MB/s of Parquet written.
//! 2. Ingest of 6,000,000 rows into PostgreSQL: `adbc_ingest` through the ADBC
//!    Flight SQL driver into a writable PostgreSQL source, against `psql \copy`
//!    of the same CSV.
//!
//! scripts/services.sh start && scripts/setup-python.sh && target/venv/bin/pip install -r scripts/bench-requirements.txt
//! cargo bench -p quiver-coordinator --bench writes -- [--scale 1] [--rows 6000000] [--iterations 3]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use common::{arg, median, psql, timed};
use tonic::transport::Endpoint;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    repo_root()
        .join("target")
        .join("venv")
        .join("bin")
        .join("python")
}

fn helper(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(python())
        .arg(repo_root().join("scripts").join("bench_writes.py"))
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bench_writes.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
}

fn folder_bytes(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let scale = arg("--scale", 1) as f64;
    let rows = arg("--rows", 6_000_000);
    let iterations = arg("--iterations", 3).max(1);
    let data = repo_root()
        .join("target")
        .join("bench-data")
        .join(format!("tpch-sf{scale}"));
    if quiver_coordinator::tpch::ensure(&data, scale)? {
        eprintln!("generated TPC-H SF{scale}");
    }
    let data = std::fs::canonicalize(&data)?;
    let scratch = tempfile::tempdir_in(repo_root().join("target"))?;
    let lake = scratch.path().join("lake");
    std::fs::create_dir_all(&lake)?;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[workers]\ncount = 2\n[cache]\nenabled = false\n\
         [[source]]\nname = \"tpch\"\nkind = \"files\"\nlocation = {:?}\n\
         [[source]]\nname = \"lake\"\nkind = \"files\"\nlocation = {:?}\nwritable = true\n\
         [[source]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"postgres://quiver:quiver@127.0.0.1:54329/quiver\"\nwritable = true\nstatement_timeout_secs = 0\n",
        data.display().to_string(),
        lake.display().to_string()
    );
    let parsed =
        quiver_coordinator::QuiverConfig::parse(&config, Path::new("/")).map_err(|e| anyhow!(e))?;
    let server = quiver_coordinator::start(parsed).await?;
    let mut client = FlightSqlServiceClient::new(
        Endpoint::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await?,
    );

    // 1. COPY to Parquet.
    let mut times = vec![];
    let mut bytes = 0;
    for i in 0..=iterations {
        let out = lake.join(format!("copy{i}"));
        let (d, _) = timed(
            &mut client,
            &format!(
                "COPY (SELECT * FROM tpch.lineitem) TO '{}/' (FORMAT parquet)",
                out.display()
            ),
        )
        .await?;
        bytes = folder_bytes(&out);
        std::fs::remove_dir_all(&out)?;
        if i > 0 {
            times.push(d);
        }
    }
    let quiver_copy = median(times);
    let duck = helper(&[
        "duckdb-copy",
        &data.join("lineitem").to_string_lossy(),
        &scratch.path().join("duck").to_string_lossy(),
        &iterations.to_string(),
    ])?;
    let duck_s = duck["seconds"].as_f64().context("duckdb seconds")?;
    let duck_bytes = duck["bytes"].as_u64().unwrap_or(0);
    println!("COPY lineitem SF{scale} to Parquet:");
    println!(
        "  Quiver (2 embedded workers): {:.2}s, {} MB written, {:.0} MB/s",
        quiver_copy.as_secs_f64(),
        bytes / 1_000_000,
        mb_per_s(bytes, quiver_copy)
    );
    println!(
        "  DuckDB COPY:                 {duck_s:.2}s, {} MB written, {:.0} MB/s",
        duck_bytes / 1_000_000,
        mb_per_s(duck_bytes, Duration::from_secs_f64(duck_s))
    );
    println!(
        "  time ratio Quiver/DuckDB: {:.2}",
        quiver_copy.as_secs_f64() / duck_s
    );

    // 2. Ingest into PostgreSQL.
    let csv = scratch.path().join("ingest.csv");
    helper(&["make-csv", &rows.to_string(), &csv.to_string_lossy()])?;
    let csv_bytes = std::fs::metadata(&csv)?.len();
    psql("DROP TABLE IF EXISTS bench_ingest; DROP TABLE IF EXISTS bench_copy")?;
    let ingest = helper(&[
        "adbc-ingest",
        &format!("grpc://{}", server.addr),
        "quiver",
        "pg",
        "bench_ingest",
        &csv.to_string_lossy(),
    ])?;
    let ingest_s = ingest["seconds"].as_f64().context("ingest seconds")?;
    anyhow::ensure!(
        psql("SELECT count(*) FROM bench_ingest")?.0 == rows.to_string(),
        "ingest lost rows"
    );
    psql("CREATE TABLE bench_copy (id bigint, qty integer, price double precision, ship date, comment text)")?;
    let t = Instant::now();
    let out = Command::new("psql")
        .args(common::PG)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("\\copy bench_copy FROM '{}' CSV HEADER", csv.display()),
        ])
        .env("PGPASSWORD", "quiver")
        .output()?;
    let copy_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "psql \\copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    psql("DROP TABLE IF EXISTS bench_ingest; DROP TABLE IF EXISTS bench_copy")?;
    println!(
        "Ingest of {rows} rows ({} MB of CSV) into PostgreSQL:",
        csv_bytes / 1_000_000
    );
    println!(
        "  adbc_ingest through Quiver: {ingest_s:.2}s ({:.0} rows/s)",
        rows as f64 / ingest_s
    );
    println!(
        "  psql \\copy of the CSV:      {copy_s:.2}s ({:.0} rows/s)",
        rows as f64 / copy_s
    );
    println!("  time ratio Quiver/psql: {:.2}", ingest_s / copy_s);
    server.shutdown().await?;
    Ok(())
}
