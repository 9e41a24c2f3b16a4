//! Helpers the SQL-source and dataset benches share: the PostgreSQL instance of
//! scripts/services.sh, timing a statement through Flight SQL, arguments.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Channel;

pub const PG: [&str; 8] = [
    "-h",
    "127.0.0.1",
    "-p",
    "54329",
    "-U",
    "quiver",
    "-d",
    "quiver",
];

/// Runs SQL with psql; returns what it printed (unaligned, tuples only) and how long it took.
pub fn psql(sql: &str) -> Result<(String, Duration)> {
    use std::io::Write;
    let t = Instant::now();
    // The statement goes through stdin: a key set can be longer than a command line may be.
    let mut child = Command::new("psql")
        .args(PG)
        .args(["-qtA", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .env("PGPASSWORD", "quiver")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(sql.as_bytes())?;
        // A meta-command (`\copy`) ends at the line's end; SQL at a semicolon.
        let end: &[u8] = if sql.trim_start().starts_with('\\') {
            b"\n"
        } else {
            b";\n"
        };
        stdin.write_all(end)?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        t.elapsed(),
    ))
}

/// Runs one statement through Flight SQL, fetching every endpoint; returns its time and row count.
pub async fn timed(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<(Duration, usize)> {
    let t = Instant::now();
    let info = client.execute(sql.to_string(), None).await?;
    let mut rows = 0;
    for ep in info.endpoint {
        let mut s = client.do_get(ep.ticket.context("ticket")?).await?;
        while let Some(b) = s.try_next().await? {
            rows += b.num_rows();
        }
    }
    Ok((t.elapsed(), rows))
}

/// The rows `sql` returns in DataFusion's `ctx`.
pub async fn rows_of(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<usize> {
    Ok(ctx
        .sql(sql)
        .await?
        .collect()
        .await?
        .iter()
        .map(|b| b.num_rows())
        .sum())
}

/// The median of `runs` timings of `sql` after one warm-up, checking the row count.
pub async fn measure(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
    runs: usize,
    groups: usize,
) -> Result<Duration> {
    let mut times = vec![];
    for i in 0..=runs {
        let (d, rows) = timed(client, sql).await?;
        anyhow::ensure!(rows == groups, "{sql}: {rows} rows, expected {groups}");
        if i > 0 {
            times.push(d);
        }
    }
    Ok(median(times))
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
