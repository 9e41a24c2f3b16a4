//! A live copy (`mode = 'changes'`) under a steady stream of changes, against the
//! PostgreSQL instance of scripts/services.sh: a writer applies about 5,000 row
//! changes a second (inserts, updates, deletes, in transactions of 500) to a
//! 1M-row table while the bench measures how far the copy is behind, checks
//! the copy against the source at checkpoints, and then compares a query on the
//! copy with the same query on plain Parquet files of the table.
//!
//! The lag is measured end to end: every transaction also sets a marker row to
//! its number, and the bench reads the marker from the copy every 200 ms; the lag
//! at that moment is the time since the first transaction the copy does not show
//! was committed (0 when it shows the last).
//!
//! scripts/services.sh start
//! cargo bench -p quiver-coordinator --bench live_copy -- [--rows 1000000] [--secs 60] [--rate 5000]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use common::{arg, measure, psql, timed};
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

const TABLE: &str = "bench_live";
const DATASET: &str = "quiver.pg.bench_live";
/// Changes per transaction: the marker, then inserts, deletes and updates.
const PER_TX: u64 = 500;

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

type Client = FlightSqlServiceClient<Channel>;

async fn batches(client: &mut Client, sql: &str) -> Result<Vec<RecordBatch>> {
    let info = client.execute(sql.to_string(), None).await?;
    let mut out = vec![];
    for ep in info.endpoint {
        let s = client.do_get(ep.ticket.context("ticket")?).await?;
        out.extend(s.try_collect::<Vec<_>>().await?);
    }
    Ok(out)
}

async fn text(client: &mut Client, sql: &str) -> Result<String> {
    let b = batches(client, sql).await?;
    let b = b.iter().find(|b| b.num_rows() > 0).context("no rows")?;
    let cells: Result<Vec<String>, _> = b
        .columns()
        .iter()
        .map(|c| datafusion::arrow::util::display::array_value_to_string(c, 0))
        .collect();
    Ok(cells?.join("|"))
}

/// What each committed transaction was, for the lag: (number, commit time).
#[derive(Default)]
struct Commits(Mutex<Vec<Instant>>);

impl Commits {
    /// The lag at `now` when the copy shows transaction `visible`.
    fn lag(&self, visible: u64, now: Instant) -> Duration {
        let c = self.0.lock();
        match c.get(visible as usize) {
            // Transaction n is the n-th in the list (0 is the marker's initial value).
            Some(first_missing) if *first_missing < now => now - *first_missing,
            _ => Duration::ZERO,
        }
    }

    fn last(&self) -> u64 {
        self.0.lock().len() as u64
    }
}

/// The writer: one transaction of `PER_TX` changes every `period`, while `run` is set.
struct Writer {
    client: tokio_postgres::Client,
    next_insert: u64,
    next_delete: u64,
    seed: u64,
    changes: u64,
}

impl Writer {
    async fn transaction(&mut self, number: u64) -> Result<()> {
        let (inserts, deletes) = (150u64, 150u64);
        let updates = PER_TX - 1 - inserts - deletes;
        let (i0, d0) = (self.next_insert, self.next_delete);
        self.next_insert += inserts;
        self.next_delete += deletes;
        // A pseudo-random run of live rows to update.
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let span = (self.next_insert - self.next_delete)
            .saturating_sub(updates + 1)
            .max(1);
        let u0 = self.next_delete + (self.seed >> 33) % span;
        let sql = format!(
            "BEGIN;
             UPDATE {TABLE} SET qty = {number} WHERE id = 0;
             INSERT INTO {TABLE} SELECT g, g % 50, (g % 100000) / 100.0, date '1995-01-01' + (g % 2000)::int, md5(g::text)
               FROM generate_series({i0}, {}) g;
             DELETE FROM {TABLE} WHERE id >= {d0} AND id < {};
             UPDATE {TABLE} SET qty = qty + 1, price = price + 0.01 WHERE id >= {u0} AND id < {};
             COMMIT;",
            i0 + inserts - 1,
            d0 + deletes,
            u0 + updates
        );
        self.client.batch_execute(&sql).await?;
        self.changes += PER_TX;
        Ok(())
    }
}

/// `count|sum(id)|sum(qty)|sum(price in cents)|sum(length(comment))` of the table.
const FINGERPRINT: &str =
    "count(*), sum(id), sum(qty), sum(CAST(price * 100 AS BIGINT)), sum(length(comment))";

fn source_fingerprint() -> Result<String> {
    Ok(psql(&format!("SELECT {FINGERPRINT} FROM {TABLE}"))?.0)
}

async fn run() -> Result<()> {
    let rows = arg("--rows", 1_000_000);
    let secs = arg("--secs", 60);
    let rate = arg("--rate", 5_000);
    let period = Duration::from_secs_f64(PER_TX as f64 / rate as f64);
    eprintln!("loading {rows} rows into {TABLE}...");
    // A slot left by an interrupted run would hold WAL and block the name.
    psql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'quiver%bench_live%' AND NOT active")?;
    psql(&format!(
        "DROP PUBLICATION IF EXISTS quiver_quiver_pg_bench_live;
         DROP TABLE IF EXISTS {TABLE};
         CREATE TABLE {TABLE} (id bigint PRIMARY KEY, qty int NOT NULL, price numeric(15,2) NOT NULL, ship date NOT NULL, comment text NOT NULL);
         INSERT INTO {TABLE} SELECT g, g % 50, (g % 100000) / 100.0, date '1995-01-01' + (g % 2000)::int, md5(g::text) FROM generate_series(0, {rows}) g;
         VACUUM ANALYZE {TABLE}"
    ))?;
    let home = tempfile::tempdir()?;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n[workers]\ncount = 2\n[cache]\nenabled = false\n\
         [[source]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"postgres://quiver:quiver@127.0.0.1:54329/quiver\"\nstatement_timeout_secs = 0\n",
        home.path().display().to_string()
    );
    let parsed =
        quiver_coordinator::QuiverConfig::parse(&config, Path::new("/")).map_err(|e| anyhow!(e))?;
    let server = quiver_coordinator::start(parsed).await?;
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut client = FlightSqlServiceClient::new(channel.clone());

    let t = Instant::now();
    timed(
        &mut client,
        &format!("ALTER TABLE {DATASET} SET (accelerated = true, mode = 'changes')"),
    )
    .await?;
    let initial = t.elapsed();

    let (pg, connection) = tokio_postgres::connect(
        "host=127.0.0.1 port=54329 user=quiver password=quiver dbname=quiver",
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    let mut writer = Writer {
        client: pg,
        next_insert: rows as u64 + 1,
        next_delete: 1,
        seed: 7,
        changes: 0,
    };
    let commits = Arc::new(Commits::default());
    let mut lags = vec![];
    let mut reported = vec![];
    let mut checkpoints = vec![];
    let phases = 3;
    let mut written = Duration::ZERO;
    for phase in 1..=phases {
        // Writing, with the sampler beside it.
        let stop = Instant::now() + Duration::from_secs(secs as u64) / phases;
        let sampler = {
            let (commits, mut client) = (
                commits.clone(),
                FlightSqlServiceClient::new(channel.clone()),
            );
            tokio::spawn(async move {
                let mut samples = vec![];
                let mut reported = vec![];
                while Instant::now() < stop {
                    let shown = text(
                        &mut client,
                        &format!("SELECT qty FROM {DATASET} WHERE id = 0"),
                    )
                    .await?;
                    let now = Instant::now();
                    let visible: u64 = shown.parse().context("marker")?;
                    samples.push(commits.lag(visible, now));
                    let status = text(&mut client, &format!("SELECT coalesce(lag_secs, 0) FROM quiver.system.accelerations WHERE dataset = '{DATASET}'")).await?;
                    reported.push(status.parse::<f64>().unwrap_or(f64::NAN));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                anyhow::Ok((samples, reported))
            })
        };
        let started = Instant::now();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while Instant::now() < stop {
            tick.tick().await;
            let number = commits.last() + 1;
            writer.transaction(number).await?;
            commits.0.lock().push(Instant::now());
        }
        written += started.elapsed();
        let (samples, status) = sampler.await??;
        lags.extend(samples);
        reported.extend(status);
        // Checkpoint: the writer pauses; the copy must come to equal the source.
        let last = commits.last();
        let t = Instant::now();
        loop {
            let shown: u64 = text(
                &mut client,
                &format!("SELECT qty FROM {DATASET} WHERE id = 0"),
            )
            .await?
            .parse()?;
            if shown == last {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(120),
                "the copy stopped at {shown} of {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let expected = source_fingerprint()?;
        let got = text(&mut client, &format!("SELECT {FINGERPRINT} FROM {DATASET}")).await?;
        anyhow::ensure!(
            got == expected,
            "checkpoint {phase}: the copy ({got}) differs from the source ({expected})"
        );
        checkpoints.push((t.elapsed(), got));
    }
    let achieved = writer.changes as f64 / written.as_secs_f64();

    // Reading: the copy (base, minus and plus the change set), then plain files of the same rows.
    let aggregate = |t: &str| {
        format!("SELECT qty, count(*) AS n, sum(price) AS s FROM {t} WHERE ship >= date '1996-01-01' GROUP BY qty")
    };
    let groups = |c: &str| -> Result<usize> {
        let n = psql(&format!(
            "SELECT count(DISTINCT qty) FROM {c} WHERE ship >= date '1996-01-01'"
        ))?
        .0;
        Ok(n.parse()?)
    };
    let expected_groups = groups(TABLE)?;
    let copy = measure(&mut client, &aggregate(DATASET), 5, expected_groups).await?;
    let anti_join = reads_change_set(&mut client, &aggregate(DATASET)).await?;
    // At rest: once the stream is quiet the change set is folded into the base.
    let t = Instant::now();
    while reads_change_set(&mut client, &aggregate(DATASET)).await? {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(60),
            "no compaction at rest"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let compacted_after = t.elapsed();
    let at_rest = measure(&mut client, &aggregate(DATASET), 5, expected_groups).await?;
    let all = batches(&mut client, &format!("SELECT * FROM {DATASET}")).await?;
    let files_dir = home.path().join("plain");
    std::fs::create_dir_all(&files_dir)?;
    let ctx = datafusion::prelude::SessionContext::new();
    let mut parquet = datafusion::common::config::TableParquetOptions::default();
    parquet.global.max_row_group_size = 128 * 1024;
    ctx.read_batches(all)?
        .repartition(datafusion::logical_expr::Partitioning::RoundRobinBatch(4))?
        .write_parquet(
            files_dir.to_string_lossy().as_ref(),
            Default::default(),
            Some(parquet),
        )
        .await?;
    timed(
        &mut client,
        &format!("ALTER TABLE {DATASET} SET (accelerated = false)"),
    )
    .await?;
    server.shutdown().await?;

    let config = format!(
        "{config}[[source]]\nname = \"lake\"\nkind = \"files\"\nformat = \"parquet\"\n[[source.table]]\nname = \"plain\"\nlocation = \"{}/\"\n",
        files_dir.display()
    );
    let parsed =
        quiver_coordinator::QuiverConfig::parse(&config, Path::new("/")).map_err(|e| anyhow!(e))?;
    let server = quiver_coordinator::start(parsed).await?;
    let mut client = FlightSqlServiceClient::new(
        Endpoint::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await?,
    );
    let files = measure(
        &mut client,
        &aggregate("quiver.lake.plain"),
        5,
        expected_groups,
    )
    .await?;
    server.shutdown().await?;

    let pct = |v: &mut Vec<Duration>, p: f64| -> Duration {
        v.sort();
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    let mut reported: Vec<Duration> = reported
        .into_iter()
        .filter(|v| v.is_finite())
        .map(Duration::from_secs_f64)
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "### Live copy ({} cores, {rows} rows in PostgreSQL, {secs} s of changes)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measurement | value |\n|---|---:|");
    println!(
        "| initial copy (`ALTER TABLE … mode = 'changes'` until consistent) | {:.1} s |",
        initial.as_secs_f64()
    );
    println!(
        "| changes applied by the writer | {} ({achieved:.0}/s, target rate {rate}/s) |",
        writer.changes
    );
    println!(
        "| lag samples (end to end, every 200 ms) | {} |",
        lags.len()
    );
    println!("| lag, median | {:.0} ms |", ms(pct(&mut lags, 0.5)));
    println!(
        "| **lag, 95th percentile** (target ≤ 2 s) | **{:.0} ms** |",
        ms(pct(&mut lags, 0.95))
    );
    println!("| lag, max | {:.0} ms |", ms(pct(&mut lags, 1.0)));
    if !reported.is_empty() {
        println!(
            "| `system.accelerations.lag_secs`, 95th percentile | {:.0} ms |",
            ms(pct(&mut reported, 0.95))
        );
    }
    for (i, (wait, fp)) in checkpoints.iter().enumerate() {
        println!("| checkpoint {}: equal to the source (count, sums) after the writer paused | {:.0} ms to catch up; `{fp}` |", i + 1, ms(*wait));
    }
    println!(
        "| aggregate on plain Parquet files of the same rows (median of 5) | {:.1} ms |",
        ms(files)
    );
    println!("| aggregate on the live copy right after the last checkpoint (median of 5; change set read beside the base: {anti_join}) | {:.1} ms |", ms(copy));
    println!(
        "| **copy with its change set / plain files** (target ≤ 1.2×) | **{:.2}×** |",
        ms(copy) / ms(files)
    );
    println!("| aggregate on the live copy at rest (compacted {:.1} s after the writer stopped; median of 5) | {:.1} ms |", compacted_after.as_secs_f64(), ms(at_rest));
    println!(
        "| **copy at rest / plain files** | **{:.2}×** |",
        ms(at_rest) / ms(files)
    );
    Ok(())
}

/// Whether the copy's plan for `sql` still reads a change set beside the base.
async fn reads_change_set(client: &mut Client, sql: &str) -> Result<bool> {
    let plan = batches(client, &format!("EXPLAIN {sql}")).await?;
    Ok(
        datafusion::arrow::util::pretty::pretty_format_batches(&plan)?
            .to_string()
            .contains("LeftAnti"),
    )
}
