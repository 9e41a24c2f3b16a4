//! Virtual datasets end to end, against the real PostgreSQL and MariaDB servers
//! scripts/services.sh starts and the TPC-H Parquet files: views across sources
//! (nested, pushed down, listed, kept over a restart, broken alone), accelerated
//! copies (full and append refreshes of a changing table, a refresh that fails
//! with the database stopped, the copy read by both workers), live copies kept from
//! PostgreSQL's change stream, copies of a subset, the results cache,
//! and a metadata store in PostgreSQL shared by two coordinators.

// A static lock serializes the tests that share a server; it is held across
// awaits on purpose, and each test has a runtime of its own, so blocking its
// thread holds up no other task.
#![allow(clippy::await_holding_lock)]

use std::process::Command;
use std::time::{Duration, Instant};

use arrow_flight::sql::CommandGetTables;
use quiver_tests::*;
use quiver_tests::{my, pg, pg::psql};

const ENV: [(&str, &str); 2] = [
    ("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD),
    ("QUIVER_TEST_MY_PASSWORD", my::PASSWORD),
];

/// One test at a time: one of them stops the shared PostgreSQL server.
static SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    SERVER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn data_dir(dir: &tempfile::TempDir) -> String {
    format!(
        "[server]\ndata_dir = {:?}\nhttp_listen = \"127.0.0.1:0\"\n",
        dir.path().display().to_string()
    )
}

fn ints(batches: &[arrow::record_batch::RecordBatch], column: &str) -> Vec<i64> {
    strings(batches, column)
        .iter()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{column} = {s} is not a number"))
        })
        .collect()
}

/// [`scalar`] as a number.
async fn number(c: &mut FlightSqlClient, sql: &str) -> anyhow::Result<i64> {
    Ok(scalar(c, sql).await?.parse()?)
}

type FlightSqlClient = arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>;

fn metrics(http: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", &format!("http://{http}/metrics")])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_span_sources_nest_push_down_and_survive_a_restart() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_views CASCADE; CREATE SCHEMA t_views;
         CREATE TABLE t_views.orders (id int, cust int, amount int, region text);
         INSERT INTO t_views.orders SELECT i, i % 3, i * 10, CASE WHEN i % 2 = 0 THEN 'east' ELSE 'west' END FROM generate_series(1, 40) i;
         CREATE TABLE t_views.doomed (x int); INSERT INTO t_views.doomed VALUES (1);",
    );
    my::sql(
        "DROP TABLE IF EXISTS v_customers; CREATE TABLE v_customers (id INT, name VARCHAR(20));
         INSERT INTO v_customers VALUES (0, 'zero'), (1, 'one'), (2, 'two');",
    );
    let home = tempfile::tempdir()?;
    let config = format!(
        "{}\n[[view]]\nname = \"reports.from_config\"\nsql = \"SELECT count(*) AS nations FROM quiver.tpch.nation\"\n\n{}\n{}\n{}",
        data_dir(&home),
        pg::source("pgv", "t_views"),
        my::source("myv"),
        tpch_source()
    );
    let mut server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;

    // A view in a schema no source has, filtering PostgreSQL; a view on it joining MariaDB.
    query(&mut c, "CREATE VIEW quiver.reports.big_orders AS SELECT id, cust, amount FROM quiver.pgv.orders WHERE amount > 300").await?;
    query(
        &mut c,
        "CREATE VIEW quiver.reports.totals AS
         SELECT c.name, sum(b.amount) AS total, count(*) AS n FROM quiver.reports.big_orders b
         JOIN quiver.myv.v_customers c ON b.cust = c.id GROUP BY c.name",
    )
    .await?;
    // Unqualified: the default schema (the first source's), like table names.
    query(&mut c, "CREATE VIEW nation_count AS SELECT count(*) AS n FROM quiver.tpch.nation JOIN quiver.tpch.region ON n_regionkey = r_regionkey").await?;

    let rows = query(
        &mut c,
        "SELECT name, total, n FROM quiver.reports.totals ORDER BY name",
    )
    .await?;
    assert_eq!(strings(&rows, "name"), vec!["one", "two", "zero"]);
    // ids 31..40 have amount > 300: cust = id % 3.
    let expected: Vec<i64> = ["one", "two", "zero"]
        .iter()
        .map(|n| {
            (31..=40)
                .filter(|i| ["zero", "one", "two"][(i % 3) as usize] == *n)
                .map(|i| i * 10)
                .sum()
        })
        .collect();
    assert_eq!(ints(&rows, "total"), expected);
    assert_eq!(
        number(&mut c, "SELECT n FROM quiver.pgv.nation_count").await?,
        25
    );
    assert_eq!(
        number(&mut c, "SELECT nations FROM quiver.reports.from_config").await?,
        25
    );

    // The view's filter reached PostgreSQL (the statement Quiver sent is in the server's log).
    let statement = pg::last_copy("t_views");
    assert!(
        statement.contains("amount") && statement.contains("300"),
        "the view's filter was not pushed down: {statement}"
    );

    // A query's own filter goes through the view to the source too.
    query(
        &mut c,
        "SELECT id FROM quiver.reports.big_orders WHERE id = 37",
    )
    .await?;
    let statement = pg::last_copy("t_views");
    assert!(
        statement.contains("37") && statement.contains("300"),
        "{statement}"
    );

    // Metadata: Flight SQL lists views as VIEW with their columns; SHOW CREATE VIEW and system.views have the text.
    let info = c
        .get_tables(CommandGetTables {
            catalog: Some("quiver".into()),
            db_schema_filter_pattern: Some("reports".into()),
            table_name_filter_pattern: None,
            table_types: vec!["VIEW".into()],
            include_schema: true,
        })
        .await?;
    let tables = fetch(&mut c, info).await?;
    assert_eq!(
        strings(&tables, "table_name"),
        vec!["big_orders", "from_config", "totals"]
    );
    assert_eq!(strings(&tables, "table_type"), vec!["VIEW"; 3]);
    let shown = query(&mut c, "SHOW CREATE VIEW quiver.reports.big_orders").await?;
    assert!(
        strings(&shown, "create_statement")[0].contains("amount > 300"),
        "{:?}",
        strings(&shown, "create_statement")
    );
    let views = query(
        &mut c,
        "SELECT name, origin FROM quiver.system.views ORDER BY name",
    )
    .await?;
    assert_eq!(
        strings(&views, "name"),
        vec![
            "quiver.pgv.nation_count",
            "quiver.reports.big_orders",
            "quiver.reports.from_config",
            "quiver.reports.totals"
        ]
    );
    assert_eq!(
        strings(&views, "origin"),
        vec!["sql", "sql", "config", "sql"]
    );

    // Mistakes get errors that say what is wrong.
    let e = query_error(&mut c, "CREATE VIEW quiver.reports.big_orders AS SELECT 1").await;
    assert!(e.contains("already exists"), "{e}");
    let e = query_error(
        &mut c,
        "CREATE VIEW quiver.reports.bad AS SELECT nope FROM quiver.pgv.orders",
    )
    .await;
    assert!(
        e.contains("quiver.reports.bad") && e.contains("nope"),
        "{e}"
    );
    let e = query_error(&mut c, "DROP VIEW quiver.reports.from_config").await;
    assert!(e.contains("config"), "{e}");
    let e = query_error(
        &mut c,
        "CREATE OR REPLACE VIEW quiver.reports.big_orders AS SELECT * FROM quiver.reports.totals",
    )
    .await;
    assert!(e.contains("cycle"), "{e}");
    let e = query_error(&mut c, "CREATE TABLE quiver.pgv.t AS SELECT 1").await;
    assert!(
        e.contains("read-only") && e.contains("writable = true"),
        "a read-only source takes no new table: {e}"
    );

    // A view whose table disappears fails alone, naming itself and the table.
    query(
        &mut c,
        "CREATE VIEW quiver.reports.fragile AS SELECT x FROM quiver.pgv.doomed",
    )
    .await?;
    psql("DROP TABLE t_views.doomed");
    query(&mut c, "REFRESH pgv").await?;
    let e = query_error(&mut c, "SELECT * FROM quiver.reports.fragile").await;
    assert!(
        e.contains("quiver.reports.fragile") && e.contains("doomed"),
        "{e}"
    );
    assert_eq!(
        strings(
            &query(
                &mut c,
                "SELECT name FROM quiver.reports.totals ORDER BY name"
            )
            .await?,
            "name"
        )
        .len(),
        3
    );

    // Replace, drop, and a restart keeps what is left.
    query(&mut c, "CREATE OR REPLACE VIEW quiver.reports.big_orders AS SELECT id, cust, amount FROM quiver.pgv.orders WHERE amount > 350").await?;
    assert_eq!(
        number(
            &mut c,
            "SELECT count(*) AS n FROM quiver.reports.big_orders"
        )
        .await?,
        5
    );
    query(&mut c, "DROP VIEW quiver.reports.fragile").await?;
    assert!(
        server.terminate(Duration::from_secs(10)),
        "the coordinator stops on SIGTERM"
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    assert_eq!(
        number(
            &mut c,
            "SELECT count(*) AS n FROM quiver.reports.big_orders"
        )
        .await?,
        5
    );
    assert_eq!(
        strings(
            &query(&mut c, "SELECT name FROM quiver.reports.totals").await?,
            "name"
        )
        .len(),
        3
    );
    let e = query_error(&mut c, "SELECT * FROM quiver.reports.fragile").await;
    assert!(e.contains("fragile") && e.contains("not found"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accelerated_copies_refresh_fully_and_by_append_and_survive_a_failed_refresh(
) -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_acc CASCADE; CREATE SCHEMA t_acc;
         CREATE TABLE t_acc.events (id int, ts timestamp, v int);
         INSERT INTO t_acc.events SELECT i, timestamp '2026-01-01' + i * interval '1 minute', i FROM generate_series(1, 100) i;
         CREATE TABLE t_acc.items (id int, price int);
         INSERT INTO t_acc.items SELECT i, i * 2 FROM generate_series(1, 30) i;",
    );
    let home = tempfile::tempdir()?;
    let config = format!(
        // As stages, so the copy's files spread over both workers.
        "{}\n[acceleration]\nrows_per_file = 40\n\n[workers]\nmode = \"embedded\"\ncount = 2\nsingle_stage_max_bytes = 0\n\n{}\n\
         [[table]]\nname = \"quiver.pga.events\"\naccelerate = {{ mode = \"append\", time_column = \"ts\" }}\n",
        data_dir(&home),
        pg::source("pga", "t_acc"),
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;

    // The config's acceleration gets its first copy in the background.
    let state = "SELECT state FROM quiver.system.accelerations WHERE dataset = 'quiver.pga.events'";
    wait_for_value(&mut c, state, "ready", Duration::from_secs(60)).await?;
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.pga.events").await?,
        100
    );
    let plan = strings(
        &query(&mut c, "EXPLAIN SELECT sum(v) FROM quiver.pga.events").await?,
        "plan",
    )
    .join("\n");
    assert!(
        plan.contains("parquet"),
        "the copy is read as Parquet:\n{plan}"
    );
    assert!(
        !plan.contains("SourceScan") && !plan.contains("t_acc"),
        "the source is not read:\n{plan}"
    );

    // Both workers read the copy (100 rows in 3 files of at most 40).
    assert_eq!(
        number(&mut c, "SELECT sum(v) AS s FROM quiver.pga.events").await?,
        5050
    );
    assert!(plan.contains("part-00002.parquet"), "3 files:\n{plan}");
    assert!(
        plan.contains("@embedded-1") && plan.contains("@embedded-2"),
        "both workers scan the copy:\n{plan}"
    );

    // Append: only rows above the high-water mark come; a changed old row does not.
    psql(
        "INSERT INTO t_acc.events SELECT i, timestamp '2026-01-01' + i * interval '1 minute', i FROM generate_series(101, 150) i;
         UPDATE t_acc.events SET v = -1 WHERE id = 1;",
    );
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.pga.events").await?,
        100,
        "the copy until it is refreshed"
    );
    let refreshed = query(&mut c, "REFRESH ACCELERATION quiver.pga.events").await?;
    assert_eq!(ints(&refreshed, "rows_fetched"), vec![50]);
    assert_eq!(ints(&refreshed, "rows"), vec![150]);
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.pga.events").await?,
        150
    );
    assert_eq!(
        number(&mut c, "SELECT v FROM quiver.pga.events WHERE id = 1").await?,
        1,
        "append does not see updates"
    );
    let marks = query(
        &mut c,
        "SELECT high_water FROM quiver.system.accelerations WHERE dataset = 'quiver.pga.events'",
    )
    .await?;
    assert!(
        strings(&marks, "high_water")[0].starts_with("2026-01-01T02:30"),
        "{:?}",
        strings(&marks, "high_water")
    );

    // Full, from SQL: the copy follows deletes too.
    let done = query(
        &mut c,
        "ALTER TABLE quiver.pga.items SET (accelerated = true, sort_by = 'price')",
    )
    .await?;
    assert!(
        strings(&done, "result")[0].contains("30 rows"),
        "{:?}",
        strings(&done, "result")
    );
    psql("DELETE FROM t_acc.items WHERE id > 20");
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.pga.items").await?,
        30
    );
    query(&mut c, "REFRESH ACCELERATION quiver.pga.items").await?;
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.pga.items").await?,
        20
    );
    assert_eq!(
        number(&mut c, "SELECT max(price) AS m FROM quiver.pga.items").await?,
        40
    );

    // The database stops: the refresh fails, the old copy still answers, the failure is on record.
    pg::services("stop-postgres");
    let e = query_error(&mut c, "REFRESH ACCELERATION quiver.pga.items").await;
    pg::services("start");
    assert!(!e.is_empty(), "the refresh failed");
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.pga.items").await?,
        20
    );
    let record = query(&mut c, "SELECT last_outcome, last_error, rows FROM quiver.system.accelerations WHERE dataset = 'quiver.pga.items'").await?;
    assert_eq!(strings(&record, "last_outcome"), vec!["failed"]);
    assert!(!strings(&record, "last_error")[0].is_empty());
    assert_eq!(ints(&record, "rows"), vec![20]);
    let text = metrics(&server.http_addr());
    assert!(metric(&text, "quiver_acceleration_refresh_failures_total") >= 1.0);
    assert!(metric(&text, "quiver_acceleration_refreshes_total") >= 4.0);

    // Replaced copies are deleted a refresh later; a removed acceleration reads the source again.
    query(&mut c, "REFRESH ACCELERATION quiver.pga.items").await?;
    let folder =
        std::fs::read_dir(home.path().join("accelerations").join("quiver.pga.items"))?.count();
    assert!(folder <= 2, "{folder} segment folders left");
    query(
        &mut c,
        "ALTER TABLE quiver.pga.items SET (accelerated = false)",
    )
    .await?;
    psql("DELETE FROM t_acc.items WHERE id > 10");
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.pga.items").await?,
        10
    );
    let e = query_error(
        &mut c,
        "ALTER TABLE quiver.pga.events SET (accelerated = false)",
    )
    .await;
    assert!(e.contains("config"), "{e}");

    // A restart serves the copy it had at once, without refreshing it.
    let mut server = server;
    assert!(server.terminate(Duration::from_secs(10)));
    psql("INSERT INTO t_acc.events VALUES (1000, timestamp '2030-01-01', 1)");
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    assert_eq!(
        strings(&query(&mut c, state).await?, "state"),
        vec!["ready"]
    );
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.pga.events").await?,
        150
    );
    drop(server);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_results_cache_hits_is_invalidated_by_a_refresh_and_stays_bounded() -> anyhow::Result<()>
{
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_cache CASCADE; CREATE SCHEMA t_cache;
         CREATE TABLE t_cache.sales (id int, amount int); INSERT INTO t_cache.sales SELECT i, i FROM generate_series(1, 10) i;",
    );
    let home = tempfile::tempdir()?;
    let config = format!(
        "{}postgres_listen = \"127.0.0.1:0\"\n[cache]\nenabled = true\nmax_bytes = \"256KiB\"\n\n{}\n{}",
        data_dir(&home),
        pg::source("pgc", "t_cache"),
        tpch_source()
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    query(
        &mut c,
        "ALTER TABLE quiver.pgc.sales SET (accelerated = true)",
    )
    .await?;

    let dashboard = "SELECT sum(amount) AS total FROM quiver.pgc.sales WHERE id > 2";
    let first = query(&mut c, dashboard).await?;
    let second = query(
        &mut c,
        "select sum(amount) as total   from quiver.pgc.sales where id > 2",
    )
    .await?;
    assert_eq!(ints(&first, "total"), vec![52]);
    assert_eq!(ints(&second, "total"), ints(&first, "total"));
    // The exact text again is answered before planning, and still records what it read.
    assert_eq!(ints(&query(&mut c, dashboard).await?, "total"), vec![52]);
    let hits = "SELECT cache_hit FROM quiver.system.queries WHERE sql LIKE '%sum(amount)%' AND sql NOT LIKE '%system%' ORDER BY started_at";
    assert_eq!(
        strings(&query(&mut c, hits).await?, "cache_hit"),
        vec!["false", "true", "true"]
    );
    let read = query(&mut c, "SELECT tables FROM quiver.system.queries WHERE sql = 'SELECT sum(amount) AS total FROM quiver.pgc.sales WHERE id > 2'").await?;
    assert_eq!(
        strings(&read, "tables"),
        vec!["quiver.pgc.sales"; 2],
        "the first run and the exact repeat"
    );

    // A refresh of the copy it read drops it.
    psql("INSERT INTO t_cache.sales VALUES (11, 100)");
    query(&mut c, "REFRESH ACCELERATION quiver.pgc.sales").await?;
    assert_eq!(ints(&query(&mut c, dashboard).await?, "total"), vec![152]);
    assert_eq!(
        strings(&query(&mut c, hits).await?, "cache_hit"),
        vec!["false", "true", "true", "false"]
    );

    // Off for one statement: a header on HTTP (and Flight SQL), a session setting on the PostgreSQL port.
    let sql_api = format!("http://{}/v1/sql", server.http_addr());
    for header in ["x-quiver-cache: off", "x-quiver-cache: on"] {
        let out = Command::new("curl")
            .args(["-sS", "-H", header, "-d", dashboard, &sql_api])
            .output()?;
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("152"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let pg_url = format!("postgres://x@{}/quiver", server.postgres_addr());
    for setting in ["SET quiver.cache = off", "SET quiver.cache = on"] {
        let out = Command::new("psql")
            .args([pg_url.as_str(), "-qtA", "-c", setting, "-c", dashboard])
            .output()?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "152",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        strings(&query(&mut c, hits).await?, "cache_hit"),
        vec!["false", "true", "true", "false", "false", "true", "false", "true"]
    );

    // Statements with now() or over system tables are never cached.
    query(
        &mut c,
        "SELECT now() AS t, count(*) FROM quiver.tpch.nation",
    )
    .await?;
    query(
        &mut c,
        "SELECT now() AS t, count(*) FROM quiver.tpch.nation",
    )
    .await?;
    let volatile = query(
        &mut c,
        "SELECT cache_hit FROM quiver.system.queries WHERE sql LIKE 'SELECT now()%'",
    )
    .await?;
    assert_eq!(strings(&volatile, "cache_hit"), vec!["false", "false"]);

    // Many different results: memory stays within cache.max_bytes.
    for k in 0..40 {
        query(
            &mut c,
            &format!("SELECT * FROM quiver.tpch.customer WHERE c_custkey % 40 = {k}"),
        )
        .await?;
    }
    let text = metrics(&server.http_addr());
    let bytes = metric(&text, "quiver_cache_bytes");
    assert!(
        bytes > 0.0 && bytes <= 256.0 * 1024.0,
        "cache holds {bytes} bytes"
    );
    assert!(metric(&text, "quiver_cache_hits_total") >= 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_sharing_a_postgres_store_see_each_others_views() -> anyhow::Result<()> {
    let _server = exclusive();
    psql("DROP SCHEMA IF EXISTS t_meta CASCADE; CREATE SCHEMA t_meta;");
    let url = format!("{}?options=-csearch_path%3Dt_meta", pg::URL);
    let config = |home: &tempfile::TempDir| {
        format!(
            "{}\n[metadata]\nurl = {url:?}\npoll_secs = 0.5\n\n{}",
            data_dir(home),
            tpch_source()
        )
    };
    let (home_a, home_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = start_coordinator_with_env(&config(&home_a), &ENV)?;
    let b = start_coordinator_with_env(&config(&home_b), &ENV)?;
    let (mut ca, mut cb) = (client(&a.addr).await?, client(&b.addr).await?);
    query(
        &mut ca,
        "CREATE VIEW quiver.shared.regions AS SELECT r_name FROM quiver.tpch.region",
    )
    .await?;
    wait_for_value(
        &mut cb,
        "SELECT count(*) AS n FROM quiver.shared.regions",
        "5",
        Duration::from_secs(10),
    )
    .await?;
    // Each migration step ran once (two coordinators started together), into the
    // schema the URL chose.
    assert_eq!(
        psql("SELECT count(*) || ' ' || count(DISTINCT version) || ' ' || max(version) FROM t_meta.quiver_schema_migrations").trim(),
        "2 2 2"
    );
    query(&mut cb, "DROP VIEW quiver.shared.regions").await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match query(&mut ca, "SELECT * FROM quiver.shared.regions").await {
            Err(e) if format!("{e:#}").contains("not found") => break,
            other => anyhow::ensure!(
                Instant::now() < deadline,
                "the drop did not reach the other coordinator: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[test]
fn an_unwritable_data_dir_or_bad_store_url_stops_the_start_with_a_clear_error() {
    let (ok, stderr) = serve_until_exit(
        "[server]\ndata_dir = \"/proc/quiver-cannot-be-here\"\n",
        &[],
    );
    assert!(
        !ok && stderr.contains("server.data_dir") && stderr.contains("/proc/quiver-cannot-be-here"),
        "{stderr}"
    );
    let (ok, stderr) = serve_until_exit("[metadata]\nurl = \"mongodb://x\"\n", &[]);
    assert!(
        !ok && stderr.contains("postgres://") && stderr.contains("sqlite://"),
        "{stderr}"
    );
}

/// The rows of `t_live.items` as PostgreSQL has them, `id|name|qty|price` per line.
fn live_source_rows(columns: &str) -> Vec<String> {
    psql(&format!("SELECT {columns} FROM t_live.items ORDER BY id"))
        .lines()
        .map(str::to_string)
        .collect()
}

/// The same rows as Quiver answers them (from the live copy once it is ready).
async fn live_copy_rows(c: &mut FlightSqlClient, columns: &str) -> anyhow::Result<Vec<String>> {
    let rows = query(
        c,
        &format!("SELECT {columns} FROM quiver.live.items ORDER BY id"),
    )
    .await?;
    let names: Vec<&str> = columns.split(',').map(str::trim).collect();
    let values: Vec<Vec<String>> = names.iter().map(|n| strings(&rows, n)).collect();
    Ok((0..row_count(&rows))
        .map(|i| {
            values
                .iter()
                .map(|v| v[i].as_str())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect())
}

/// Waits until the copy equals the source value by value (a checkpoint).
async fn live_copy_catches_up(
    c: &mut FlightSqlClient,
    columns: &str,
    what: &str,
) -> anyhow::Result<()> {
    let expected = live_source_rows(columns);
    let started = Instant::now();
    loop {
        // An error is "not yet": a column the copy does not have before its new base.
        let got = live_copy_rows(c, columns).await.unwrap_or_default();
        if got == expected {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            let differ: Vec<_> = got
                .iter()
                .zip(&expected)
                .filter(|(a, b)| a != b)
                .take(5)
                .collect();
            anyhow::bail!(
                "{what}: the copy has {} rows, the source {}; first differences {differ:?}",
                got.len(),
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn slots(name: &str) -> String {
    psql(&format!(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{name}'"
    ))
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_copy_follows_the_change_stream_through_restarts_and_outages() -> anyhow::Result<()>
{
    let _server = exclusive();
    const SLOT: &str = "quiver_quiver_live_items";
    psql(&format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{SLOT}';
         DROP PUBLICATION IF EXISTS {SLOT};
         SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'quiver_quiver_live_nokey';
         DROP PUBLICATION IF EXISTS quiver_quiver_live_nokey;
         DROP SCHEMA IF EXISTS t_live CASCADE; CREATE SCHEMA t_live;
         CREATE TABLE t_live.items (id int PRIMARY KEY, name text, qty int, price numeric(10, 2));
         INSERT INTO t_live.items SELECT i, 'item ' || i, i % 7, i * 1.5 FROM generate_series(1, 2000) i;
         CREATE TABLE t_live.nokey (x int);"
    ));
    let columns = "id, name, qty, price";
    let home = tempfile::tempdir()?;
    let config = format!(
        "{}\n[cache]\nenabled = true\n\n{}",
        data_dir(&home),
        pg::source("live", "t_live")
    );
    let mut server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;

    // A table whose updates carry no key is refused, saying what to do.
    let refused = query_error(
        &mut c,
        "ALTER TABLE quiver.live.nokey SET (accelerated = true, mode = 'changes')",
    )
    .await;
    assert!(
        refused.contains("no primary key") && refused.contains("REPLICA IDENTITY FULL"),
        "{refused}"
    );
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.system.accelerations WHERE dataset = 'quiver.live.nokey'").await?,
        0,
        "a refused acceleration is not recorded"
    );

    // With REPLICA IDENTITY FULL, a table without a key is kept live too.
    psql(
        "ALTER TABLE t_live.nokey REPLICA IDENTITY FULL; ALTER TABLE t_live.nokey ADD COLUMN y text;
         INSERT INTO t_live.nokey SELECT i, 'v' || i FROM generate_series(1, 50) i;",
    );
    query(
        &mut c,
        "ALTER TABLE quiver.live.nokey SET (accelerated = true, mode = 'changes')",
    )
    .await?;
    psql(
        "UPDATE t_live.nokey SET y = 'changed' WHERE x <= 10; DELETE FROM t_live.nokey WHERE x > 40;
         INSERT INTO t_live.nokey VALUES (100, 'new');",
    );
    let expected: Vec<String> = psql("SELECT x, y FROM t_live.nokey ORDER BY x")
        .lines()
        .map(str::to_string)
        .collect();
    let started = Instant::now();
    loop {
        let rows = query(&mut c, "SELECT x, y FROM quiver.live.nokey ORDER BY x")
            .await
            .unwrap_or_default();
        let (x, y) = (strings(&rows, "x"), strings(&rows, "y"));
        let got: Vec<String> = x.iter().zip(&y).map(|(a, b)| format!("{a}|{b}")).collect();
        if got == expected {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "REPLICA IDENTITY FULL: the copy has {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    query(
        &mut c,
        "ALTER TABLE quiver.live.nokey SET (accelerated = false)",
    )
    .await?;
    assert_eq!(slots("quiver_quiver_live_nokey"), "0");

    // The copy is taken and answers; the slot exists.
    query(
        &mut c,
        "ALTER TABLE quiver.live.items SET (accelerated = true, mode = 'changes')",
    )
    .await?;
    assert_eq!(slots(SLOT), "1");
    let state = "SELECT state FROM quiver.system.accelerations WHERE dataset = 'quiver.live.items'";
    wait_for_value(&mut c, state, "ready", Duration::from_secs(60)).await?;
    let plan = strings(
        &query(&mut c, "EXPLAIN SELECT sum(qty) FROM quiver.live.items").await?,
        "plan",
    )
    .join("\n");
    assert!(
        plan.contains("parquet") && !plan.contains("t_live"),
        "the copy is read, not the source:\n{plan}"
    );
    live_copy_catches_up(&mut c, columns, "the initial copy").await?;

    // Inserts, updates, deletes, a moved key, and a long transaction arrive.
    psql(
        "INSERT INTO t_live.items VALUES (5000, 'new', 1, 2.5);
         UPDATE t_live.items SET qty = qty + 100 WHERE id % 10 = 0;
         DELETE FROM t_live.items WHERE id BETWEEN 100 AND 199;
         UPDATE t_live.items SET id = 9000 WHERE id = 7;",
    );
    psql(
        "BEGIN;
         INSERT INTO t_live.items SELECT i, 'batch ' || i, 0, 0 FROM generate_series(10000, 13000) i;
         UPDATE t_live.items SET name = 'renamed' WHERE id = 1;
         DELETE FROM t_live.items WHERE id = 10500;
         COMMIT;",
    );
    live_copy_catches_up(&mut c, columns, "after changes").await?;
    let status = query(
        &mut c,
        "SELECT slot, changes_applied, lag_bytes FROM quiver.system.accelerations WHERE dataset = 'quiver.live.items'",
    )
    .await?;
    assert_eq!(strings(&status, "slot"), vec![SLOT]);
    assert!(ints(&status, "changes_applied")[0] >= 3000, "{status:?}");
    let text = metrics(&server.http_addr());
    assert!(
        metric(
            &text,
            "quiver_acceleration_changes_applied_total{dataset=\"quiver.live.items\"}"
        ) >= 3000.0
    );
    assert!(text.contains("quiver_acceleration_lag_bytes{dataset=\"quiver.live.items\"}"));
    // The console's catalog page shows the live copy with its lag, in a real browser.
    {
        use quiver_tests::browser::{browser, open, screenshot, wait_for_text};
        let chromium = browser()?;
        let tab = chromium.new_tab().map_err(|e| anyhow::anyhow!("{e}"))?;
        open(&tab, &format!("http://{}/catalog", server.http_addr()))?;
        wait_for_text(&tab, "the live copy with its lag", |t| {
            t.contains("quiver.live.items")
                && t.contains("changes")
                && t.contains("lag ")
                && t.contains("changes applied")
        })?;
        screenshot(&tab, "catalog-live-copy")?;
    }

    // An answer kept in the results cache is dropped when a change is applied.
    let total = "SELECT sum(qty) AS s FROM quiver.live.items";
    let before = number(&mut c, total).await?;
    assert_eq!(number(&mut c, total).await?, before);
    let hits = metric(&metrics(&server.http_addr()), "quiver_cache_hits_total");
    assert!(hits >= 1.0, "the repeat was a cache hit");
    psql("UPDATE t_live.items SET qty = qty + 1 WHERE id = 2");
    live_copy_catches_up(&mut c, columns, "one more update").await?;
    assert_eq!(
        number(&mut c, total).await?,
        before + 1,
        "not the cached answer"
    );

    // The coordinator is killed (SIGKILL) while a writer commits a transaction
    // every few milliseconds, so in the middle of receiving and flushing; changes
    // made meanwhile arrive after its restart, none lost and none twice (a doubled
    // insert would be a second row of its key).
    psql(
        "CREATE OR REPLACE PROCEDURE t_live.churn(n int) LANGUAGE plpgsql AS $$
         BEGIN
           FOR i IN 1..n LOOP
             INSERT INTO t_live.items VALUES (40000 + i, 'churn', i, i);
             UPDATE t_live.items SET qty = qty + 1 WHERE id = 40000 + i - 1;
             DELETE FROM t_live.items WHERE id = 40000 + i - 2 AND i % 3 = 0;
             COMMIT;
             PERFORM pg_sleep(0.005);
           END LOOP;
         END $$",
    );
    let writer = std::thread::spawn(|| psql("CALL t_live.churn(600)"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    anyhow::ensure!(!writer.is_finished(), "the writer still runs at the kill");
    server.kill();
    psql(
        "INSERT INTO t_live.items VALUES (6000, 'while down', 2, 3);
         UPDATE t_live.items SET price = price + 1 WHERE id <= 50;
         DELETE FROM t_live.items WHERE id BETWEEN 11000 AND 11999;",
    );
    let mut server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer failed"))?;
    live_copy_catches_up(&mut c, columns, "after a kill in mid-stream").await?;
    assert_eq!(
        number(
            &mut c,
            "SELECT count(*) - count(DISTINCT id) AS n FROM quiver.live.items"
        )
        .await?,
        0
    );

    // PostgreSQL stops: the copy keeps answering; the stream resumes when it is back.
    let before = live_copy_rows(&mut c, columns).await?;
    pg::services("stop-postgres");
    let during = live_copy_rows(&mut c, columns).await;
    pg::services("start");
    assert_eq!(during?, before, "the copy answers while PostgreSQL is down");
    psql("INSERT INTO t_live.items VALUES (7000, 'after the outage', 3, 4)");
    live_copy_catches_up(&mut c, columns, "after PostgreSQL came back").await?;

    // A column added in the source makes a new copy with it.
    psql("ALTER TABLE t_live.items ADD COLUMN note text; UPDATE t_live.items SET note = 'n' || id WHERE id % 100 = 0;");
    live_copy_catches_up(
        &mut c,
        "id, name, qty, price, note",
        "after a column was added",
    )
    .await?;

    // A change set smaller than the base is read beside it (an anti join); a large
    // one is compacted into a new base, and the copy is plain Parquet again.
    let explain = "EXPLAIN SELECT * FROM quiver.live.items";
    psql("UPDATE t_live.items SET qty = 0 WHERE id = 3");
    live_copy_catches_up(&mut c, "id, name, qty, price, note", "a small change").await?;
    let plan = strings(&query(&mut c, explain).await?, "plan").join("\n");
    assert!(plan.contains("LeftAnti"), "base and change set:\n{plan}");
    // A change set of a hundredth of the base is folded in once the stream is quiet (10 s).
    psql("UPDATE t_live.items SET qty = qty + 1 WHERE id <= 100");
    let all = "id, name, qty, price, note";
    live_copy_catches_up(&mut c, all, "a hundredth of the base").await?;
    let quiet = Instant::now();
    loop {
        let plan = strings(&query(&mut c, explain).await?, "plan").join("\n");
        if !plan.contains("Join") {
            break;
        }
        anyhow::ensure!(
            quiet.elapsed() < Duration::from_secs(60),
            "a quiet stream's change set was not compacted:\n{plan}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        quiet.elapsed() > Duration::from_secs(5),
        "not before the stream was quiet"
    );
    live_copy_catches_up(&mut c, all, "after a quiet compaction").await?;
    psql("INSERT INTO t_live.items SELECT i, 'bulk', 1, 1 FROM generate_series(20000, 32000) i");
    live_copy_catches_up(&mut c, all, "after a bulk insert").await?;
    let started = Instant::now();
    loop {
        let plan = strings(&query(&mut c, explain).await?, "plan").join("\n");
        if !plan.contains("Join") {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the change set was not compacted:\n{plan}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    live_copy_catches_up(&mut c, all, "after compaction").await?;

    // TRUNCATE empties the copy; what follows it arrives.
    psql("BEGIN; TRUNCATE t_live.items; INSERT INTO t_live.items VALUES (1, 'again', 1, 1, 'x'); COMMIT;");
    live_copy_catches_up(&mut c, all, "after a truncate").await?;

    // A column dropped in the source: the next change brings a new copy without it.
    psql("ALTER TABLE t_live.items DROP COLUMN note; INSERT INTO t_live.items VALUES (2, 'two', 2, 2);");
    live_copy_catches_up(&mut c, columns, "after a column was dropped").await?;
    let started = Instant::now();
    while query(&mut c, "SELECT note FROM quiver.live.items")
        .await
        .is_ok()
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the copy still has the dropped column"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Removing the acceleration drops the slot and its publication.
    query(
        &mut c,
        "ALTER TABLE quiver.live.items SET (accelerated = false)",
    )
    .await?;
    assert_eq!(slots(SLOT), "0");
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM pg_publication WHERE pubname = '{SLOT}'"
        ))
        .trim(),
        "0"
    );
    server.kill();
    Ok(())
}

/// `count|sum` of `t_sub.orders` where `condition` holds, as PostgreSQL answers it.
fn subset_source_answer(condition: &str) -> String {
    psql(&format!(
        "SELECT count(*) || '|' || coalesce(sum(amount), 0) FROM t_sub.orders WHERE {condition}"
    ))
    .trim()
    .to_string()
}

/// The same through Quiver, with the plan that answered it.
async fn subset_answer(
    c: &mut FlightSqlClient,
    condition: &str,
) -> anyhow::Result<(String, String)> {
    let sql = format!(
        "SELECT count(*) AS n, coalesce(sum(amount), 0) AS s FROM quiver.pgs.orders WHERE {condition}"
    );
    let rows = query(c, &sql).await?;
    let answer = format!("{}|{}", strings(&rows, "n")[0], strings(&rows, "s")[0]);
    let plan = strings(&query(c, &format!("EXPLAIN {sql}")).await?, "plan").join("\n");
    Ok((answer, plan))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_subset_answers_only_the_queries_it_covers() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_sub CASCADE; CREATE SCHEMA t_sub;
         CREATE TABLE t_sub.orders (id int PRIMARY KEY, region text NOT NULL, d date NOT NULL, amount bigint NOT NULL);
         INSERT INTO t_sub.orders SELECT i, (ARRAY['EU', 'US', 'APAC'])[i % 3 + 1], current_date - (i % 200), i
           FROM generate_series(1, 600) i;",
    );
    let home = tempfile::tempdir()?;
    let config = format!(
        "{}\n[workers]\nmode = \"embedded\"\ncount = 2\n\n{}",
        data_dir(&home),
        pg::source("pgs", "t_sub"),
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    let listed =
        "SELECT count(*) AS n FROM quiver.system.accelerations WHERE dataset = 'quiver.pgs.orders'";

    // A filter that cannot be read, or is no condition, is refused before anything is recorded.
    let e = query_error(
        &mut c,
        "ALTER TABLE quiver.pgs.orders SET (accelerated = true, filter = 'nope > 1')",
    )
    .await;
    assert!(e.contains("filter") && e.contains("nope"), "{e}");
    let e = query_error(
        &mut c,
        "ALTER TABLE quiver.pgs.orders SET (accelerated = true, filter = 'amount + 1')",
    )
    .await;
    assert!(e.contains("not a condition"), "{e}");
    let e = query_error(
        &mut c,
        "ALTER TABLE quiver.pgs.orders SET (accelerated = true, mode = 'changes', filter = 'amount > 1')",
    )
    .await;
    assert!(e.contains("live copy") && e.contains("whole table"), "{e}");
    assert_eq!(number(&mut c, listed).await?, 0);

    // The last 90 days of two regions; the window is fixed when the copy is made.
    query(
        &mut c,
        "ALTER TABLE quiver.pgs.orders SET (accelerated = true, \
         filter = 'd >= current_date - interval ''90 days'' AND region IN (''EU'', ''US'')')",
    )
    .await?;
    let filter = scalar(
        &mut c,
        "SELECT filter FROM quiver.system.accelerations WHERE dataset = 'quiver.pgs.orders'",
    )
    .await?;
    // The window's first day (PostgreSQL's clock may be a day off UTC, Quiver's).
    let days = psql("SELECT current_date - 89, current_date - 90, current_date - 91");
    let since_90 = days
        .split(['|', '\n'])
        .map(str::trim)
        .find(|d| filter.contains(*d))
        .unwrap_or_else(|| {
            panic!("the recorded filter holds the window's first day ({days}): {filter}")
        })
        .to_string();
    assert!(!filter.contains("current_date"), "{filter}");
    // A row written after the copy: a query the copy answers does not see it yet.
    psql("INSERT INTO t_sub.orders VALUES (1000, 'EU', current_date, 1000000)");
    let since_30 = psql("SELECT current_date - 30").trim().to_string();
    let since_120 = psql("SELECT current_date - 120").trim().to_string();

    // Contained: one region of the two, a shorter window.
    let contained = format!("region = 'EU' AND d >= DATE '{since_30}'");
    let (answer, plan) = subset_answer(&mut c, &contained).await?;
    assert_eq!(
        answer,
        subset_source_answer(&format!("{contained} AND id <> 1000")),
        "answered from the copy, made before row 1000"
    );
    assert_ne!(answer, subset_source_answer(&contained));
    assert!(
        plan.contains("quiver.pgs.orders: answered from its accelerated copy")
            && plan.contains(&since_90),
        "EXPLAIN says the copy answers, and why:\n{plan}"
    );
    assert!(
        plan.contains("parquet") && !plan.contains("t_sub"),
        "the copy's files are read, not the database:\n{plan}"
    );
    // `BETWEEN` and `IN` inside the covered set are contained too.
    let between =
        format!("region IN ('US', 'EU') AND d BETWEEN DATE '{since_30}' AND current_date - 1");
    let (answer, plan) = subset_answer(&mut c, &between).await?;
    assert_eq!(answer, subset_source_answer(&between));
    assert!(
        plan.contains("answered from its accelerated copy"),
        "{plan}"
    );

    // Not contained: another region, a longer window, no filter. The source answers.
    for (condition, part) in [
        (
            format!("region = 'APAC' AND d >= DATE '{since_30}'"),
            "region",
        ),
        (format!("region = 'EU' AND d >= DATE '{since_120}'"), "d >="),
        ("amount > 0".to_string(), "d >="),
    ] {
        let (answer, plan) = subset_answer(&mut c, &condition).await?;
        assert_eq!(answer, subset_source_answer(&condition), "{condition}");
        assert!(
            plan.contains("quiver.pgs.orders: read from the source, not its accelerated copy")
                && plan.contains("do not imply")
                && plan.contains(part),
            "EXPLAIN says the source answers {condition}, and why:\n{plan}"
        );
        assert!(
            !plan.contains("parquet"),
            "{condition}: the copy is not read:\n{plan}"
        );
    }
    assert_eq!(
        number(&mut c, "SELECT count(*) AS n FROM quiver.pgs.orders").await?,
        601
    );

    // A refresh takes the new row in.
    query(&mut c, "REFRESH ACCELERATION quiver.pgs.orders").await?;
    let (answer, plan) = subset_answer(&mut c, &contained).await?;
    assert_eq!(answer, subset_source_answer(&contained));
    assert!(
        plan.contains("answered from its accelerated copy"),
        "{plan}"
    );
    query(
        &mut c,
        "ALTER TABLE quiver.pgs.orders SET (accelerated = false)",
    )
    .await?;
    Ok(())
}
