//! TPC-H with `orders` and `customer` in PostgreSQL, `nation` and `region` in
//! MariaDB and the other tables in Parquet returns the rows single-node DataFusion
//! returns over Parquet alone. This exercises the SQL that federation generates
//! for real queries, in two dialects.

use quiver_tests::compare::assert_same_rows;
use quiver_tests::my;
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
        let expected = reference
            .sql(&format!("SELECT count(*) FROM {table}"))
            .await?
            .collect()
            .await?;
        let expected = arrow::util::display::array_value_to_string(expected[0].column(0), 0)?;
        let exists = psql(&format!(
            "SELECT to_regclass('tpch_fed.{table}') IS NOT NULL"
        ))
        .trim()
            == "t";
        let present = if exists {
            psql(&format!("SELECT count(*) FROM tpch_fed.{table}"))
                .trim()
                .to_string()
        } else {
            String::new()
        };
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
            std::fs::read_dir(&csv)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect()
        } else {
            vec![csv.clone()]
        };
        psql(&format!(
            "DROP TABLE IF EXISTS tpch_fed.{table}; CREATE TABLE tpch_fed.{table} ({columns})"
        ));
        for f in files {
            psql(&format!(
                "\\copy tpch_fed.{table} FROM '{}' WITH (FORMAT csv, HEADER true)",
                f.display()
            ));
        }
        assert_eq!(
            psql(&format!("SELECT count(*) FROM tpch_fed.{table}")).trim(),
            expected,
            "{table} loaded"
        );
    }
    Ok(())
}

/// Loads `nation` and `region` into MariaDB (small: plain INSERTs).
async fn load_mariadb(reference: &datafusion::prelude::SessionContext) -> anyhow::Result<()> {
    let ddl = [
        (
            "nation",
            "n_nationkey bigint, n_name char(25), n_regionkey bigint, n_comment varchar(152)",
        ),
        (
            "region",
            "r_regionkey bigint, r_name char(25), r_comment varchar(152)",
        ),
    ];
    for (table, columns) in ddl {
        let batches = reference
            .sql(&format!("SELECT * FROM {table}"))
            .await?
            .collect()
            .await?;
        let mut values = vec![];
        for b in &batches {
            for r in 0..b.num_rows() {
                let cells: Vec<String> = (0..b.num_columns())
                    .map(|c| {
                        arrow::util::display::array_value_to_string(b.column(c), r)
                            .map(|v| format!("'{}'", v.replace('\'', "''")))
                    })
                    .collect::<Result<_, _>>()?;
                values.push(format!("({})", cells.join(", ")));
            }
        }
        my::sql(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns}); INSERT INTO {table} VALUES {};", values.join(", ")));
    }
    Ok(())
}

/// Qualifies table names in FROM lists: `orders` -> `pg.orders`, `nation` -> `my.nation`.
/// Only a name right after `from`, `join` or a comma inside a FROM list is a table;
/// the same word elsewhere (q8's `as nation`) is left alone.
fn qualify(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let (mut in_from, mut previous) = (false, String::new());
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            let mut word = String::from(ch);
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
            {
                word.push(c);
                chars.next();
            }
            let lower = word.to_ascii_lowercase();
            let table_position = in_from && matches!(previous.as_str(), "from" | "join" | ",");
            if table_position && TABLES.iter().any(|(t, _)| *t == lower) {
                out.push_str("pg.");
            } else if table_position && (lower == "nation" || lower == "region") {
                out.push_str("my.");
            }
            match lower.as_str() {
                "from" => in_from = true,
                "select" | "where" | "group" | "order" | "having" | "on" => in_from = false,
                _ => {}
            }
            out.push_str(&word);
            previous = lower;
        } else {
            if !ch.is_whitespace() {
                previous = ch.to_string();
            }
            out.push(ch);
        }
    }
    out
}

/// Loads both databases once per test binary (the tests here run in parallel).
async fn load_databases(reference: &datafusion::prelude::SessionContext) -> anyhow::Result<()> {
    static LOADED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    LOADED
        .get_or_try_init(|| async {
            load_postgres(reference).await?;
            // Statistics, as a maintained database has them (the join order reads them).
            psql("ANALYZE tpch_fed.orders; ANALYZE tpch_fed.customer");
            load_mariadb(reference).await
        })
        .await?;
    Ok(())
}

/// A coordinator with `orders` and `customer` in PostgreSQL (`pg`), `nation` and
/// `region` in MariaDB (`my`) and the rest in Parquet; `workers` is extra
/// `[workers]` configuration.
fn start_federated(workers: &str) -> anyhow::Result<Process> {
    start_federated_with(workers, "")
}

/// `pg` carries more settings of the PostgreSQL source.
fn start_federated_with(workers: &str, pg: &str) -> anyhow::Result<Process> {
    let dir = tpch_dir();
    let mut config =
        String::from("[server]\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\n");
    config.push_str(&format!("[workers]\n{workers}\n"));
    config.push_str("[[source]]\nname = \"tpch\"\nkind = \"files\"\nformat = \"parquet\"\n");
    for t in ["lineitem", "part", "partsupp", "supplier"] {
        config.push_str(&format!(
            "[[source.table]]\nname = \"{t}\"\nlocation = \"{}/{t}/\"\n",
            dir.display()
        ));
    }
    config.push_str(&pg::source("pg", "tpch_fed"));
    config.push_str(pg);
    config.push_str(&my::source("my"));
    let env = [
        ("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD),
        ("QUIVER_TEST_MY_PASSWORD", my::PASSWORD),
    ];
    start_coordinator_with_env(&config, &env)
}

/// The columns a logged statement selects from `table` (as the statement writes
/// it): the select list of the SELECT that reads it, unqualified and unquoted.
fn select_list(statement: &str, table: &str) -> Vec<String> {
    let Some(from) = statement.find(&format!(" FROM {table}")) else {
        return vec![];
    };
    let Some(select) = statement[..from].rfind("SELECT ") else {
        return vec![];
    };
    let unquote = |c: &str| {
        c.trim()
            .rsplit('.')
            .next()
            .unwrap_or("")
            .trim_matches(|q| q == '"' || q == '`')
            .to_string()
    };
    let mut columns: Vec<String> = statement[select + 7..from]
        .split(',')
        .map(unquote)
        .collect();
    columns.sort();
    columns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_columns_a_cross_source_join_uses_leave_each_database() -> anyhow::Result<()> {
    let reference = reference_context().await?;
    load_databases(&reference).await?;
    let server = start_federated("")?;
    let mut client = client(&server.addr).await?;

    // PostgreSQL `orders` (9 columns) joined with Parquet `lineitem`: 3 are used,
    // one of them only in a filter the database applies itself.
    let sql = "SELECT o.o_orderdate, sum(l.l_extendedprice) AS revenue FROM lineitem l JOIN orders o ON l.l_orderkey = o.o_orderkey
               WHERE o.o_orderpriority <> 'quiver-columns-test' GROUP BY o.o_orderdate ORDER BY revenue DESC, o.o_orderdate LIMIT 5";
    let expected = reference.sql(sql).await?.collect().await?;
    let actual = query(&mut client, &sql.replace("JOIN orders", "JOIN pg.orders")).await?;
    assert_same_rows(
        &actual,
        &expected,
        true,
        "orders from PostgreSQL joined with lineitem",
    );
    let statement = pg::last_copy("quiver-columns-test");
    assert_eq!(
        select_list(&statement, "\"tpch_fed\".\"orders\""),
        ["o_orderdate", "o_orderkey"],
        "PostgreSQL was asked for: {statement}"
    );

    // MariaDB `nation` (4 columns) joined with Parquet `supplier`: 2 are used.
    let sql = "SELECT n.n_name, count(*) AS suppliers FROM supplier s JOIN nation n ON s.s_nationkey = n.n_nationkey
               WHERE n.n_comment <> 'quiver-columns-test' GROUP BY n.n_name ORDER BY n.n_name";
    let expected = reference.sql(sql).await?.collect().await?;
    let actual = query(&mut client, &sql.replace("JOIN nation", "JOIN my.nation")).await?;
    assert_same_rows(
        &actual,
        &expected,
        true,
        "nation from MariaDB joined with supplier",
    );
    let statement = my::log()
        .lines()
        .rev()
        .find(|l| l.contains("quiver-columns-test"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        select_list(&statement, "`quiver`.`nation`"),
        ["n_name", "n_nationkey"],
        "MariaDB was asked for: {statement}"
    );
    Ok(())
}

/// `lineitem` filtered to a few orders, joined with all of PostgreSQL's `orders`:
/// the join's keys go into the statement, so only the matching orders leave
/// PostgreSQL. Both when the query runs whole on one worker and when it runs as
/// stages, whichever side the query names first (the database's row estimate
/// makes the small side the join's build side), and when `orders` is read as
/// page ranges by several stage tasks (each a plan of one partition, narrow.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_join_side_sends_its_keys_into_postgres() -> anyhow::Result<()> {
    let reference = reference_context().await?;
    load_databases(&reference).await?;
    let keys = reference
        .sql("SELECT DISTINCT l_orderkey FROM lineitem WHERE l_partkey = 7 ORDER BY 1")
        .await?
        .collect()
        .await?;
    let keys = strings(&keys, "l_orderkey");
    assert!(
        (5..=150).contains(&keys.len()),
        "the test wants a short key list, got {}",
        keys.len()
    );
    let split = "partition_min_mb = 0\nscan_partitions = 2\n";
    let runs = [
        ("", "", "lineitem l JOIN orders o"),
        ("single_stage_max_bytes = 0", "", "lineitem l JOIN orders o"),
        ("", "", "orders o JOIN lineitem l"),
        (
            "single_stage_max_bytes = 0",
            split,
            "orders o JOIN lineitem l",
        ),
        // Both sides shuffled: orders is read by a stage of its own, which the
        // keys of lineitem's stage filter before it starts (dynamic filters across stages).
        (
            "single_stage_max_bytes = 0\nbroadcast_join_max_bytes = 0",
            "",
            "lineitem l JOIN orders o",
        ),
    ];
    for (i, (workers, pg_settings, from)) in runs.into_iter().enumerate() {
        let server = start_federated_with(workers, pg_settings)?;
        let mut client = client(&server.addr).await?;
        let marker = format!("quiver-keys-{i}");
        let sql = format!(
            "SELECT o.o_orderkey, o.o_orderdate, o.o_totalprice, l.l_quantity FROM {from} ON o.o_orderkey = l.l_orderkey
             WHERE l.l_partkey = 7 AND o.o_comment <> '{marker}' ORDER BY o.o_orderkey, l.l_quantity"
        );
        let expected = reference.sql(&sql).await?.collect().await?;
        let actual = query(&mut client, &sql.replace("orders o", "pg.orders o")).await?;
        assert_same_rows(&actual, &expected, true, &format!("the join ({workers:?})"));
        let statement = pg::last_copy(&marker);
        if !pg_settings.is_empty() {
            assert!(
                statement.contains("ctid"),
                "orders was not read as page ranges: {statement}"
            );
        }
        let sent = sent_keys(&statement);
        assert_eq!(
            sent, keys,
            "({workers:?}, {from}) PostgreSQL was asked for: {statement}"
        );
    }
    Ok(())
}

/// `customer ⋈ orders` (both in PostgreSQL) joined with `lineitem` filtered to a
/// few hundred orders; `MARK` stands for a marker in the PostgreSQL statement.
const KEY_SET_JOIN: &str = "SELECT c.c_name, o.o_orderkey, o.o_orderdate, l.l_quantity
               FROM customer c JOIN orders o ON c.c_custkey = o.o_custkey JOIN lineitem l ON o.o_orderkey = l.l_orderkey
               WHERE l.l_partkey <= 12 AND o.o_comment <> 'MARK' ORDER BY 2, 4";

/// The orders [`KEY_SET_JOIN`] needs, sorted as numbers.
async fn key_set_orders(
    reference: &datafusion::prelude::SessionContext,
) -> anyhow::Result<Vec<String>> {
    let keys = reference
        .sql("SELECT DISTINCT l_orderkey FROM lineitem WHERE l_partkey <= 12 ORDER BY 1")
        .await?
        .collect()
        .await?;
    Ok(strings(&keys, "l_orderkey"))
}

/// The key list sent into a statement, sorted as numbers.
fn sent_keys(statement: &str) -> Vec<String> {
    let list = statement
        .split(" IN (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_default();
    let mut sent: Vec<String> = list
        .split(',')
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    sent.sort_by_key(|k| k.parse::<i64>().unwrap_or(i64::MAX));
    sent
}

/// Hundreds of keys (beyond DataFusion's default of 150) reach PostgreSQL as a
/// set, also when the probe side is a join PostgreSQL runs itself: `customer ⋈
/// orders` is one statement, and it returns only the orders `lineitem` needs
/// (the shape of the issue that found only the keys' range reaching PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_join_keys_reach_a_join_inside_postgres() -> anyhow::Result<()> {
    let reference = reference_context().await?;
    load_databases(&reference).await?;
    let keys = key_set_orders(&reference).await?;
    assert!(
        (151..=10_000).contains(&keys.len()),
        "the test wants a few hundred keys, got {}",
        keys.len()
    );
    let sql = KEY_SET_JOIN;
    let expected = reference
        .sql(&sql.replace("MARK", ""))
        .await?
        .collect()
        .await?;
    // Whole on one worker, and as stages.
    for (i, workers) in ["", "single_stage_max_bytes = 0"].into_iter().enumerate() {
        let server = start_federated(workers)?;
        let mut client = client(&server.addr).await?;
        let marker = format!("quiver-key-set-{i}");
        let federated = sql
            .replace("MARK", &marker)
            .replace("orders o", "pg.orders o")
            .replace("customer c", "pg.customer c");
        let actual = query(&mut client, &federated).await?;
        assert_same_rows(
            &actual,
            &expected,
            true,
            "customer ⋈ orders in PostgreSQL ⋈ lineitem",
        );
        let statement = pg::last_copy(&marker);
        assert!(
            statement.contains("JOIN"),
            "customer and orders were not joined inside PostgreSQL: {statement}"
        );
        // Every key once, so PostgreSQL returns exactly the orders the join needs.
        assert_eq!(
            sent_keys(&statement),
            keys,
            "({workers}) PostgreSQL was asked for: {statement}"
        );

        // Through a view over the PostgreSQL join.
        let view = format!("tpch.customer_orders_{i}");
        query(
            &mut client,
            &format!(
                "CREATE VIEW {view} AS SELECT c.c_name, o.o_orderkey, o.o_orderdate FROM pg.customer c
                 JOIN pg.orders o ON c.c_custkey = o.o_custkey WHERE o.o_comment <> 'quiver-view-{i}'"
            ),
        )
        .await?;
        let through_view = format!(
            "SELECT v.c_name, v.o_orderkey, v.o_orderdate, l.l_quantity FROM {view} v
             JOIN lineitem l ON v.o_orderkey = l.l_orderkey WHERE l.l_partkey <= 12 ORDER BY 2, 4"
        );
        let actual = query(&mut client, &through_view).await?;
        assert_same_rows(&actual, &expected, true, "the same join through a view");
        let statement = pg::last_copy(&format!("quiver-view-{i}"));
        assert_eq!(
            sent_keys(&statement),
            keys,
            "(view, {workers}) PostgreSQL was asked for: {statement}"
        );
    }
    Ok(())
}

/// More keys than the join's dynamic filter lists (`join_keys_max`, here 100)
/// still reach PostgreSQL, as one array of the build side's distinct keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_keys_than_listed_reach_postgres_as_one_array() -> anyhow::Result<()> {
    let reference = reference_context().await?;
    load_databases(&reference).await?;
    let keys = key_set_orders(&reference).await?;
    assert!(
        keys.len() > 100,
        "the test wants more than 100 keys, got {}",
        keys.len()
    );
    let sql = KEY_SET_JOIN;
    let expected = reference
        .sql(&sql.replace("MARK", ""))
        .await?
        .collect()
        .await?;
    let server = start_federated("join_keys_max = 100\njoin_key_array_max = 1000000")?;
    let mut client = client(&server.addr).await?;
    let federated = sql
        .replace("MARK", "quiver-key-array")
        .replace("orders o", "pg.orders o")
        .replace("customer c", "pg.customer c");
    let actual = query(&mut client, &federated).await?;
    assert_same_rows(&actual, &expected, true, "the join with an array of keys");
    let statement = pg::last_copy("quiver-key-array");
    assert!(
        !statement.contains(" IN ("),
        "the list is not expected here: {statement}"
    );
    let array = statement
        .split("= ANY('{")
        .nth(1)
        .and_then(|rest| rest.split("}'::int8[])").next())
        .unwrap_or_default();
    let mut sent: Vec<String> = array.split(',').map(str::to_string).collect();
    sent.sort_by_key(|k| k.parse::<i64>().unwrap_or(i64::MAX));
    assert_eq!(sent, keys, "PostgreSQL was asked for: {statement}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_with_orders_and_customer_in_postgres() -> anyhow::Result<()> {
    let reference = reference_context().await?;
    load_databases(&reference).await?;
    let server = start_federated("")?;
    let mut client = client(&server.addr).await?;
    for n in 1..=22 {
        let sql = tpch_query(n);
        let expected = reference.sql(&sql).await?.collect().await?;
        let federated = qualify(&sql);
        let actual = query(&mut client, &federated)
            .await
            .map_err(|e| anyhow::anyhow!("q{n}: {e:#}\n{federated}"))?;
        assert_same_rows(
            &actual,
            &expected,
            false,
            &format!("q{n} (orders, customer in PostgreSQL; nation, region in MariaDB)"),
        );
    }
    Ok(())
}

#[test]
fn qualify_replaces_whole_words_only() {
    assert_eq!(
        qualify("select n.n_name as nation from orders, customer c_orders, nation n where nation = 1"),
        "select n.n_name as nation from pg.orders, pg.customer c_orders, my.nation n where nation = 1"
    );
}
