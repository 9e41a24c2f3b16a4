//! Virtual-dataset benchmarks against the PostgreSQL instance of scripts/services.sh,
//! in one run: the same aggregate over a 6M-row PostgreSQL table read directly,
//! from its accelerated copy, and from the copy's Parquet files mounted as a plain
//! files source; and the client-side latency of a results-cache hit.
//!
//! scripts/services.sh start
//! cargo bench -p quiver-coordinator --bench datasets -- [--rows 6000000]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use common::{arg, measure, median, psql, timed};
use tonic::transport::Endpoint;

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let rows = arg("--rows", 6_000_000);
    let table = "bench_accel";
    if psql(&format!("SELECT count(*) FROM {table}"))
        .ok()
        .map(|(n, _)| n)
        != Some(rows.to_string())
    {
        eprintln!("loading {rows} rows into {table}...");
        psql(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint, qty int, price numeric(15,2), ship date, comment text);
             INSERT INTO {table} SELECT g, g % 50, (g % 100000) / 100.0, date '1995-01-01' + (g % 2000), md5(g::text) FROM generate_series(1, {rows}) g"
        ))?;
        psql(&format!("VACUUM ANALYZE {table}"))?;
    }
    let home = tempfile::tempdir()?;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[workers]\ncount = 2\n[cache]\nenabled = false\n\
         [[source]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"postgres://quiver:quiver@127.0.0.1:54329/quiver\"\nstatement_timeout_secs = 0\n",
        home.path().display().to_string()
    );
    let parsed =
        quiver_coordinator::QuiverConfig::parse(&config, Path::new("/")).map_err(|e| anyhow!(e))?;
    let server = quiver_coordinator::start(parsed).await?;
    let mut client = FlightSqlServiceClient::new(
        Endpoint::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await?,
    );
    let aggregate = |t: &str| {
        format!("SELECT qty, count(*) AS n, sum(price) AS s FROM {t} WHERE ship >= date '1996-01-01' GROUP BY qty")
    };

    let direct = measure(&mut client, &aggregate("quiver.pg.bench_accel"), 3, 50).await?;
    let t = Instant::now();
    // Sorted by the column the dashboard filters on, as a user would declare it.
    timed(
        &mut client,
        "ALTER TABLE quiver.pg.bench_accel SET (accelerated = true, sort_by = 'ship')",
    )
    .await?;
    let refresh = t.elapsed();
    let copy = measure(&mut client, &aggregate("quiver.pg.bench_accel"), 5, 50).await?;
    let accel_dir = home
        .path()
        .join("accelerations")
        .join("quiver.pg.bench_accel");
    let segment = std::fs::read_dir(&accel_dir)?
        .next()
        .context("a segment folder")??
        .path();
    server.shutdown().await?;

    // The copy's files as a plain files source, on a server with the cache on.
    let config = format!(
        "{config}[[source]]\nname = \"lake\"\nkind = \"files\"\nformat = \"parquet\"\n[[source.table]]\nname = \"copy\"\nlocation = {:?}\n",
        segment.display().to_string()
    )
    .replace("[cache]\nenabled = false\n", "[cache]\nenabled = true\n");
    let parsed =
        quiver_coordinator::QuiverConfig::parse(&config, Path::new("/")).map_err(|e| anyhow!(e))?;
    let server = quiver_coordinator::start(parsed).await?;
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut uncached = FlightSqlServiceClient::new(channel.clone());
    uncached.set_header("x-quiver-cache", "off");
    let files = measure(&mut uncached, &aggregate("quiver.lake.copy"), 5, 50).await?;
    let mut client = FlightSqlServiceClient::new(channel);
    let hits = measure(&mut client, &aggregate("quiver.lake.copy"), 50, 50).await?;
    server.shutdown().await?;

    // Baseline: single-node DataFusion in this process over the same files.
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_parquet(
        "copy",
        segment.to_string_lossy().as_ref(),
        Default::default(),
    )
    .await?;
    let mut times = vec![];
    for i in 0..6 {
        let t = Instant::now();
        let groups = common::rows_of(&ctx, &aggregate("copy")).await?;
        anyhow::ensure!(groups == 50, "DataFusion returned {groups} groups");
        if i > 0 {
            times.push(t.elapsed());
        }
    }
    let datafusion = median(times);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "### Virtual datasets ({} cores, {rows} rows in PostgreSQL)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measurement | time | ratio |\n|---|---:|---:|");
    println!(
        "| aggregate, PostgreSQL directly (pushed down; median of 3) | {:.1} ms | 1 |",
        ms(direct)
    );
    println!(
        "| aggregate, accelerated copy (median of 5) | {:.1} ms | {:.1}× faster than directly |",
        ms(copy),
        ms(direct) / ms(copy)
    );
    println!("| aggregate, the copy's Parquet files as a files source (median of 5) | {:.1} ms | copy / files {:.2}× |", ms(files), ms(copy) / ms(files));
    println!("| aggregate, single-node DataFusion in process over the same files (median of 5) | {:.1} ms | copy / DataFusion {:.2}× |", ms(datafusion), ms(copy) / ms(datafusion));
    println!(
        "| first refresh of the copy (6M rows to Parquet) | {:.1} s | |",
        refresh.as_secs_f64()
    );
    println!("| the same dashboard query answered from the results cache, at the client (median of 50) | {:.2} ms | |", ms(hits));
    Ok(())
}
