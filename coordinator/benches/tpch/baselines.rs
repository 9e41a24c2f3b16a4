//! Engines the TPC-H benchmark compares Quiver against besides in-process
//! DataFusion: DuckDB (from PyPI) and a Ballista cluster (from `cargo install`).
//! Each is optional: when it is not installed, the report leaves its columns out.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::{repo_root, Processes};

/// One baseline's median seconds per query (None where the engine failed it).
pub struct Baseline {
    pub name: &'static str,
    pub times: Vec<Option<f64>>,
    /// What the report says about how it ran.
    pub setup: String,
}

/// DuckDB timings from scripts/bench_duckdb.py, when DuckDB is installed in target/venv.
pub fn duckdb(dir: &Path, iterations: usize) -> Option<Baseline> {
    let python = repo_root()
        .join("target")
        .join("venv")
        .join("bin")
        .join("python");
    let out = Command::new(python)
        .arg(repo_root().join("scripts").join("bench_duckdb.py"))
        .arg(dir)
        .arg(iterations.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "DuckDB baseline skipped: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    let times = serde_json::from_slice::<Vec<f64>>(&out.stdout).ok()?;
    Some(Baseline {
        name: "DuckDB",
        times: times.into_iter().map(Some).collect(),
        setup: "DuckDB in one process (Python API)".into(),
    })
}

/// Where `scripts/install-ballista.sh` puts the Ballista binaries, or `$BALLISTA_BIN_DIR`.
fn ballista_bin_dir() -> PathBuf {
    std::env::var_os("BALLISTA_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("ballista").join("bin"))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(anyhow!("{what} did not listen on port {port} within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A Ballista scheduler and `executors` executor processes on loopback, then every
/// query through scripts/ballista-client (one warm-up run, `iterations` timed runs,
/// median). A time covers planning, job submission, execution and collecting the
/// result, as a Ballista user sees it.
pub fn ballista(
    dir: &Path,
    queries: &[String],
    iterations: usize,
    executors: usize,
    vcores: usize,
) -> Option<Baseline> {
    let bin = ballista_bin_dir();
    if !bin.join(CLIENT).exists() {
        eprintln!("Ballista baseline skipped: no {CLIENT} in {} (scripts/install-ballista.sh installs it)", bin.display());
        return None;
    }
    let work = std::env::temp_dir().join(format!("quiver-bench-ballista-{}", std::process::id()));
    let result = run_ballista(&bin, &work, dir, queries, iterations, executors, vcores);
    // Whether it worked or not: the executors' shuffle files and the query files.
    let _ = std::fs::remove_dir_all(&work);
    match result {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("Ballista baseline failed: {e:#}");
            None
        }
    }
}

const CLIENT: &str = "quiver-ballista-client";

fn run_ballista(
    bin: &Path,
    work: &Path,
    dir: &Path,
    queries: &[String],
    iterations: usize,
    executors: usize,
    vcores: usize,
) -> Result<Baseline> {
    std::fs::create_dir_all(work)?;
    let quiet = || Stdio::null();
    let mut cluster = Processes(vec![]);
    let scheduler_port = free_port()?;
    cluster.0.push(
        Command::new(bin.join("ballista-scheduler"))
            .args([
                "--bind-host",
                "127.0.0.1",
                "--external-host",
                "127.0.0.1",
                "--bind-port",
                &scheduler_port.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(quiet())
            .stderr(quiet())
            .spawn()
            .context("start ballista-scheduler")?,
    );
    wait_listening(scheduler_port, "ballista-scheduler")?;
    for i in 0..executors {
        let (flight, grpc, health) = (free_port()?, free_port()?, free_port()?);
        let work_dir = work.join(format!("executor-{i}"));
        std::fs::create_dir_all(&work_dir)?;
        cluster.0.push(
            Command::new(bin.join("ballista-executor"))
                .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
                .args([
                    "--bind-port",
                    &flight.to_string(),
                    "--bind-grpc-port",
                    &grpc.to_string(),
                    "--bind-health-port",
                    &health.to_string(),
                ])
                .args([
                    "--scheduler-host",
                    "127.0.0.1",
                    "--scheduler-port",
                    &scheduler_port.to_string(),
                ])
                .args([
                    "--scheduler-connect-timeout-seconds",
                    "30",
                    "--vcores",
                    &vcores.to_string(),
                ])
                .arg("--work-dir")
                .arg(&work_dir)
                .env("RUST_LOG", "warn")
                .stdout(quiet())
                .stderr(quiet())
                .spawn()
                .context("start ballista-executor")?,
        );
        wait_listening(flight, "ballista-executor")?;
    }

    let mut files = vec![];
    for (i, sql) in queries.iter().enumerate() {
        let file = work.join(format!("q{}.sql", i + 1));
        std::fs::write(&file, sql)?;
        files.push(file);
    }
    let out = Command::new(bin.join(CLIENT))
        .arg(scheduler_port.to_string())
        .arg(dir)
        .arg(iterations.to_string())
        .args(&files)
        .env("RUST_LOG", "error")
        .stderr(Stdio::inherit())
        .output()
        .context("run the Ballista client")?;
    if !out.status.success() {
        return Err(anyhow!("the Ballista client failed ({})", out.status));
    }
    let mut times = vec![];
    for (i, line) in String::from_utf8_lossy(&out.stdout).lines().enumerate() {
        match line.parse::<f64>() {
            Ok(t) => {
                eprintln!("q{:<2} ballista {:>8.1} ms", i + 1, t * 1e3);
                times.push(Some(t));
            }
            Err(_) => {
                eprintln!("Ballista q{}: {line}", i + 1);
                times.push(None);
            }
        }
    }
    if times.len() != queries.len() {
        return Err(anyhow!(
            "the Ballista client answered {} of {} queries",
            times.len(),
            queries.len()
        ));
    }
    drop(cluster);
    Ok(Baseline {
        name: "Ballista",
        times,
        setup: format!("Ballista 55: a scheduler and {executors} executor processes ({vcores} vcores each), queries from scripts/ballista-client"),
    })
}
