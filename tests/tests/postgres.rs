//! PostgreSQL as a source, against the real server scripts/services.sh starts:
//! type mapping, pushdown read back from the server's statement log, hostile
//! identifiers and literals, joins with files, and the server going away.

// A static lock serializes the tests that share a server; it is held across
// awaits on purpose, and each test has a runtime of its own, so blocking its
// thread holds up no other task.
#![allow(clippy::await_holding_lock)]

use arrow::util::pretty::pretty_format_batches;
use quiver_tests::pg::{self, psql};
use quiver_tests::*;

const ENV: [(&str, &str); 1] = [("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD)];

/// One test at a time: the fault test stops the shared server.
static SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    SERVER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn text(batches: &[arrow::record_batch::RecordBatch]) -> String {
    pretty_format_batches(batches)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_type_round_trips_with_nulls() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_types CASCADE; CREATE SCHEMA t_types;
         CREATE TYPE t_types.mood AS ENUM ('sad', 'happy');
         CREATE TABLE t_types.all_types (
           id int4, i2 int2, i8 int8, f4 float4, f8 float8, n numeric(12,3), nu numeric,
           t text, vc varchar(10), c char(3), b bool, by bytea, d date, tm time, ts timestamp,
           tz timestamptz, iv interval, u uuid, j json, jb jsonb, m t_types.mood, arr int4[], tarr text[],
           pt point);
         INSERT INTO t_types.all_types VALUES
           (1, -2, 9000000000, 1.5, -2.25, 12345.678, 0.000123, 'héllo', 'v', 'ab', true, '\\xdeadbeef',
            '2024-02-29', '13:14:15.5', '2001-02-03 04:05:06.789', '2001-02-03 04:05:06+03', '1 mon 2 days 00:00:03',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '{\"b\": null}', 'happy', '{1,NULL,3}', '{x,y}',
            '(1.5,2)'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let server = start_coordinator_with_env(&pg::source("pgt", "t_types"), &ENV)?;
    let mut c = client(&server.addr).await?;
    let rows = query(
        &mut c,
        "SELECT id, i2, i8, f4, f8, n, nu, t, vc, c, b, by, d, tm, ts, tz, iv, u, j, jb, m, arr, tarr, pt
         FROM quiver.pgt.all_types ORDER BY id",
    )
    .await?;
    let schema = rows[0].schema();
    let types: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    for expected in [
        "i2:Int16",
        "i8:Int64",
        "f4:Float32",
        "f8:Float64",
        "n:Decimal128(12, 3)",
        "nu:Float64",
        "t:Utf8",
        "b:Boolean",
        "by:Binary",
        "d:Date32",
        "tm:Time64(µs)",
        "ts:Timestamp(µs)",
        "u:Utf8",
        "jb:Utf8",
        "m:Utf8",
        "pt:Utf8",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "missing {expected} in {types:?}"
        );
    }
    let out = text(&rows);
    for value in [
        "-2",
        "9000000000",
        "1.5",
        "-2.25",
        "12345.678",
        "0.000123",
        "héllo",
        "| ab |",
        "1 mons 2 days 3",
        "true",
        "deadbeef",
        "2024-02-29",
        "13:14:15.500",
        "2001-02-03T04:05:06.789",
        "2001-02-03T01:05:06Z",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "{\"a\": [1, 2]}",
        "{\"b\": null}",
        "happy",
        "[1, , 3]",
        "[x, y]",
        "(1.5,2)",
    ] {
        assert!(out.contains(value), "missing {value:?} in\n{out}");
    }
    // Row 2 is all NULLs but its id.
    let nulls: usize = rows
        .iter()
        .flat_map(|b| b.columns().iter().skip(1).map(|c| c.null_count()))
        .sum();
    assert_eq!(nulls, 23, "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_aggregates_and_joins_reach_postgres() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_push CASCADE; CREATE SCHEMA t_push;
         CREATE TABLE t_push.cust (id int primary key, name text);
         CREATE TABLE t_push.sales (id int, cust int, amount int);
         INSERT INTO t_push.cust SELECT g, 'c' || g FROM generate_series(1, 50) g;
         INSERT INTO t_push.sales SELECT g, 1 + g % 50, g FROM generate_series(1, 20000) g;",
    );
    let server = start_coordinator_with_env(&pg::source("shop", "t_push"), &ENV)?;
    let mut c = client(&server.addr).await?;
    let marker = "quiver_pushdown_marker";
    let rows = query(
        &mut c,
        &format!(
            "SELECT c.name, count(*) AS n, sum(s.amount) AS total FROM quiver.shop.sales s JOIN quiver.shop.cust c ON s.cust = c.id
             WHERE s.amount > 19900 AND c.name <> '{marker}' GROUP BY c.name ORDER BY c.name"
        ),
    )
    .await?;
    // 100 sales pass the filter, 2 per customer.
    assert_eq!(row_count(&rows), 50);
    let statement = pg::last_copy(marker);
    assert!(!statement.is_empty(), "no pushed statement in the log");
    for part in [
        "JOIN",
        "\"t_push\".\"cust\"",
        "> 19900",
        "GROUP BY",
        "count(",
    ] {
        assert!(
            statement.contains(part),
            "{part} not pushed down: {statement}"
        );
    }

    // Rows that crossed from PostgreSQL = the filtered count (100 of 20000), as the
    // scan node's own metrics show.
    let analyzed = query(
        &mut c,
        "EXPLAIN ANALYZE SELECT id FROM quiver.shop.sales WHERE amount > 19900",
    )
    .await?;
    let plan = pretty_format_batches(&analyzed)?.to_string();
    let scan = plan
        .lines()
        .find(|l| l.contains("SourceScanExec"))
        .unwrap_or_default();
    assert!(scan.contains("metrics=[output_rows=100,"), "{plan}");

    // Only the filtered rows come back: a LIMIT and a filter on one table.
    let rows = query(
        &mut c,
        "SELECT id FROM quiver.shop.sales WHERE amount BETWEEN 10 AND 19 ORDER BY id LIMIT 5",
    )
    .await?;
    assert_eq!(row_count(&rows), 5);
    let log = pg::log();
    let statement = log
        .lines()
        .rev()
        .find(|l| l.contains("BETWEEN 10 AND 19") || l.contains(">= 10"))
        .unwrap_or_default();
    assert!(
        statement.contains("LIMIT 5"),
        "limit not pushed: {statement}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_literals_cannot_inject() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        r#"DROP SCHEMA IF EXISTS t_evil CASCADE; CREATE SCHEMA t_evil;
           CREATE TABLE t_evil."we""ird; DROP TABLE x;--" ("co'l\" int, "v;al" text);
           INSERT INTO t_evil."we""ird; DROP TABLE x;--" VALUES (1, 'a''b;c\d'), (2, 'plain');
           CREATE TABLE t_evil.canary (id int); INSERT INTO t_evil.canary VALUES (1);"#,
    );
    let server = start_coordinator_with_env(&pg::source("evil", "t_evil"), &ENV)?;
    let mut c = client(&server.addr).await?;
    let rows = query(
        &mut c,
        r#"SELECT "co'l\" FROM quiver.evil."we""ird; DROP TABLE x;--" WHERE "v;al" = 'a''b;c\d'"#,
    )
    .await?;
    assert_eq!(row_count(&rows), 1, "{}", text(&rows));
    // A value whose quote follows a backslash: printed naively it would close the
    // string and turn the rest into `OR 1=1`, returning every row.
    let bypass = r#"SELECT "v;al" FROM quiver.evil."we""ird; DROP TABLE x;--" WHERE "v;al" = '\'' OR 1=1 OR '''"#;
    assert_eq!(
        row_count(&query(&mut c, bypass).await?),
        0,
        "the filter was bypassed"
    );
    // A literal that would end the statement if it were pasted unescaped; compared
    // with a column so it cannot be folded away before it reaches PostgreSQL.
    let sql = r#"SELECT id FROM quiver.evil.canary WHERE id = 1 OR CAST(id AS VARCHAR) = '''; DROP TABLE t_evil.canary; --'"#;
    let rows = query(&mut c, sql).await?;
    assert_eq!(row_count(&rows), 1);
    let statement = pg::last_copy("\"t_evil\".\"canary\"");
    assert!(
        statement.contains("CONCAT('''', '; DROP TABLE t_evil.canary; --')"),
        "literal not split safely: {statement}"
    );
    assert_eq!(
        psql("SELECT count(*) FROM t_evil.canary").trim(),
        "1",
        "canary table must survive"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_postgres_with_parquet() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_mix CASCADE; CREATE SCHEMA t_mix;
         CREATE TABLE t_mix.nation_notes (nationkey int, note text);
         INSERT INTO t_mix.nation_notes VALUES (7, 'beer'), (6, 'wine'), (24, 'baseball');",
    );
    let config = format!("{}{}", tpch_source(), pg::source("notes", "t_mix"));
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    let rows = query(
        &mut c,
        "SELECT n.n_name, x.note FROM quiver.tpch.nation n JOIN quiver.notes.nation_notes x ON x.nationkey = n.n_nationkey
         WHERE x.note <> 'wine' ORDER BY n.n_name",
    )
    .await?;
    let out = text(&rows);
    assert!(
        out.contains("GERMANY") && out.contains("beer") && out.contains("UNITED STATES"),
        "{out}"
    );
    assert!(!out.contains("FRANCE"), "{out}");
    // The PostgreSQL side of the join got its own filter.
    let statement = pg::last_copy("nation_notes");
    assert!(
        statement.contains("<> 'wine'"),
        "filter not pushed to PostgreSQL: {statement}"
    );
    // A VALUES list joined with the PostgreSQL table stays in Quiver (it once went
    // into the statement, which the unparser cannot write).
    let rows = query(
        &mut c,
        "SELECT v.k, x.note FROM (VALUES (7, 'a'), (24, 'b'), (99, 'c')) v(k, tag)
         JOIN quiver.notes.nation_notes x ON x.nationkey = v.k ORDER BY v.k",
    )
    .await?;
    assert_eq!(strings(&rows, "note"), ["beer", "baseball"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_is_named_and_recovers() -> anyhow::Result<()> {
    let _server = exclusive();
    psql("DROP SCHEMA IF EXISTS t_fault CASCADE; CREATE SCHEMA t_fault; CREATE TABLE t_fault.v (x int); INSERT INTO t_fault.v VALUES (42);");
    let config = format!("{}{}", tpch_source(), pg::source("flaky", "t_fault"));
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    assert_eq!(
        row_count(&query(&mut c, "SELECT x FROM quiver.flaky.v").await?),
        1
    );

    pg::services("stop-postgres");
    let err = query_error(&mut c, "SELECT x FROM quiver.flaky.v").await;
    pg::services("start");
    assert!(err.contains("source 'flaky' (postgres)"), "{err}");

    // Files kept working, and PostgreSQL works again without restarting Quiver.
    assert_eq!(
        row_count(&query(&mut c, "SELECT * FROM quiver.tpch.region").await?),
        5
    );
    let mut ok = false;
    for _ in 0..20 {
        if query(&mut c, "SELECT x FROM quiver.flaky.v")
            .await
            .map(|r| row_count(&r))
            .ok()
            == Some(1)
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(ok, "queries on PostgreSQL did not recover");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_picks_up_new_tables() -> anyhow::Result<()> {
    let _server = exclusive();
    psql("DROP SCHEMA IF EXISTS t_fresh CASCADE; CREATE SCHEMA t_fresh; CREATE TABLE t_fresh.a (x int);");
    let server = start_coordinator_with_env(&pg::source("fresh", "t_fresh"), &ENV)?;
    let mut c = client(&server.addr).await?;
    let listed =
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'fresh' ORDER BY 1";
    assert_eq!(row_count(&query(&mut c, listed).await?), 1);

    psql("CREATE TABLE t_fresh.b (y text); CREATE TABLE t_fresh.c (z date);");
    let out = text(&query(&mut c, "REFRESH fresh").await?);
    assert!(
        out.contains("quiver.fresh") && out.contains("| 3 "),
        "{out}"
    );
    assert_eq!(row_count(&query(&mut c, listed).await?), 3);

    // The same through the Flight action.
    psql("DROP TABLE t_fresh.c;");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut flight = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let action = arrow_flight::Action {
        r#type: "refresh".into(),
        body: "quiver.fresh".into(),
    };
    let mut results = flight.do_action(action).await?.into_inner();
    let body = results
        .message()
        .await?
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default();
    assert_eq!(body, "quiver.fresh: 2 tables");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_table_is_read_as_page_ranges_by_several_workers() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_big CASCADE; CREATE SCHEMA t_big;
         CREATE TABLE t_big.events (id bigint, payload text);
         INSERT INTO t_big.events SELECT g, repeat('x', 40) || g FROM generate_series(1, 200000) g;",
    );
    let size_mb: f64 = psql("SELECT pg_relation_size('t_big.events') / 1048576.0")
        .trim()
        .parse()?;
    assert!(size_mb > 8.0, "table too small to split: {size_mb} MiB");
    let config = format!(
        "[workers]\ncount = 2\n{}scan_partitions = 4\npartition_min_mb = 8\n",
        pg::source("big", "t_big")
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    let sql = "SELECT id FROM quiver.big.events WHERE id % 7 = 3";

    let plan = text(&query(&mut c, &format!("EXPLAIN {sql}")).await?);
    assert!(
        plan.contains("SourceScanExec: source=big partitions=4"),
        "{plan}"
    );
    assert!(
        plan.contains("RemoteFragmentExec"),
        "ranges should run on workers:\n{plan}"
    );
    assert!(
        plan.contains("@embedded-1") && plan.contains("@embedded-2"),
        "{plan}"
    );

    // Every row exactly once: same count and sum as PostgreSQL's own.
    let rows = query(&mut c, sql).await?;
    let (mut count, mut sum) = (0i64, 0i64);
    for batch in &rows {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("bigint ids");
        count += ids.len() as i64;
        sum += ids.iter().flatten().sum::<i64>();
    }
    let expected = psql("SELECT count(*) || ',' || sum(id) FROM t_big.events WHERE id % 7 = 3");
    assert_eq!(format!("{count},{sum}"), expected.trim());

    // Four statements reached the server, each with its own page range.
    let log = pg::log();
    let ranges: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("COPY") && l.contains("% 7) = 3") && l.contains("ctid"))
        .collect();
    assert!(ranges.len() >= 4, "{ranges:#?}");
    let last4 = &ranges[ranges.len() - 4..];
    assert_eq!(
        last4
            .iter()
            .filter(|l| l.contains("ctid >=") && l.contains("ctid <"))
            .count(),
        2,
        "{last4:#?}"
    );

    // An aggregate over the same table is one pushed-down statement, not split.
    let total = query(&mut c, "SELECT count(*) FROM quiver.big.events").await?;
    assert!(text(&total).contains("| 200000 "), "{}", text(&total));
    let plan = text(&query(&mut c, "EXPLAIN SELECT count(*) FROM quiver.big.events").await?);
    assert!(!plan.contains("partitions="), "{plan}");
    psql("DROP SCHEMA t_big CASCADE");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_encrypted_and_verified() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_tls CASCADE; CREATE SCHEMA t_tls;
         CREATE VIEW t_tls.me AS SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid();",
    );
    let ca = target_dir()
        .join("..")
        .join("services")
        .join("pg")
        .join("ca.crt")
        .canonicalize()?;
    let tls_source = |name: &str, ca: &std::path::Path| {
        pg::source(name, "t_tls").replace("/quiver\"\n", "/quiver?sslmode=require\"\n")
            + &format!("tls_ca_file = \"{}\"\n", ca.display())
    };
    let server = start_coordinator_with_env(&tls_source("tls", &ca), &ENV)?;
    let mut c = client(&server.addr).await?;
    let rows = text(&query(&mut c, "SELECT ssl, version FROM quiver.tls.me").await?);
    assert!(rows.contains("true") && rows.contains("TLSv1."), "{rows}");

    // A certificate signed by someone else is refused, and the error says why.
    let dir = tempfile::tempdir()?;
    let other = dir.path().join("other.crt");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .stderr(std::process::Stdio::null())
        .status()?;
    assert!(status.success());
    let server = start_coordinator_with_env(&tls_source("tls", &other), &ENV)?;
    let mut c = client(&server.addr).await?;
    let err = query_error(&mut c, "SELECT ssl FROM quiver.tls.me").await;
    assert!(
        err.contains("postgres") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    psql("DROP SCHEMA t_tls CASCADE");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_keys_are_discovered_and_served_over_flight_sql() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_pk CASCADE; CREATE SCHEMA t_pk;
         CREATE TABLE t_pk.lines (o_id int, line int, note text, PRIMARY KEY (line, o_id));
         CREATE VIEW t_pk.notes AS SELECT note FROM t_pk.lines;",
    );
    let server = start_coordinator_with_env(&pg::source("pk", "t_pk"), &ENV)?;
    let mut c = client(&server.addr).await?;
    let keys = |table: &str| arrow_flight::sql::CommandGetPrimaryKeys {
        catalog: Some("quiver".into()),
        db_schema: Some("pk".into()),
        table: table.into(),
    };
    let mut fetch = async |table: &str| -> anyhow::Result<String> {
        let info = c.get_primary_keys(keys(table)).await?;
        Ok(text(&fetch(&mut c, info).await?))
    };
    let lines = fetch("lines").await?;
    // Key order, not column order: (line, o_id).
    assert!(lines.contains("| quiver       | pk             | lines      | line        |          | 1            |"), "{lines}");
    assert!(
        lines.contains("| lines      | o_id        |          | 2            |"),
        "{lines}"
    );
    assert!(!lines.contains("note"), "{lines}");
    let view = fetch("notes").await?;
    assert_eq!(
        view.lines().filter(|l| l.contains("notes")).count(),
        0,
        "a view has no key: {view}"
    );
    psql("DROP SCHEMA t_pk CASCADE");
    Ok(())
}

/// Access rules reach PostgreSQL as SQL: the row filter and the mask are in the
/// statement the server logs, so no row or value the user may not see leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_filters_and_masks_are_pushed_into_postgres() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_acl CASCADE; CREATE SCHEMA t_acl;
         CREATE TABLE t_acl.people (id int, email text, region text);
         INSERT INTO t_acl.people VALUES (1, 'ann@example.com', 'eu'), (2, 'bob@example.com', 'us'), (3, 'cy@example.com', 'eu');",
    );
    let config = format!(
        "[server.auth]\nusers = {{ ana = {{ password = \"pw\", roles = [\"eu\"] }} }}\n\
         [[access.rule]]\nroles = [\"eu\"]\nschema = \"acl\"\ntable = \"people\"\nrow_filter = \"region = 'eu'\"\n\
         masks = {{ email = \"left(email, 2) || '…'\" }}\n{}",
        pg::source("acl", "t_acl")
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    c.handshake("ana", "pw").await?;
    let out = text(
        &query(
            &mut c,
            "SELECT id, email FROM people WHERE id < 100 ORDER BY id",
        )
        .await?,
    );
    assert!(out.contains("an…") && out.contains("cy…"), "{out}");
    assert!(
        !out.contains("bo") && !out.contains("@example"),
        "a filtered row or a masked value leaked: {out}"
    );
    let statement = pg::last_copy("t_acl");
    assert!(
        statement.contains("'eu'") && statement.contains("left("),
        "filter or mask not pushed down: {statement}"
    );
    Ok(())
}

/// Every connection a source opens is a read-only session unless the source is
/// marked writable: even a forged plan could not change the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_connections_are_read_only_sessions() -> anyhow::Result<()> {
    let _server = exclusive();
    psql("DROP SCHEMA IF EXISTS t_ro CASCADE; CREATE SCHEMA t_ro; CREATE TABLE t_ro.t (x int);");
    std::env::set_var("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD);
    let source = |extra: &str| -> anyhow::Result<quiver_connectors::config::PostgresSource> {
        let text = format!("url = \"{}\"\nremote_schema = \"t_ro\"\n{extra}", pg::URL);
        Ok(toml::from_str(&text)?)
    };
    let (_, pool) = quiver_connectors::postgres::executor("ro", &source("")?)?;
    let client = pool.get().await?;
    let err = client
        .batch_execute("INSERT INTO t_ro.t VALUES (1)")
        .await
        .expect_err("a read-only session must refuse writes");
    assert!(
        format!("{err:?}").contains("read-only transaction"),
        "{err:?}"
    );
    let (_, writable) = quiver_connectors::postgres::executor("rw", &source("writable = true")?)?;
    writable
        .get()
        .await?
        .batch_execute("INSERT INTO t_ro.t VALUES (1)")
        .await?;
    assert_eq!(psql("SELECT count(*) FROM t_ro.t").trim(), "1");
    Ok(())
}

/// The join order takes a PostgreSQL table's size from PostgreSQL's own planner
/// (`EXPLAIN`), its filter applied: 250 rare rows of 25,000, where a fixed guess for
/// an unknown filter would say 5,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_order_reads_postgres_estimates() -> anyhow::Result<()> {
    let _server = exclusive();
    psql(
        "DROP SCHEMA IF EXISTS t_est CASCADE; CREATE SCHEMA t_est;
         CREATE TABLE t_est.dims (id int PRIMARY KEY, nation int, flag text);
         INSERT INTO t_est.dims SELECT i, i % 25, CASE WHEN i % 100 = 0 THEN 'rare' ELSE 'common' END
           FROM generate_series(0, 24999) i;
         ANALYZE t_est.dims;",
    );
    let config = format!("{}{}", tpch_source(), pg::source("est", "t_est"));
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    let sql = "SELECT count(*) AS n FROM quiver.est.dims d
        JOIN quiver.tpch.nation n ON d.nation = n.n_nationkey
        JOIN quiver.tpch.region r ON n.n_regionkey = r.r_regionkey
        WHERE d.flag = 'rare'";
    let explain = text(&query(&mut c, &format!("EXPLAIN {sql}")).await?);
    let estimate: Option<f64> = explain.lines().find_map(|l| {
        l.split('|')
            .nth(2)?
            .trim()
            .strip_prefix("d: ")?
            .trim()
            .parse()
            .ok()
    });
    assert!(
        estimate.is_some_and(|rows| (150.0..=400.0).contains(&rows)),
        "PostgreSQL's estimate of the filtered table: {estimate:?}\n{explain}"
    );
    let rows = query(&mut c, sql).await?;
    assert_eq!(
        arrow::util::display::array_value_to_string(rows[0].column(0), 0)?,
        "250"
    );
    Ok(())
}
