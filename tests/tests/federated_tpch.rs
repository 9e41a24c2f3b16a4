//! TPC-H with `orders` and `customer` in PostgreSQL and the other tables in
//! Parquet returns the rows single-node DataFusion returns over Parquet alone.
//! This exercises the SQL that federation generates for real queries.

use quiver_tests::compare::assert_same_rows;
use quiver_tests::pg::{self, psql};
use quiver_tests::*;

/// The PostgreSQL-resident tables and their DDL (TPC-H column types).
const TABLES: [(&str, &str); 2] = [
    (
        "customer",
        "c_custkey bigint, c_name varchar(25), c_address varchar(40), c_nationkey bigint, c_phone char(15),
         c_acctbal numeric(15,2), c_mktsegment char(10), c_comment varchar(117)",
    ),
    (
        "orders",
        "o_orderkey bigint, o_custkey bigint, o_orderstatus char(1), o_totalprice numeric(15,2), o_orderdate date,
         o_orderpriority char(15), o_clerk char(15), o_shippriority int, o_comment varchar(79)",
    ),
];

/// Loads the Parquet tables into PostgreSQL's `tpch_fed` schema once (by row count).
async fn load_postgres(reference: &datafusion::prelude::SessionContext) -> anyhow::Result<()> {
    psql("CREATE SCHEMA IF NOT EXISTS tpch_fed");
    for (table, columns) in TABLES {
        let expected = reference.sql(&format!("SELECT count(*) FROM {table}")).await?.collect().await?;
        let expected = arrow::util::display::array_value_to_string(expected[0].column(0), 0)?;
        let exists = psql(&format!("SELECT to_regclass('tpch_fed.{table}') IS NOT NULL")).trim() == "t";
        let present = if exists { psql(&format!("SELECT count(*) FROM tpch_fed.{table}")).trim().to_string() } else { String::new() };
        if present == expected {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let csv = dir.path().join(format!("{table}.csv"));
        reference
            .sql(&format!("SELECT * FROM {table}"))
            .await?
            .write_csv(csv.to_str().unwrap_or_default(), Default::default(), None)
            .await?;
        // DataFusion writes a folder of part files when the path has no extension; find them.
        let files: Vec<_> = if csv.is_dir() {
            std::fs::read_dir(&csv)?.filter_map(|e| e.ok().map(|e| e.path())).collect()
        } else {
            vec![csv.clone()]
        };
        psql(&format!("DROP TABLE IF EXISTS tpch_fed.{table}; CREATE TABLE tpch_fed.{table} ({columns})"));
        for f in files {
            psql(&format!("\\copy tpch_fed.{table} FROM '{}' WITH (FORMAT csv, HEADER true)", f.display()));
        }
        assert_eq!(psql(&format!("SELECT count(*) FROM tpch_fed.{table}")).trim(), expected, "{table} loaded");
    }
    Ok(())
}

/// Replaces whole-word table names: `orders` -> `pg.orders`.
fn qualify(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if TABLES.iter().any(|(t, _)| t == word) {
            out.push_str("pg.");
        }
        out.push_str(word);
        word.clear();
    };
    for ch in sql.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_with_orders_and_customer_in_postgres() -> anyhow::Result<()> {
    let reference = reference_context().await?;
    load_postgres(&reference).await?;
    let dir = tpch_dir();
    let mut config = String::from("[server]\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\n");
    config.push_str("[[source]]\nname = \"tpch\"\nkind = \"files\"\nformat = \"parquet\"\n");
    for t in ["lineitem", "part", "partsupp", "supplier", "nation", "region"] {
        config.push_str(&format!("[[source.table]]\nname = \"{t}\"\nlocation = \"{}/{t}/\"\n", dir.display()));
    }
    config.push_str(&pg::source("pg", "tpch_fed"));
    let server = start_coordinator_with_env(&config, &[("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD)])?;
    let mut client = client(&server.addr).await?;
    for n in 1..=22 {
        let sql = tpch_query(n);
        let expected = reference.sql(&sql).await?.collect().await?;
        let federated = qualify(&sql);
        let actual = query(&mut client, &federated).await.map_err(|e| anyhow::anyhow!("q{n}: {e:#}\n{federated}"))?;
        assert_same_rows(&actual, &expected, false, &format!("q{n} (orders, customer in PostgreSQL)"));
    }
    Ok(())
}

#[test]
fn qualify_replaces_whole_words_only() {
    assert_eq!(qualify("select o_orderkey from orders, customer c_orders"), "select o_orderkey from pg.orders, pg.customer c_orders");
}
