//! Join order on a star query shaped like TPC-DS q72: 1.44M catalog sales meet
//! 11.7M inventory rows, with three filtered dimensions (a year of dates, one
//! household buying potential, one marital status), items, warehouses and a second
//! date table. Written as TPC-DS writes it, the two large tables come first.
//!
//! Times, in one run over the same generated Parquet files: Quiver (2 embedded
//! workers) with `server.join_order = "statistics"` and with `"written"`,
//! single-node DataFusion, and DuckDB (from PyPI, when target/venv or
//! target/dbt-venv has it). The answers are compared row by row.
//!
//! cargo bench -p quiver-coordinator --bench star -- [--iterations 3] [--written-timeout-secs 120]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use common::{arg, median};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

const TABLES: [&str; 7] = [
    "catalog_sales",
    "inventory",
    "date_dim",
    "item",
    "warehouse",
    "household_demographics",
    "customer_demographics",
];

/// TPC-DS q72's joins and filters, without its outer joins.
const STAR: &str = "SELECT i.i_category, w.w_name, d1.d_week_seq, count(*) AS n
FROM catalog_sales cs
JOIN inventory inv ON cs.cs_item_sk = inv.inv_item_sk
JOIN warehouse w ON w.w_warehouse_sk = inv.inv_warehouse_sk
JOIN item i ON i.i_item_sk = cs.cs_item_sk
JOIN customer_demographics cd ON cs.cs_bill_cdemo_sk = cd.cd_demo_sk
JOIN household_demographics hd ON cs.cs_bill_hdemo_sk = hd.hd_demo_sk
JOIN date_dim d1 ON cs.cs_sold_date_sk = d1.d_date_sk
JOIN date_dim d2 ON inv.inv_date_sk = d2.d_date_sk
WHERE d1.d_week_seq = d2.d_week_seq
  AND inv.inv_quantity_on_hand < cs.cs_quantity
  AND hd.hd_buy_potential = '>10000'
  AND d1.d_year = 1999
  AND cd.cd_marital_status = 'D'
GROUP BY i.i_category, w.w_name, d1.d_week_seq
ORDER BY n DESC, i.i_category, w.w_name, d1.d_week_seq";

/// Each table as DataFusion SQL over `generate_series`, TPC-DS SF1's row counts;
/// keys spread by multiplying with primes, so no two columns move together (the
/// item from `value / 7`: the household and marital filters keep odd values only,
/// and inventory holds odd items only).
const GENERATE: [(&str, &str); 7] = [
    ("date_dim", "SELECT value AS d_date_sk, 1900 + (value - 2415022) / 365 AS d_year, (value - 2415022) / 7 + 1 AS d_week_seq FROM generate_series(2415022, 2488070)"),
    ("item", "SELECT value AS i_item_sk, 'category ' || CAST(value % 10 AS VARCHAR) AS i_category FROM generate_series(1, 18000)"),
    ("warehouse", "SELECT value AS w_warehouse_sk, 'warehouse ' || CAST(value AS VARCHAR) AS w_name FROM generate_series(1, 5)"),
    ("household_demographics", "SELECT value AS hd_demo_sk, CASE value % 6 WHEN 0 THEN '>10000' WHEN 1 THEN '5001-10000' WHEN 2 THEN '1001-5000' WHEN 3 THEN '501-1000' WHEN 4 THEN '0-500' ELSE 'Unknown' END AS hd_buy_potential FROM generate_series(1, 7200)"),
    ("customer_demographics", "SELECT value AS cd_demo_sk, CASE value % 5 WHEN 0 THEN 'D' WHEN 1 THEN 'M' WHEN 2 THEN 'S' WHEN 3 THEN 'U' ELSE 'W' END AS cd_marital_status FROM generate_series(1, 1920800)"),
    ("catalog_sales", "SELECT 2450815 + (value * 7919) % 1836 AS cs_sold_date_sk, 1 + ((value / 7) * 104723) % 18000 AS cs_item_sk, 1 + (value * 1000003) % 1920800 AS cs_bill_cdemo_sk, 1 + (value * 31) % 7200 AS cs_bill_hdemo_sk, 1 + value % 100 AS cs_quantity FROM generate_series(0, 1441547)"),
    ("inventory", "SELECT 2450815 + (value / 45000) * 7 AS inv_date_sk, 1 + 2 * ((value / 5) % 9000) AS inv_item_sk, 1 + value % 5 AS inv_warehouse_sk, (value * 37) % 1000 AS inv_quantity_on_hand FROM generate_series(0, 11744999)"),
];

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let iterations = arg("--iterations", 3).max(1);
    let written_timeout = Duration::from_secs(arg("--written-timeout-secs", 120) as u64);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target").join("bench-data").join("star");
    generate(&dir).await?;
    let dir = std::fs::canonicalize(&dir)?;

    let reference = SessionContext::new();
    for t in TABLES {
        reference
            .register_parquet(
                t,
                format!("{}/{t}/", dir.display()),
                ParquetReadOptions::default(),
            )
            .await?;
    }
    let expected = rows_text(&reference.sql(STAR).await?.collect().await?)?;
    anyhow::ensure!(
        !expected.is_empty(),
        "the star query finds no rows in the generated data"
    );

    let statistics = start_server(&dir, "statistics").await?;
    let mut client = connect(&statistics.addr).await?;
    let explain = rows_text(&collect(&mut client, &format!("EXPLAIN {STAR}")).await?)?;
    let order = explain
        .iter()
        .find_map(|row| row.split_once("join order from statistics"))
        .map(|(_, notes)| format!("join order from statistics{notes}"))
        .unwrap_or_else(|| "(no join order estimates in EXPLAIN)".into());
    println!("### The order Quiver chose\n\n```\n{order}\n```\n");

    let answer = rows_text(&collect(&mut client, STAR).await?)?;
    anyhow::ensure!(
        answer == expected,
        "Quiver's answer differs from DataFusion's"
    );
    let mut quiver = Vec::new();
    let mut datafusion = Vec::new();
    for round in 0..=iterations {
        let t = Instant::now();
        collect(&mut client, STAR).await?;
        let q = t.elapsed();
        let t = Instant::now();
        reference.sql(STAR).await?.collect().await?;
        if round > 0 {
            quiver.push(q);
            datafusion.push(t.elapsed());
        }
    }
    let (quiver, datafusion) = (median(quiver), median(datafusion));

    let written_server = start_server(&dir, "written").await?;
    let mut written_client = connect(&written_server.addr).await?;
    let started = Instant::now();
    let written =
        match tokio::time::timeout(written_timeout, collect(&mut written_client, STAR)).await {
            Ok(rows) => {
                anyhow::ensure!(
                    rows_text(&rows?)? == expected,
                    "the written order's answer differs"
                );
                Some(started.elapsed())
            }
            Err(_) => None,
        };
    let duckdb = duckdb(&root, &dir, iterations);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("### Star join, {} result rows (median of {iterations}, after one warm-up; the written order once)\n", expected.len());
    println!("| engine | time (ms) | / DuckDB | / DataFusion |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, t: Option<Duration>| {
        let cell = |base: Option<Duration>| match (t, base) {
            (Some(t), Some(b)) => format!("{:.2}×", t.as_secs_f64() / b.as_secs_f64()),
            _ => "—".into(),
        };
        let time = t
            .map(|t| format!("{:.0}", ms(t)))
            .unwrap_or_else(|| format!("> {}", written_timeout.as_secs() * 1000));
        println!(
            "| {name} | {time} | {} | {} |",
            cell(duckdb),
            cell(Some(datafusion))
        );
    };
    row("Quiver, join order from statistics", Some(quiver));
    row("Quiver, join order as written", written);
    row("DataFusion 55, single node", Some(datafusion));
    row("DuckDB", duckdb);
    Ok(())
}

/// Writes the tables as Parquet once; a `done` file marks a complete set.
async fn generate(dir: &Path) -> Result<()> {
    if dir.join("done").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let ctx = SessionContext::new();
    for (table, sql) in GENERATE {
        let target = dir.join(table);
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::create_dir_all(&target)?;
        ctx.sql(&format!(
            "COPY ({sql}) TO '{}/' STORED AS PARQUET",
            target.display()
        ))
        .await?
        .collect()
        .await?;
    }
    std::fs::write(dir.join("done"), "")?;
    Ok(())
}

async fn start_server(dir: &Path, order: &str) -> Result<quiver_coordinator::RunningCoordinator> {
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndefault_catalog = \"quiver\"\ndefault_schema = \"ds\"\njoin_order = \"{order}\"\n[workers]\ncount = 2\n\
         [[source]]\nname = \"ds\"\nkind = \"files\"\nformat = \"parquet\"\n"
    );
    for t in TABLES {
        config.push_str(&format!(
            "[[source.table]]\nname = \"{t}\"\nlocation = \"{}/{t}/\"\n",
            dir.display()
        ));
    }
    let config =
        quiver_coordinator::QuiverConfig::parse(&config, Path::new("/")).map_err(|e| anyhow!(e))?;
    Ok(quiver_coordinator::start(config).await?)
}

async fn connect(addr: &std::net::SocketAddr) -> Result<FlightSqlServiceClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(FlightSqlServiceClient::new(channel))
}

async fn collect(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let info = client.execute(sql.to_string(), None).await?;
    let mut batches = Vec::new();
    for ep in info.endpoint {
        let stream = client.do_get(ep.ticket.context("ticket")?).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(batches)
}

/// Each row as text, in order.
fn rows_text(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells = b
                .columns()
                .iter()
                .map(|c| arrow::util::display::array_value_to_string(c, r))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            rows.push(cells.join("|"));
        }
    }
    Ok(rows)
}

/// DuckDB's median over the same files, from whichever test venv has it.
fn duckdb(root: &Path, dir: &Path, iterations: usize) -> Option<Duration> {
    let script = format!(
        r#"
import duckdb, statistics, sys, time
con = duckdb.connect()
for t in {tables:?}:
    con.execute(f"CREATE VIEW {{t}} AS SELECT * FROM read_parquet('{dir}/{{t}}/*.parquet')")
sql = sys.stdin.read()
con.sql(sql).fetchall()
runs = []
for _ in range({iterations}):
    s = time.perf_counter(); con.sql(sql).fetchall(); runs.append(time.perf_counter() - s)
print(statistics.median(runs))
"#,
        tables = TABLES,
        dir = dir.display()
    );
    for venv in ["venv", "dbt-venv"] {
        let python: PathBuf = root.join("target").join(venv).join("bin").join("python");
        let Ok(mut child) = Command::new(&python)
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            continue;
        };
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(STAR.as_bytes());
        }
        let Ok(out) = child.wait_with_output() else {
            continue;
        };
        if let Some(secs) = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|_| out.status.success())
        {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    None
}
