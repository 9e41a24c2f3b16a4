//! Federated joins against the PostgreSQL instance of scripts/services.sh: TPC-H
//! `orders` in PostgreSQL joined with Parquet `lineitem` filtered to a few
//! orders. Measures the rows that leave PostgreSQL against the rows the join
//! needs, the columns its statement selects, and the time against single-node
//! DataFusion running the same join over Parquet alone, in one run.
//!
//! scripts/services.sh
//! cargo bench -p quiver-coordinator --bench joins -- [--scale-tenths 1] [--iterations 5]

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use common::{arg, median, psql, timed};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tonic::transport::Endpoint;

const JOIN: &str = "SELECT o.o_orderkey, o.o_orderdate, o.o_totalprice, l.l_quantity FROM lineitem l JOIN orders o ON o.o_orderkey = l.l_orderkey WHERE l.l_partkey = 7";

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let scale = arg("--scale-tenths", 1) as f64 / 10.0;
    let iterations = arg("--iterations", 5).max(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root
        .join("target")
        .join("bench-data")
        .join(format!("tpch-sf{scale}"));
    quiver_coordinator::tpch::ensure(&dir, scale)?;
    let dir = std::fs::canonicalize(&dir)?;

    let reference = SessionContext::new();
    for t in ["lineitem", "orders"] {
        reference
            .register_parquet(
                t,
                format!("{}/{t}/", dir.display()),
                ParquetReadOptions::default(),
            )
            .await?;
    }
    load_orders(&reference).await?;

    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\n[workers]\ncount = 2\n\
         [[source]]\nname = \"tpch\"\nkind = \"files\"\nformat = \"parquet\"\n\
         [[source.table]]\nname = \"lineitem\"\nlocation = \"{}/lineitem/\"\n\
         [[source]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"postgres://quiver:quiver@127.0.0.1:54329/quiver\"\nremote_schema = \"bench_fed\"\n",
        dir.display()
    );
    let config =
        quiver_coordinator::QuiverConfig::parse(&config, Path::new("/")).map_err(|e| anyhow!(e))?;
    let server = quiver_coordinator::start(config).await?;
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut client = FlightSqlServiceClient::new(channel);

    let needed: usize = {
        let b = reference
            .sql("SELECT count(DISTINCT l_orderkey) FROM lineitem WHERE l_partkey = 7")
            .await?
            .collect()
            .await?;
        arrow::util::display::array_value_to_string(b[0].column(0), 0)?.parse()?
    };
    let expected_rows: usize = reference
        .sql(JOIN)
        .await?
        .collect()
        .await?
        .iter()
        .map(|b| b.num_rows())
        .sum();
    let federated = JOIN.replace("JOIN orders", "JOIN pg.orders");
    let (mut tq, mut td) = (vec![], vec![]);
    for i in 0..=iterations {
        let marker = format!("{federated} AND o.o_comment <> 'bench-{i}'");
        let (t, rows) = timed(&mut client, &marker).await?;
        anyhow::ensure!(
            rows == expected_rows,
            "Quiver returned {rows} rows, DataFusion {expected_rows}"
        );
        let started = Instant::now();
        reference
            .sql(&format!("{JOIN} AND o.o_comment <> 'bench-{i}'"))
            .await?
            .collect()
            .await?;
        if i > 0 {
            tq.push(t);
            td.push(started.elapsed());
        }
    }
    // What the last statement sent to PostgreSQL returns: run it again with psql.
    let log = std::fs::read_to_string(root.join("target/services/pg/server.log"))?;
    let last = format!("'bench-{iterations}'");
    let statement = log
        .lines()
        .rev()
        .find(|l| l.contains(&last) && l.contains("COPY"))
        .ok_or_else(|| anyhow!("no statement in the PostgreSQL log"))?;
    let inner = statement
        .split_once("COPY (")
        .and_then(|(_, rest)| rest.rsplit_once(") TO STDOUT"))
        .map(|(sql, _)| sql)
        .ok_or_else(|| anyhow!("unexpected statement: {statement}"))?;
    let fetched: usize = psql(&format!("SELECT count(*) FROM ({inner}) AS fetched"))?
        .0
        .parse()?;
    let columns = inner
        .rsplit_once(" FROM \"bench_fed\".\"orders\"")
        .map(|(s, _)| s.rsplit("SELECT ").next().unwrap_or("").split(',').count());
    let total: usize = psql("SELECT count(*) FROM bench_fed.orders")?.0.parse()?;

    println!("### Federated join: PostgreSQL `orders` (SF{scale}, {total} rows) ⨝ Parquet `lineitem` WHERE l_partkey = 7\n");
    println!("| measurement | value |\n|---|---:|");
    println!("| orders the join needs (distinct keys) | {needed} |");
    println!("| rows PostgreSQL returned | {fetched} |");
    println!(
        "| rows returned / rows needed | {:.2} |",
        fetched as f64 / needed.max(1) as f64
    );
    println!("| rows returned without join keys (the whole table) | {total} |");
    println!(
        "| columns selected from `orders` (of 9; 3 used) | {} |",
        columns.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
    );
    let (q, d) = (
        median(tq).as_secs_f64() * 1e3,
        median(td).as_secs_f64() * 1e3,
    );
    println!("| Quiver, median of {iterations} | {q:.1} ms |");
    println!("| single-node DataFusion, both tables in Parquet | {d:.1} ms |");
    println!("\nStatement: `{inner}`");
    server.shutdown().await?;
    Ok(())
}

/// `orders` into PostgreSQL's `bench_fed` schema, once (by row count).
async fn load_orders(reference: &SessionContext) -> Result<()> {
    let rows = reference
        .sql("SELECT count(*) FROM orders")
        .await?
        .collect()
        .await?;
    let rows = arrow::util::display::array_value_to_string(rows[0].column(0), 0)?;
    psql("CREATE SCHEMA IF NOT EXISTS bench_fed")?;
    let present = psql("SELECT count(*) FROM bench_fed.orders")
        .map(|(n, _)| n)
        .unwrap_or_default();
    if present == rows {
        return Ok(());
    }
    eprintln!("loading {rows} orders into PostgreSQL...");
    let tmp = tempfile::tempdir()?;
    let csv: PathBuf = tmp.path().join("orders");
    reference
        .sql("SELECT * FROM orders")
        .await?
        .write_csv(&csv.to_string_lossy(), Default::default(), None)
        .await?;
    psql(
        "DROP TABLE IF EXISTS bench_fed.orders; CREATE TABLE bench_fed.orders (o_orderkey bigint PRIMARY KEY, o_custkey bigint, \
         o_orderstatus char(1), o_totalprice numeric(15,2), o_orderdate date, o_orderpriority char(15), o_clerk char(15), \
         o_shippriority int, o_comment varchar(79))",
    )?;
    let files: Vec<PathBuf> = if csv.is_dir() {
        std::fs::read_dir(&csv)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect()
    } else {
        vec![csv]
    };
    for f in files {
        psql(&format!(
            "\\copy bench_fed.orders FROM '{}' WITH (FORMAT csv, HEADER true)",
            f.display()
        ))?;
    }
    psql("ANALYZE bench_fed.orders")?;
    Ok(())
}
