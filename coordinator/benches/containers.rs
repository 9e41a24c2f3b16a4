//! Docker worker benchmarks against the real engine, with the images of
//! docker/build-images.sh:
//! - cold start: `docker create` + `start` of a worker container until it has served
//!   its first fragment (median of 10);
//! - burst: a burst of CPU-heavy queries on a pool at `min = 1` until `max` workers are ready;
//! - scale from zero: with `min = 0` and no worker running, the time from sending a small
//!   query (SF0.1) to its result, beside the same query on a warm worker (median of 5);
//! - TPC-H SF1, 22 queries, on 1, 2 and 4 worker containers limited to 1 CPU each.
//!
//! docker/build-images.sh && cargo bench -p quiver-coordinator --bench containers -- [--scale 1] [--image quiver:latest] [--only zero]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::Ticket;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let image = arg("--image", "quiver:latest");
    let scale: f64 = arg("--scale", "1").parse()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root
        .join("target")
        .join("bench-data")
        .join(format!("tpch-sf{scale}"));
    if quiver_coordinator::tpch::ensure(&dir, scale)? {
        eprintln!("generated TPC-H SF{scale}");
    }
    let dir = std::fs::canonicalize(&dir)?;
    let small = root.join("target").join("bench-data").join("tpch-sf0.1");
    quiver_coordinator::tpch::ensure(&small, 0.1)?;
    let small = std::fs::canonicalize(&small)?;
    let (from_zero, warm) = scale_from_zero(&image, &small, 5).await?;
    let zero_line = format!(
        "| first query (SF0.1 scan and aggregate) with zero workers running, to its result (median of 5) | {:.0} ms ({:.1}× the {:.0} ms on a warm worker) |",
        from_zero.as_secs_f64() * 1e3,
        from_zero.as_secs_f64() / warm.as_secs_f64(),
        warm.as_secs_f64() * 1e3
    );
    if arg("--only", "") == "zero" {
        println!("| measurement | result |\n|---|---:|\n{zero_line}");
        return Ok(());
    }

    let cold = cold_starts(&image, 10).await?;
    let burst = burst_to_max(&image, &dir).await?;
    let mut tpch = vec![];
    for n in [1usize, 2, 4] {
        tpch.push((n, tpch_total(&image, &dir, n).await?));
    }

    println!(
        "### Docker workers ({} cores)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measurement | result |\n|---|---:|");
    println!(
        "| container cold start to first fragment served (median of 10) | {:.0} ms |",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "| burst of queued work to max = 4 workers ready (min = 1) | {:.2} s |",
        burst.as_secs_f64()
    );
    println!("{zero_line}");
    let base = tpch[0].1.as_secs_f64();
    for (n, t) in &tpch {
        println!(
            "| TPC-H SF{scale}, 22 queries, {n} worker container(s) of 1 CPU | {:.2} s ({:.2}× of 1 container) |",
            t.as_secs_f64(),
            t.as_secs_f64() / base
        );
    }
    Ok(())
}

/// Starts a worker container and sends it a one-row fragment until it answers.
async fn cold_starts(image: &str, runs: usize) -> Result<Duration> {
    let network = "quiver-bench-cold";
    let _ = docker(&["network", "create", network]);
    let plan = PlaceholderRowExec::new(std::sync::Arc::new(
        datafusion::arrow::datatypes::Schema::empty(),
    ));
    let bytes = datafusion_proto::bytes::physical_plan_to_bytes(std::sync::Arc::new(plan))?;
    let ticket = quiver_proto::FragmentTicket {
        query_id: "bench".into(),
        fragment_id: 0,
        partition: 0,
        plan: bytes.to_vec(),
        memory_limit: 0,
        for_client: false,
        worker_address: String::new(),
        relay: false,
        string_views: false,
        exchange_scope: String::new(),
    };
    let ticket = prost::Message::encode_to_vec(&ticket);
    let mut times = vec![];
    for i in 0..runs {
        let name = format!("quiver-bench-cold-{i}");
        let started = Instant::now();
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            image,
            "worker",
            "--listen",
            "0.0.0.0:50061",
        ])?;
        let ip = docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            &name,
        ])?;
        let endpoint = Endpoint::from_shared(format!("http://{ip}:50061"))?;
        let served = loop {
            if let Ok(channel) = endpoint.connect().await {
                let mut client = FlightServiceClient::new(channel);
                if let Ok(response) = client
                    .do_get(Ticket {
                        ticket: ticket.clone().into(),
                    })
                    .await
                {
                    let mut stream = response.into_inner();
                    if stream.message().await.is_ok() {
                        break started.elapsed();
                    }
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "worker container {name} never served"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        times.push(served);
        docker(&["rm", "-f", &name])?;
    }
    let _ = docker(&["network", "rm", network]);
    Ok(median(times))
}

fn docker_config(
    image: &str,
    dir: &Path,
    cluster: &str,
    min: usize,
    max: usize,
    extra: &str,
) -> Result<quiver_coordinator::QuiverConfig> {
    let data = dir.display().to_string();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[workers]\nmode = \"docker\"\nimage = \"{image}\"\nmin = {min}\nmax = {max}\ncpus = 1.0\n\
         cluster = \"{cluster}\"\nvolumes = [\"{data}:{data}:ro\"]\nhealth_interval_secs = 0.5\n{extra}\n\
         [[source]]\nname = \"tpch\"\nkind = \"files\"\nlocation = {data:?}\n"
    );
    quiver_coordinator::QuiverConfig::parse(&text, dir).map_err(|e| anyhow!(e))
}

async fn client(addr: std::net::SocketAddr) -> Result<FlightSqlServiceClient<Channel>> {
    Ok(FlightSqlServiceClient::new(
        Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?,
    ))
}

async fn rows(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<usize> {
    let info = client.execute(sql.to_string(), None).await?;
    let mut n = 0;
    for ep in info.endpoint {
        let batches: Vec<_> = client
            .do_get(ep.ticket.context("ticket")?)
            .await?
            .try_collect()
            .await?;
        n += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    Ok(n)
}

/// Time from a burst of CPU-heavy queries until the pool has grown to `max`.
async fn burst_to_max(image: &str, dir: &Path) -> Result<Duration> {
    let config = docker_config(
        image,
        dir,
        "bench-burst",
        1,
        4,
        "busy_fragments = 1\ncooldown_secs = 1\nidle_secs = 600",
    )?;
    let server = quiver_coordinator::start(config).await?;
    let addr = server.addr;
    let started = Instant::now();
    let burst: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = client(addr).await?;
                rows(&mut c, "SELECT count(*) FROM quiver.tpch.lineitem WHERE levenshtein(l_comment, reverse(l_comment)) > 30").await
            })
        })
        .collect();
    let mut c = client(addr).await?;
    let reached = loop {
        let ready = server.pool.healthy().len();
        if ready >= 4 {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the pool did not reach 4 workers ({ready})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for q in burst {
        q.await??;
    }
    rows(&mut c, "SELECT 1").await?;
    server.shutdown().await?;
    Ok(reached)
}

/// With `min = 0`: waits until no worker runs, then times a small query from send to
/// result (the pool starts a worker for it), `runs` times; then the same query on
/// the warm worker. Returns both medians.
async fn scale_from_zero(image: &str, dir: &Path, runs: usize) -> Result<(Duration, Duration)> {
    let config = docker_config(
        image,
        dir,
        "bench-zero",
        0,
        2,
        "idle_secs = 1\ncooldown_secs = 0",
    )?;
    let server = quiver_coordinator::start(config).await?;
    let mut c = client(server.addr).await?;
    // TPC-H q1's grouping: four (returnflag, linestatus) groups.
    let sql = "SELECT l_returnflag, l_linestatus, sum(l_quantity) FROM quiver.tpch.lineitem \
               WHERE l_shipdate <= DATE '1998-09-02' GROUP BY l_returnflag, l_linestatus";
    let (mut cold, mut warm) = (vec![], vec![]);
    for _ in 0..runs {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.pool.all().is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "the pool did not scale to zero");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        let n = rows(&mut c, sql).await?;
        anyhow::ensure!(n == 4, "{n} rows, not q1's 4 groups");
        cold.push(started.elapsed());
        let started = Instant::now();
        rows(&mut c, sql).await?;
        warm.push(started.elapsed());
    }
    server.shutdown().await?;
    Ok((median(cold), median(warm)))
}

/// Total time of the 22 TPC-H queries (after one warm-up pass) on `n` containers.
async fn tpch_total(image: &str, dir: &Path, n: usize) -> Result<Duration> {
    let config = docker_config(image, dir, &format!("bench-tpch-{n}"), n, n, "")?;
    let server = quiver_coordinator::start(config).await?;
    let mut c = client(server.addr).await?;
    let queries: Vec<String> = (1..=22)
        .map(|q| std::fs::read_to_string(query_dir().join(format!("q{q}.sql"))))
        .collect::<std::io::Result<_>>()?;
    for sql in &queries {
        rows(&mut c, sql).await?;
    }
    let started = Instant::now();
    for (i, sql) in queries.iter().enumerate() {
        rows(&mut c, sql)
            .await
            .with_context(|| format!("q{}", i + 1))?;
    }
    let total = started.elapsed();
    server.shutdown().await?;
    Ok(total)
}

fn query_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("tpch")
}
