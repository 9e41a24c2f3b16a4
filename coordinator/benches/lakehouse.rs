//! Lakehouse benchmarks, in one run: the 22 TPC-H queries over the same data stored
//! as plain Parquet, as Delta tables and as Iceberg tables (the copies written by
//! scripts/bench-lakehouse.py with the deltalake and pyiceberg packages of
//! target/venv), each through Quiver with 2 embedded workers; and planning a query
//! on a table of 10,000 files in each format (after the first query).
//!
//! scripts/setup-python.sh
//! cargo bench -p quiver-coordinator --bench lakehouse -- [--scale 1] [--iterations 3]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use tonic::transport::{Channel, Endpoint};

use common::{median, timed};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A coordinator with 2 embedded workers whose default schema is `source`.
async fn start(
    source: &str,
) -> Result<(
    quiver_coordinator::RunningCoordinator,
    FlightSqlServiceClient<Channel>,
)> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\n\
         [workers]\ncount = 2\n[cache]\nenabled = false\n{source}"
    );
    let config =
        quiver_coordinator::QuiverConfig::parse(&text, Path::new("/")).map_err(|e| anyhow!(e))?;
    let server = quiver_coordinator::start(config).await?;
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    Ok((server, FlightSqlServiceClient::new(channel)))
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let (scale, iterations) = (arg("--scale", 1.0f64), arg("--iterations", 3usize));
    let data = repo_root().join("target").join("bench-data");
    let tpch = data.join(format!("tpch-sf{scale}"));
    quiver_coordinator::tpch::ensure(&tpch, scale)?;
    let tpch = std::fs::canonicalize(&tpch)?;
    // v2: one data file per Parquet file, snappy (see scripts/bench-lakehouse.py).
    let lake = data.join(format!("lakehouse-v2-sf{scale}"));
    std::fs::create_dir_all(&lake)?;
    let lake = std::fs::canonicalize(&lake)?;
    let t = Instant::now();
    let status = Command::new(repo_root().join("target/venv/bin/python"))
        .arg(repo_root().join("scripts/bench-lakehouse.py"))
        .args([&tpch, &lake])
        .status()
        .context(
            "run scripts/bench-lakehouse.py (scripts/setup-python.sh installs its packages)",
        )?;
    anyhow::ensure!(status.success(), "bench-lakehouse.py failed");
    eprintln!(
        "Delta and Iceberg copies ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let sources = [
        ("Parquet", format!("[[source]]\nname = \"tpch\"\nkind = \"files\"\nlocation = {:?}\n", tpch.display().to_string())),
        ("Delta", format!("[[source]]\nname = \"tpch\"\nkind = \"delta\"\nlocation = {:?}\n", lake.join("delta").display().to_string())),
        (
            "Iceberg",
            format!(
                "[[source]]\nname = \"tpch\"\nkind = \"iceberg\"\ncatalog_url = \"sqlite://{}\"\nnamespace = \"tpch\"\n",
                lake.join("iceberg/catalog.db").display()
            ),
        ),
    ];
    let queries: Vec<String> = (1..=22)
        .map(|n| std::fs::read_to_string(repo_root().join(format!("tests/tpch/q{n}.sql"))))
        .collect::<Result<_, _>>()?;
    // times[format][query]
    let mut times: Vec<Vec<Duration>> = vec![];
    let mut answers: Vec<Vec<usize>> = vec![];
    for (name, source) in &sources {
        let (server, mut client) = start(source).await?;
        let (mut per_query, mut rows) = (vec![], vec![]);
        for (i, sql) in queries.iter().enumerate() {
            let (_, n) = timed(&mut client, sql)
                .await
                .with_context(|| format!("{name} q{}", i + 1))?;
            let mut runs = vec![];
            for _ in 0..iterations {
                runs.push(timed(&mut client, sql).await?.0);
            }
            per_query.push(median(runs));
            rows.push(n);
        }
        eprintln!(
            "{name}: {:.2}s in total",
            per_query.iter().map(Duration::as_secs_f64).sum::<f64>()
        );
        server.shutdown().await?;
        times.push(per_query);
        answers.push(rows);
    }
    anyhow::ensure!(
        answers.iter().all(|a| a == &answers[0]),
        "the formats answered with different row counts: {answers:?}"
    );

    println!("### TPC-H SF{scale}: the same data as Parquet, Delta and Iceberg (2 embedded workers, median of {iterations})\n");
    println!(
        "| query | Parquet (s) | Delta (s) | Delta / Parquet | Iceberg (s) | Iceberg / Parquet |"
    );
    println!("|---|---|---|---|---|---|");
    let secs = |d: Duration| d.as_secs_f64();
    let rows = times[0].iter().zip(&times[1]).zip(&times[2]);
    for (q, ((p, d), i)) in rows.enumerate().take(queries.len()) {
        let (p, d, i) = (secs(*p), secs(*d), secs(*i));
        println!(
            "| q{} | {p:.3} | {d:.3} | {:.2}× | {i:.3} | {:.2}× |",
            q + 1,
            d / p,
            i / p
        );
    }
    let total = |f: usize| times[f].iter().map(|d| secs(*d)).sum::<f64>();
    let (p, d, i) = (total(0), total(1), total(2));
    println!(
        "| **total** | **{p:.2}** | **{d:.2}** | **{:.2}×** | **{i:.2}** | **{:.2}×** |\n",
        d / p,
        i / p
    );

    // Planning on a table of 10,000 files: EXPLAIN after a first query (which reads
    // the log or the manifests once), and the point query itself.
    println!("### A table of 10,000 files (one row each), after the first query, median of 10\n");
    println!("| format | EXPLAIN (ms) | `WHERE id = 4242` (ms) |");
    println!("|---|---|---|");
    let many = [
        ("Delta", format!("[[source]]\nname = \"tpch\"\nkind = \"delta\"\nlocation = {:?}\n", lake.join("delta-many").display().to_string())),
        (
            "Iceberg",
            format!(
                "[[source]]\nname = \"tpch\"\nkind = \"iceberg\"\ncatalog_url = \"sqlite://{}\"\nnamespace = \"many\"\n",
                lake.join("iceberg/catalog.db").display()
            ),
        ),
    ];
    let point = "SELECT v FROM many WHERE id = 4242";
    for (name, source) in &many {
        let (server, mut client) = start(source).await?;
        let (_, n) = timed(&mut client, point).await?;
        anyhow::ensure!(n == 1, "{name}: {n} rows for one id");
        let (mut explain, mut query) = (vec![], vec![]);
        for _ in 0..10 {
            explain.push(timed(&mut client, &format!("EXPLAIN {point}")).await?.0);
            query.push(timed(&mut client, point).await?.0);
        }
        println!(
            "| {name} | {:.1} | {:.1} |",
            secs(median(explain)) * 1e3,
            secs(median(query)) * 1e3
        );
        server.shutdown().await?;
    }
    Ok(())
}
