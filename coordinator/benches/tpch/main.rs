//! TPC-H through Quiver (Flight SQL, embedded workers) against single-node
//! DataFusion, DuckDB (from PyPI, if installed in target/venv) and a Ballista
//! cluster (if installed by scripts/install-ballista.sh), in one run.
//!
//! cargo bench -p quiver-coordinator --bench tpch -- [--scale 1] [--iterations 3] [--workers 2]
//!     [--worker-processes] [--no-exchanges] [--no-ballista] [--single-stage-max-bytes 0]
//!     [--query-memory-limit 8GiB] [--broadcast-join-max-bytes 32MiB] [--throughput-only]
//!     [--join-order written] [--exchange-mode files] [--no-dynamic-filters]
//!
//! `--worker-processes`: the workers are separate `quiver worker` processes (a
//! static pool) instead of in-process ones, so exchanges cross processes over
//! Flight; the report then also measures shuffle throughput between them (on a
//! second coordinator with `single_stage_max_bytes = 0`, so the query runs as stages).
//! `--no-exchanges`: `workers.exchanges = false` (joins and final aggregates on the
//! coordinator), for comparison.
//!
//! `--throughput-only`: only the throughput measurements (`SELECT *` to a client
//! through the coordinator, then straight from the workers' endpoints on a coordinator
//! with `workers.client_endpoints = true`, and the shuffle), without the 22 queries
//! and the baselines.
//!
//! Ballista runs with as many executor processes as Quiver has workers.
//!
//! Prints a Markdown report (per-query times and ratios, totals, and the rate at
//! which `SELECT * FROM lineitem` streams to a Flight client).

mod answers;
mod baselines;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

struct Args {
    scale: f64,
    iterations: usize,
    workers: usize,
    data_dir: PathBuf,
    /// server.target_partitions, when set.
    partitions: Option<usize>,
    /// Only these queries (1-based); all when empty.
    only: Vec<usize>,
    worker_processes: bool,
    exchanges: bool,
    ballista: bool,
    /// workers.single_stage_max_bytes, when set (the default is the product's).
    single_stage: Option<String>,
    /// workers.query_memory_limit, when set.
    query_memory: Option<String>,
    /// workers.broadcast_join_max_bytes, when set.
    broadcast: Option<String>,
    throughput_only: bool,
    /// server.join_order, when set.
    join_order: Option<String>,
    /// workers.exchange_mode, when set.
    exchange_mode: Option<String>,
    /// workers.dynamic_filters.
    dynamic_filters: bool,
}

impl Args {
    /// The `[workers]` settings given on the command line, as (key, value), with
    /// `single_stage` in place of `--single-stage-max-bytes`.
    fn worker_settings<'a>(
        &'a self,
        single_stage: Option<&'a str>,
    ) -> Vec<(&'static str, &'a str)> {
        [
            ("single_stage_max_bytes", single_stage),
            ("query_memory_limit", self.query_memory.as_deref()),
            ("broadcast_join_max_bytes", self.broadcast.as_deref()),
            ("exchange_mode", self.exchange_mode.as_deref()),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect()
    }
}

/// The repository's root (benches run with the coordinator crate as their directory).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        scale: 1.0,
        iterations: 3,
        workers: 2,
        data_dir: repo_root().join("target").join("bench-data"),
        only: vec![],
        partitions: None,
        worker_processes: false,
        exchanges: true,
        ballista: true,
        single_stage: None,
        query_memory: None,
        broadcast: None,
        throughput_only: false,
        join_order: None,
        exchange_mode: None,
        dynamic_filters: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--scale" => args.scale = value()?.parse()?,
            "--iterations" => args.iterations = value()?.parse()?,
            "--workers" => args.workers = value()?.parse()?,
            "--data-dir" => args.data_dir = PathBuf::from(value()?),
            "--partitions" => args.partitions = Some(value()?.parse()?),
            "--queries" => {
                args.only = value()?
                    .split(',')
                    .map(|q| q.trim().trim_start_matches('q').parse())
                    .collect::<Result<_, _>>()?
            }
            "--worker-processes" => args.worker_processes = true,
            "--no-exchanges" => args.exchanges = false,
            "--no-ballista" => args.ballista = false,
            "--single-stage-max-bytes" => args.single_stage = Some(value()?),
            "--query-memory-limit" => args.query_memory = Some(value()?),
            "--broadcast-join-max-bytes" => args.broadcast = Some(value()?),
            "--throughput-only" => args.throughput_only = true,
            "--join-order" => args.join_order = Some(value()?),
            "--exchange-mode" => args.exchange_mode = Some(value()?),
            "--no-dynamic-filters" => args.dynamic_filters = false,
            "--bench" => {}
            other => return Err(anyhow!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn queries() -> Result<Vec<String>> {
    let dir = repo_root().join("tests").join("tpch");
    (1..=22)
        .map(|n| std::fs::read_to_string(dir.join(format!("q{n}.sql"))).context("read query"))
        .collect()
}

async fn connect(
    server: &quiver_coordinator::RunningCoordinator,
) -> Result<FlightSqlServiceClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    Ok(FlightSqlServiceClient::new(channel))
}

async fn quiver_query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let info = client.execute(sql.to_string(), None).await?;
    let mut out = vec![];
    for ep in info.endpoint {
        let ticket = ep.ticket.ok_or_else(|| anyhow!("no ticket"))?;
        out.extend(client.do_get(ticket).await?.try_collect::<Vec<_>>().await?);
    }
    Ok(out)
}

/// Prints the wall-clock time of a phase boundary to stderr, in seconds since the Unix
/// epoch: a profile recorded with `perf record -k CLOCK_REALTIME` is sliced at these
/// times with `perf report --time START,END`.
fn mark(what: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!("mark: {what} at {:.6}", now.as_secs_f64());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let dir = args.data_dir.join(format!("tpch-sf{}", args.scale));
    let started = Instant::now();
    if quiver_coordinator::tpch::ensure(&dir, args.scale)? {
        eprintln!(
            "generated TPC-H SF{} in {:.1}s",
            args.scale,
            started.elapsed().as_secs_f64()
        );
    }
    let dir = std::fs::canonicalize(&dir)?;
    let mut processes = Processes(vec![]);
    let pool = if args.worker_processes {
        let mut addresses = vec![];
        for i in 0..args.workers {
            let (child, addr) = start_worker(&format!("bench-{}", i + 1))?;
            processes.0.push(child);
            addresses.push(format!("{addr:?}"));
        }
        format!(
            "mode = \"static\"\naddresses = [{}]\n",
            addresses.join(", ")
        )
    } else {
        format!("count = {}\n", args.workers)
    };
    let config = |single_stage: Option<&str>, extra: &str| {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}{}[cluster]\nsecret = {BENCH_SECRET:?}\n[workers]\n{pool}{}{extra}exchanges = {}\ndynamic_filters = {}\n[[source]]\nname = \"tpch\"\nkind = \"files\"\nlocation = {:?}\n",
            args.partitions.map(|p| format!("target_partitions = {p}\n")).unwrap_or_default(),
            args.join_order.as_ref().map(|o| format!("join_order = {o:?}\n")).unwrap_or_default(),
            args.worker_settings(single_stage).iter().map(|(k, v)| format!("{k} = {v:?}\n")).collect::<String>(),
            args.exchanges,
            args.dynamic_filters,
            dir.display().to_string()
        );
        quiver_coordinator::QuiverConfig::parse(&text, &dir).map_err(|e| anyhow!(e))
    };
    let server = quiver_coordinator::start(config(args.single_stage.as_deref(), "")?).await?;
    let mut client = connect(&server).await?;

    let reference = SessionContext::new();
    for t in quiver_coordinator::tpch::TABLES {
        reference
            .register_parquet(
                t,
                format!("{}/{t}/", dir.display()),
                ParquetReadOptions::default(),
            )
            .await?;
    }

    let queries = queries()?;
    let mut rows = vec![];
    for (i, sql) in queries.iter().enumerate() {
        if args.throughput_only || (!args.only.is_empty() && !args.only.contains(&(i + 1))) {
            rows.push((Duration::ZERO, Duration::ZERO));
            continue;
        }
        // One warm-up run each, so both read from the page cache.
        let q = quiver_query(&mut client, sql)
            .await
            .with_context(|| format!("q{}", i + 1))?;
        let d = reference.sql(sql).await?.collect().await?;
        // Every answer is DataFusion's, value by value.
        answers::same(&q, &d).map_err(|e| anyhow!("q{}: Quiver's answer differs: {e}", i + 1))?;
        let (mut tq, mut td) = (vec![], vec![]);
        for _ in 0..args.iterations {
            let t = Instant::now();
            quiver_query(&mut client, sql).await?;
            tq.push(t.elapsed());
            let t = Instant::now();
            reference.sql(sql).await?.collect().await?;
            td.push(t.elapsed());
        }
        rows.push((median(tq), median(td)));
        eprintln!(
            "q{:<2} quiver {:>8.1} ms  datafusion {:>8.1} ms",
            i + 1,
            rows[i].0.as_secs_f64() * 1e3,
            rows[i].1.as_secs_f64() * 1e3
        );
    }

    if !args.only.is_empty() {
        server.shutdown().await?;
        return Ok(());
    }
    // Streaming a whole table to a Flight client.
    mark("relay SELECT * start");
    let mut stream_runs = vec![];
    let mut stream_bytes = 0usize;
    let mut stream_rows = 0usize;
    for _ in 0..args.iterations {
        let t = Instant::now();
        let info = client
            .execute("SELECT * FROM lineitem".into(), None)
            .await?;
        let (mut bytes, mut n) = (0, 0);
        for ep in info.endpoint {
            let (r, b) = count_rows_and_bytes(
                client
                    .do_get(ep.ticket.ok_or_else(|| anyhow!("no ticket"))?)
                    .await?,
            )
            .await?;
            (n, bytes) = (n + r, bytes + b);
        }
        stream_runs.push(t.elapsed());
        (stream_bytes, stream_rows) = (bytes, n);
    }
    let stream = median(stream_runs);
    mark("relay SELECT * end");
    server.shutdown().await?;
    // The shuffle query reads one column and would run whole on one worker at the
    // default threshold: a coordinator of its own over the same workers forces stages.
    let shuffle = if args.worker_processes && args.exchanges {
        let server = quiver_coordinator::start(config(Some("0"), "")?).await?;
        mark("shuffle start");
        let measured = shuffle_throughput(&mut connect(&server).await?, args.iterations).await;
        mark("shuffle end");
        server.shutdown().await?;
        measured?
    } else {
        None
    };
    // The same scan handed to the client as endpoints on the workers.
    let endpoints = {
        let server = quiver_coordinator::start(config(
            args.single_stage.as_deref(),
            "client_endpoints = true\n",
        )?)
        .await?;
        let measured = endpoint_throughput(&mut connect(&server).await?, args.iterations).await;
        server.shutdown().await?;
        measured?
    };
    drop(processes);
    if args.throughput_only {
        print_throughput(stream, stream_bytes, stream_rows, shuffle, &endpoints);
        return Ok(());
    }
    // Baselines run after Quiver has stopped, each with the machine to itself.
    let mut baselines: Vec<baselines::Baseline> = vec![];
    baselines.extend(baselines::duckdb(&dir, args.iterations));
    if args.ballista {
        let vcores = args.partitions.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        baselines.extend(baselines::ballista(
            &dir,
            &queries,
            args.iterations,
            args.workers,
            vcores,
        ));
    }

    let kind = if args.worker_processes {
        "worker processes"
    } else {
        "embedded workers"
    };
    let mode = match (args.exchanges, args.dynamic_filters) {
        (true, true) => String::new(),
        (false, _) => ", exchanges off".to_string(),
        (true, false) => ", dynamic_filters = false".to_string(),
    };
    let mode = mode
        + &args
            .worker_settings(args.single_stage.as_deref())
            .iter()
            .map(|(k, v)| format!(", {k} = {v}"))
            .collect::<String>();
    let names: Vec<&str> = baselines.iter().map(|b| b.name).collect();
    println!(
        "### TPC-H SF{} — Quiver ({} {kind}{mode}) vs single-node DataFusion{}\n",
        args.scale,
        args.workers,
        names.iter().map(|n| format!(", {n}")).collect::<String>()
    );
    println!(
        "Median of {} runs after one warm-up, same machine ({} cores), one engine at a time.",
        args.iterations,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for b in &baselines {
        println!("{}.", b.setup);
    }
    println!();
    let head: String = names
        .iter()
        .map(|n| format!(" {n} ms | Quiver/{n} |"))
        .collect();
    println!("| query | Quiver ms | DataFusion ms | Quiver/DataFusion |{head}");
    println!(
        "|---|---:|---:|---:|{}",
        "---:|---:|".repeat(baselines.len())
    );
    let (mut sq, mut sd) = (0.0, 0.0);
    for (i, (q, d)) in rows.iter().enumerate() {
        let (q, d) = (q.as_secs_f64() * 1e3, d.as_secs_f64() * 1e3);
        sq += q;
        sd += d;
        let extra: String = baselines
            .iter()
            .map(|b| match b.times.get(i).copied().flatten() {
                Some(t) => format!(" {:.1} | {:.2}× |", t * 1e3, q / (t * 1e3)),
                None => " failed | – |".to_string(),
            })
            .collect();
        println!("| q{} | {q:.1} | {d:.1} | {:.2}× |{extra}", i + 1, q / d);
    }
    let extra: String = baselines
        .iter()
        .map(|b| {
            // Over the queries the baseline answered, so a failure does not flatter either side.
            let both: Vec<(f64, f64)> = b
                .times
                .iter()
                .zip(&rows)
                .filter_map(|(t, (q, _))| Some((t.as_ref()? * 1e3, q.as_secs_f64() * 1e3)))
                .collect();
            let (tb, tq): (f64, f64) = (
                both.iter().map(|x| x.0).sum(),
                both.iter().map(|x| x.1).sum(),
            );
            let note = if both.len() < rows.len() {
                format!(" ({} of {} queries)", both.len(), rows.len())
            } else {
                String::new()
            };
            format!(" **{tb:.1}**{note} | **{:.2}×** |", tq / tb)
        })
        .collect();
    println!(
        "| **total** | **{sq:.1}** | **{sd:.1}** | **{:.2}×** |{extra}",
        sq / sd
    );
    print_throughput(stream, stream_bytes, stream_rows, shuffle, &endpoints);
    Ok(())
}

fn print_throughput(
    stream: Duration,
    stream_bytes: usize,
    stream_rows: usize,
    shuffle: Option<(u64, f64)>,
    endpoints: &Endpoints,
) {
    let secs = stream.as_secs_f64();
    println!(
        "\n`SELECT * FROM lineitem` streamed to a Flight SQL client: {stream_rows} rows, {:.2} GB of Arrow data in {secs:.2} s = **{:.2} GB/s**, {:.1} M rows/s.",
        stream_bytes as f64 / 1e9,
        stream_bytes as f64 / 1e9 / secs,
        stream_rows as f64 / 1e6 / secs
    );
    let gb = endpoints.bytes as f64 / 1e9;
    println!(
        "\nThe same with `workers.client_endpoints = true` ({} endpoints on the workers, {} rows, {gb:.2} GB): fetched one after another **{:.2} GB/s**, all at once **{:.2} GB/s**.",
        endpoints.count,
        endpoints.rows,
        gb / endpoints.sequential.as_secs_f64(),
        gb / endpoints.parallel.as_secs_f64()
    );
    if let Some((bytes, secs)) = shuffle {
        println!(
            "\nShuffle between the worker processes (`{SHUFFLE_SQL}`): {:.2} GB written to and read from exchanges in {secs:.2} s = **{:.2} GB/s** (bytes through the exchange / wall time of the query).",
            bytes as f64 / 1e9,
            bytes as f64 / 1e9 / secs
        );
    }
}

/// A grouped aggregate whose partial aggregate barely reduces (almost every comment
/// is unique), so nearly all of lineitem's comments cross the exchange.
const SHUFFLE_SQL: &str =
    "SELECT count(*) FROM (SELECT l_comment, count(*) AS n FROM lineitem GROUP BY l_comment)";

/// `SELECT *` fetched straight from the workers' endpoints, one after another and all at once.
struct Endpoints {
    count: usize,
    rows: usize,
    bytes: usize,
    sequential: Duration,
    parallel: Duration,
}

async fn endpoint_throughput(
    client: &mut FlightSqlServiceClient<Channel>,
    iterations: usize,
) -> Result<Endpoints> {
    let mut out = Endpoints {
        count: 0,
        rows: 0,
        bytes: 0,
        sequential: Duration::ZERO,
        parallel: Duration::ZERO,
    };
    for parallel in [false, true] {
        let phase = if parallel {
            "endpoints in parallel"
        } else {
            "endpoints one after another"
        };
        mark(&format!("{phase} start"));
        let mut runs = vec![];
        for _ in 0..iterations.max(1) {
            let t = Instant::now();
            let info = client
                .execute("SELECT * FROM lineitem".into(), None)
                .await?;
            let endpoints = info.endpoint;
            if endpoints.len() < 2 || endpoints.iter().any(|e| e.location.is_empty()) {
                return Err(anyhow!(
                    "expected the scan as endpoints on the workers, got {} endpoint(s)",
                    endpoints.len()
                ));
            }
            out.count = endpoints.len();
            let (mut rows, mut bytes) = (0, 0);
            if parallel {
                let tasks: Vec<_> = endpoints
                    .into_iter()
                    .map(|e| tokio::spawn(fetch_from_worker(e)))
                    .collect();
                for task in tasks {
                    let (r, b) = task.await??;
                    (rows, bytes) = (rows + r, bytes + b);
                }
            } else {
                for e in endpoints {
                    let (r, b) = fetch_from_worker(e).await?;
                    (rows, bytes) = (rows + r, bytes + b);
                }
            }
            runs.push(t.elapsed());
            (out.rows, out.bytes) = (rows, bytes);
        }
        mark(&format!("{phase} end"));
        match parallel {
            true => out.parallel = median(runs),
            false => out.sequential = median(runs),
        }
    }
    Ok(out)
}

/// Rows and value bytes of one endpoint, read from the worker its location names.
async fn fetch_from_worker(endpoint: arrow_flight::FlightEndpoint) -> Result<(usize, usize)> {
    let uri = endpoint
        .location
        .first()
        .map(|l| l.uri.replace("grpc+tcp://", "http://"))
        .ok_or_else(|| anyhow!("no location"))?;
    let ticket = endpoint.ticket.ok_or_else(|| anyhow!("no ticket"))?;
    let channel = Endpoint::from_shared(uri)?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut worker = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX);
    let data = worker
        .do_get(ticket)
        .await?
        .into_inner()
        .map_err(arrow_flight::error::FlightError::from);
    count_rows_and_bytes(arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(data))
        .await
}

/// Rows and bytes of the values themselves (sliced buffers counted once, not whole) of a
/// Flight stream, read to its end.
async fn count_rows_and_bytes(
    mut batches: arrow_flight::decode::FlightRecordBatchStream,
) -> Result<(usize, usize)> {
    let (mut rows, mut bytes) = (0, 0);
    while let Some(b) = batches.try_next().await? {
        bytes += b
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum::<usize>();
        rows += b.num_rows();
    }
    Ok((rows, bytes))
}

/// Median wall time of SHUFFLE_SQL and the bytes its stage tasks wrote to exchanges.
async fn shuffle_throughput(
    client: &mut FlightSqlServiceClient<Channel>,
    iterations: usize,
) -> Result<Option<(u64, f64)>> {
    let mut runs = vec![];
    for _ in 0..iterations.max(1) {
        let t = Instant::now();
        quiver_query(client, SHUFFLE_SQL).await?;
        runs.push(t.elapsed());
    }
    let bytes_sql = "SELECT sum(f.bytes) FROM system.fragments f JOIN system.queries q ON f.query_id = q.id \
         WHERE q.sql LIKE 'SELECT count(*) FROM (SELECT l_comment%' AND f.stage > 0 AND f.state = 'finished' \
         GROUP BY q.id ORDER BY min(q.started_at) DESC LIMIT 1";
    let batches = quiver_query(client, bytes_sql).await?;
    let bytes = batches.iter().find(|b| b.num_rows() > 0).and_then(|b| {
        b.column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .map(|a| a.value(0))
    });
    Ok(bytes.map(|b| (b as u64, median(runs).as_secs_f64())))
}

/// Child processes (Quiver workers, a Ballista cluster), killed when dropped.
struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Shared by the bench's coordinator and its worker processes (loopback only).
const BENCH_SECRET: &str = "quiver-bench-cluster-secret-0123456789";

/// Starts `quiver worker` and waits for its address.
fn start_worker(id: &str) -> Result<(std::process::Child, String)> {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["worker", "--listen", "127.0.0.1:0", "--id", id])
        .env("QUIVER_LOG", "warn")
        .env("QUIVER_CLUSTER_SECRET", BENCH_SECRET)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("start quiver worker")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next() {
        if let Some(addr) = line?.strip_prefix("quiver: worker listening on ") {
            let addr = addr.trim().to_string();
            // Keep draining its output so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok((child, addr));
        }
    }
    Err(anyhow!("quiver worker {id} exited before it listened"))
}
