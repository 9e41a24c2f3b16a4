//! Federated joins against the PostgreSQL instance of scripts/services.sh: TPC-H
//! `orders` in PostgreSQL joined with Parquet `lineitem` filtered to a few
//! orders. Measures the rows that leave PostgreSQL against the rows the join
//! needs, the columns its statement selects, and the time against single-node
//! DataFusion running the same join over Parquet alone, in one run. Then the
//! same ratio for `customer ⋈ orders` (both in PostgreSQL) joined with `lineitem`
//! filtered to a few hundred orders, and for TPC-H q3, q5 and q10.
//!
//! scripts/services.sh
//! cargo bench -p quiver-coordinator --bench joins -- [--scale-tenths 1] [--iterations 5]

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};
use arrow_flight::sql::client::FlightSqlServiceClient;
use common::{arg, median, psql, rows_of, timed};
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
    for t in [
        "lineitem", "orders", "customer", "supplier", "nation", "region",
    ] {
        reference
            .register_parquet(
                t,
                format!("{}/{t}/", dir.display()),
                ParquetReadOptions::default(),
            )
            .await?;
    }
    load_tables(&reference).await?;

    let server = start_server(&dir, "join_key_array_max = 1000000\n").await?;
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
    let expected_rows = rows_of(&reference, JOIN).await?;
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
    key_sets(&mut client, &reference, &root).await?;
    // The same cases timed with key arrays and with only the keys' range.
    let ranged = start_server(&dir, "join_key_array_max = 0\n").await?;
    let channel = Endpoint::from_shared(format!("http://{}", ranged.addr))?
        .connect()
        .await?;
    let mut range_client = FlightSqlServiceClient::new(channel);
    key_set_times(&mut client, &mut range_client, &reference, iterations).await?;
    ranged.shutdown().await?;
    server.shutdown().await?;
    Ok(())
}

/// A coordinator with 2 embedded workers over the bench's Parquet tables and
/// PostgreSQL's `bench_fed` schema; `workers` adds `[workers]` keys.
async fn start_server(dir: &Path, workers: &str) -> Result<quiver_coordinator::RunningCoordinator> {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\n[workers]\ncount = 2\n{workers}\
         [[source]]\nname = \"tpch\"\nkind = \"files\"\nformat = \"parquet\"\n\
         [[source.table]]\nname = \"lineitem\"\nlocation = \"{d}/lineitem/\"\n\
         [[source.table]]\nname = \"supplier\"\nlocation = \"{d}/supplier/\"\n\
         [[source.table]]\nname = \"nation\"\nlocation = \"{d}/nation/\"\n\
         [[source.table]]\nname = \"region\"\nlocation = \"{d}/region/\"\n\
         [[source]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"postgres://quiver:quiver@127.0.0.1:54329/quiver\"\nremote_schema = \"bench_fed\"\n",
        d = dir.display()
    );
    let config =
        quiver_coordinator::QuiverConfig::parse(&config, Path::new("/")).map_err(|e| anyhow!(e))?;
    Ok(quiver_coordinator::start(config).await?)
}

/// Each case's median time with key arrays, with only the range
/// (`join_key_array_max = 0`), and in single-node DataFusion over Parquet alone.
async fn key_set_times(
    arrays: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    ranges: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    reference: &SessionContext,
    iterations: usize,
) -> Result<()> {
    println!("\n### Join keys as a set: time (median of {iterations}, after one warm-up)\n");
    println!("| query | key arrays (ms) | range only (ms) | arrays / range | DataFusion, all Parquet (ms) |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, sql, _)) in CASES.iter().enumerate() {
        let (mut a, mut r, mut d) = (vec![], vec![], vec![]);
        for round in 0..=iterations {
            let marker = |side: &str| format!("bench-time-{i}-{side}-{round}");
            let (ta, _) = timed(arrays, &sql.replace("MARK", &marker("a"))).await?;
            let (tr, _) = timed(ranges, &sql.replace("MARK", &marker("r"))).await?;
            let started = Instant::now();
            rows_of(reference, &reference_sql(sql)).await?;
            if round > 0 {
                a.push(ta);
                r.push(tr);
                d.push(started.elapsed());
            }
        }
        let ms = |v: Vec<std::time::Duration>| median(v).as_secs_f64() * 1e3;
        let (a, r, d) = (ms(a), ms(r), ms(d));
        println!("| {name} | {a:.1} | {r:.1} | {:.2}× | {d:.1} |", a / r);
    }
    Ok(())
}

/// A case's query for DataFusion over Parquet alone.
fn reference_sql(sql: &str) -> String {
    sql.replace("pg.", "")
        .replace(" AND o.o_comment <> 'MARK'", "")
        .replace(" AND o_comment <> 'MARK'", "")
}

/// A federated query (tables `pg.customer`, `pg.orders`, the rest in Parquet) and
/// the PostgreSQL rows its answer needs: the distinct orders of the joined rows.
const CASES: [(&str, &str, &str); 4] = [
    (
        "customer ⋈ orders ⋈ lineitem (l_partkey <= 12)",
        "SELECT c.c_name, o.o_orderkey, l.l_quantity FROM pg.customer c JOIN pg.orders o ON c.c_custkey = o.o_custkey \
         JOIN lineitem l ON o.o_orderkey = l.l_orderkey WHERE l.l_partkey <= 12 AND o.o_comment <> 'MARK'",
        "FROM customer c JOIN orders o ON c.c_custkey = o.o_custkey JOIN lineitem l ON o.o_orderkey = l.l_orderkey WHERE l.l_partkey <= 12",
    ),
    (
        "TPC-H q3",
        "SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate, o_shippriority \
         FROM pg.customer, pg.orders, lineitem WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey \
         AND l_orderkey = o_orderkey AND o_orderdate < date '1995-03-15' AND l_shipdate > date '1995-03-15' \
         AND o_comment <> 'MARK' GROUP BY l_orderkey, o_orderdate, o_shippriority ORDER BY revenue DESC, o_orderdate LIMIT 10",
        "FROM customer, orders, lineitem WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey \
         AND l_orderkey = o_orderkey AND o_orderdate < date '1995-03-15' AND l_shipdate > date '1995-03-15'",
    ),
    (
        "TPC-H q5",
        "SELECT n_name, sum(l_extendedprice * (1 - l_discount)) AS revenue FROM pg.customer, pg.orders, lineitem, supplier, nation, region \
         WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND l_suppkey = s_suppkey AND c_nationkey = s_nationkey \
         AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey AND r_name = 'ASIA' AND o_orderdate >= date '1994-01-01' \
         AND o_orderdate < date '1995-01-01' AND o_comment <> 'MARK' GROUP BY n_name ORDER BY revenue DESC",
        "FROM customer, orders, lineitem, supplier, nation, region \
         WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND l_suppkey = s_suppkey AND c_nationkey = s_nationkey \
         AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey AND r_name = 'ASIA' AND o_orderdate >= date '1994-01-01' \
         AND o_orderdate < date '1995-01-01'",
    ),
    (
        "TPC-H q10",
        "SELECT c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) AS revenue, c_acctbal, n_name \
         FROM pg.customer, pg.orders, lineitem, nation WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey \
         AND o_orderdate >= date '1993-10-01' AND o_orderdate < date '1994-01-01' AND l_returnflag = 'R' \
         AND c_nationkey = n_nationkey AND o_comment <> 'MARK' GROUP BY c_custkey, c_name, c_acctbal, n_name ORDER BY revenue DESC LIMIT 20",
        "FROM customer, orders, lineitem, nation WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey \
         AND o_orderdate >= date '1993-10-01' AND o_orderdate < date '1994-01-01' AND l_returnflag = 'R' \
         AND c_nationkey = n_nationkey",
    ),
];

/// Rows out of PostgreSQL against rows needed, per case: every statement the
/// query sent (found in the server log by the case's marker) is counted again
/// with psql. A statement joining `customer` and `orders` needs one row per
/// order; statements reading them apart need the orders plus their customers.
async fn key_sets(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    reference: &SessionContext,
    root: &Path,
) -> Result<()> {
    let count = |sql: String| async move {
        let b = reference.sql(&sql).await?.collect().await?;
        let n: usize = arrow::util::display::array_value_to_string(b[0].column(0), 0)?.parse()?;
        Ok::<_, anyhow::Error>(n)
    };
    println!("\n### Join keys as a set: rows out of PostgreSQL / rows needed\n");
    println!("| query | statements | rows PostgreSQL returned | rows needed | ratio |");
    println!("|---|---|---:|---:|---:|");
    for (i, (name, sql, needed_from)) in CASES.iter().enumerate() {
        let marker = format!("bench-keys-{i}");
        let log_path = root.join("target/services/pg/server.log");
        // Only this query runs now: its statements are the ones logged after this point.
        let before = std::fs::metadata(&log_path)?.len() as usize;
        let (_, rows) = timed(client, &sql.replace("MARK", &marker)).await?;
        let reference_sql = reference_sql(sql);
        let expected = rows_of(reference, &reference_sql).await?;
        anyhow::ensure!(
            rows == expected,
            "{name}: Quiver returned {rows} rows, DataFusion {expected}"
        );
        let orders = count(format!("SELECT count(DISTINCT o_orderkey) {needed_from}")).await?;
        let customers = count(format!("SELECT count(DISTINCT c_custkey) {needed_from}")).await?;
        let log = std::fs::read(&log_path)?;
        let log = String::from_utf8_lossy(log.get(before..).unwrap_or_default());
        let (mut fetched, mut shapes, mut apart) = (0usize, vec![], false);
        for line in log.lines().filter(|l| l.contains("COPY (")) {
            let Some(inner) = line
                .split_once("COPY (")
                .and_then(|(_, rest)| rest.rsplit_once(") TO STDOUT"))
                .map(|(sql, _)| sql)
            else {
                continue;
            };
            fetched += psql(&format!("SELECT count(*) FROM ({inner}) AS fetched"))?
                .0
                .parse::<usize>()?;
            let (c, o) = (inner.contains("\"customer\""), inner.contains("\"orders\""));
            apart |= c && !o;
            let keys = if inner.contains("= ANY('{") {
                "key array"
            } else if inner.contains(" IN (") {
                "key list"
            } else if inner.contains("quiver_join_keys") {
                "key range"
            } else {
                "no keys"
            };
            let table = match (c, o) {
                (true, true) => "customer ⋈ orders",
                (true, false) => "customer",
                _ => "orders",
            };
            shapes.push(format!("{table} ({keys})"));
        }
        let needed = if apart { orders + customers } else { orders };
        println!(
            "| {name} | {} | {fetched} | {needed} | {:.2} |",
            shapes.join(", "),
            fetched as f64 / needed.max(1) as f64
        );
    }
    Ok(())
}

/// TPC-H `orders` and `customer` (with primary keys, analyzed) in PostgreSQL's `bench_fed` schema.
const PG_TABLES: [(&str, &str); 2] = [
    (
        "orders",
        "o_orderkey bigint PRIMARY KEY, o_custkey bigint, o_orderstatus char(1), o_totalprice numeric(15,2), \
         o_orderdate date, o_orderpriority char(15), o_clerk char(15), o_shippriority int, o_comment varchar(79)",
    ),
    (
        "customer",
        "c_custkey bigint PRIMARY KEY, c_name varchar(25), c_address varchar(40), c_nationkey bigint, \
         c_phone char(15), c_acctbal numeric(15,2), c_mktsegment char(10), c_comment varchar(117)",
    ),
];

/// Loads [`PG_TABLES`] once (by row count).
async fn load_tables(reference: &SessionContext) -> Result<()> {
    psql("CREATE SCHEMA IF NOT EXISTS bench_fed")?;
    for (table, columns) in PG_TABLES {
        let rows = reference
            .sql(&format!("SELECT count(*) FROM {table}"))
            .await?
            .collect()
            .await?;
        let rows = arrow::util::display::array_value_to_string(rows[0].column(0), 0)?;
        let present = psql(&format!("SELECT count(*) FROM bench_fed.{table}"))
            .map(|(n, _)| n)
            .unwrap_or_default();
        if present == rows {
            continue;
        }
        eprintln!("loading {rows} rows of {table} into PostgreSQL...");
        let tmp = tempfile::tempdir()?;
        let csv: PathBuf = tmp.path().join(table);
        reference
            .sql(&format!("SELECT * FROM {table}"))
            .await?
            .write_csv(&csv.to_string_lossy(), Default::default(), None)
            .await?;
        psql(&format!(
            "DROP TABLE IF EXISTS bench_fed.{table}; CREATE TABLE bench_fed.{table} ({columns})"
        ))?;
        let files: Vec<PathBuf> = if csv.is_dir() {
            std::fs::read_dir(&csv)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect()
        } else {
            vec![csv]
        };
        for f in files {
            psql(&format!(
                "\\copy bench_fed.{table} FROM '{}' WITH (FORMAT csv, HEADER true)",
                f.display()
            ))?;
        }
        psql(&format!("ANALYZE bench_fed.{table}"))?;
    }
    Ok(())
}
