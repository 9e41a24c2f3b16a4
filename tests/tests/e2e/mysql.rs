//! MariaDB as a source, against the real server scripts/services.sh starts.

use arrow::util::pretty::pretty_format_batches;
use quiver_tests::my;
use quiver_tests::*;

const ENV: [(&str, &str); 1] = [("QUIVER_TEST_MY_PASSWORD", my::PASSWORD)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_types_round_trip_and_pushdown() -> anyhow::Result<()> {
    my::sql(
        "DROP TABLE IF EXISTS t_types; CREATE TABLE t_types (id int, ti tinyint, b tinyint(1), si smallint unsigned,
           bi bigint, f float, d double, dc decimal(10,3), vc varchar(20), tx text, bl blob, dt date, dtm datetime(6),
           tm time, yr year, js json, en enum('a','b'));
         INSERT INTO t_types VALUES (1, -5, 1, 65000, -9000000000, 1.5, -2.25, 1234.567, 'héllo', 'it''s; \\\\ fine',
           0xDEADBEEF, '2024-02-29', '2001-02-03 04:05:06.789', '13:14:15', 2024, '{\"a\": 1}', 'b'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    let server = start_coordinator_with_env(&my::source("maria"), &ENV)?;
    let mut c = client(&server.addr).await?;
    let rows = query(&mut c, "SELECT * FROM quiver.maria.t_types ORDER BY id").await?;
    let types: Vec<String> = rows[0]
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    for expected in [
        "ti:Int8",
        "b:Boolean",
        "si:UInt16",
        "bi:Int64",
        "f:Float32",
        "d:Float64",
        "dc:Decimal128(10, 3)",
        "vc:Utf8",
        "bl:Binary",
        "dt:Date32",
        "tm:Time64(µs)",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "missing {expected} in {types:?}"
        );
    }
    let out = pretty_format_batches(&rows)?.to_string();
    for value in [
        "-5",
        "true",
        "65000",
        "-9000000000",
        "1234.567",
        "héllo",
        "it's; \\ fine",
        "deadbeef",
        "2024-02-29",
        "2001-02-03T04:05:06.789",
        "13:14:15",
        "2024",
        "{\"a\": 1}",
        "| b ",
    ] {
        assert!(out.contains(value), "missing {value:?} in\n{out}");
    }
    let nulls: usize = rows
        .iter()
        .flat_map(|b| b.columns().iter().skip(1).map(|c| c.null_count()))
        .sum();
    assert_eq!(nulls, 16, "{out}");

    // Filter and aggregate reach MariaDB (its general log records every statement).
    let rows = query(&mut c, "SELECT count(*) AS n FROM quiver.maria.t_types WHERE dc > 1000 AND vc <> 'quiver_my_marker'").await?;
    assert_eq!(row_count(&rows), 1);
    let log = my::log();
    let statement = log
        .lines()
        .rev()
        .find(|l| l.contains("quiver_my_marker"))
        .unwrap_or_default();
    assert!(
        statement.contains("count(") && statement.contains("> 1000"),
        "not pushed down: {statement}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_hostile_names_and_literals_cannot_inject() -> anyhow::Result<()> {
    my::sql(
        r#"DROP TABLE IF EXISTS `we``ird; DROP TABLE canary;--`; DROP TABLE IF EXISTS canary;
           CREATE TABLE `we``ird; DROP TABLE canary;--` (`co'l\` int, `v;al` text);
           INSERT INTO `we``ird; DROP TABLE canary;--` VALUES (1, 'a''b;c\\d'), (2, 'plain');
           CREATE TABLE canary (id int); INSERT INTO canary VALUES (1);"#,
    );
    let server = start_coordinator_with_env(&my::source("evil"), &ENV)?;
    let mut c = client(&server.addr).await?;
    let rows = query(&mut c, r#"SELECT "co'l\" FROM quiver.evil."we`ird; DROP TABLE canary;--" WHERE "v;al" = 'a''b;c\d'"#).await?;
    assert_eq!(row_count(&rows), 1);
    let bypass = r#"SELECT "v;al" FROM quiver.evil."we`ird; DROP TABLE canary;--" WHERE "v;al" = '\'' OR 1=1 OR '''"#;
    assert_eq!(
        row_count(&query(&mut c, bypass).await?),
        0,
        "the filter was bypassed"
    );
    // In MySQL's default mode a backslash escapes the next quote: a literal ending in
    // a backslash must not end the string early.
    let sql = r#"SELECT id FROM quiver.evil.canary WHERE id = 1 OR CAST(id AS VARCHAR) = '\'' OR ''; DROP TABLE canary; -- '"#;
    let rows = query(&mut c, sql).await?;
    assert_eq!(row_count(&rows), 1);
    assert_eq!(
        my::sql("SELECT count(*) FROM canary").trim(),
        "1",
        "canary table must survive"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_primary_keys_are_served_over_flight_sql() -> anyhow::Result<()> {
    my::sql("DROP TABLE IF EXISTS pk_lines; CREATE TABLE pk_lines (o_id int, line int, note text, PRIMARY KEY (line, o_id));");
    let server = start_coordinator_with_env(&my::source("mkeys"), &ENV)?;
    let mut c = client(&server.addr).await?;
    let command = arrow_flight::sql::CommandGetPrimaryKeys {
        catalog: None,
        db_schema: Some("mkeys".into()),
        table: "pk_lines".into(),
    };
    let info = c.get_primary_keys(command).await?;
    let keys = arrow::util::pretty::pretty_format_batches(&fetch(&mut c, info).await?)?.to_string();
    let order: Vec<&str> = keys.lines().filter(|l| l.contains("pk_lines")).collect();
    assert_eq!(order.len(), 2, "{keys}");
    assert!(
        order[0].contains("| line ") && order[0].contains("| 1 "),
        "{keys}"
    );
    assert!(
        order[1].contains("| o_id ") && order[1].contains("| 2 "),
        "{keys}"
    );
    my::sql("DROP TABLE pk_lines");
    Ok(())
}

/// MariaDB connections are read-only sessions unless the source is writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_connections_are_read_only_sessions() -> anyhow::Result<()> {
    use mysql_async::prelude::Queryable;
    my::sql("DROP TABLE IF EXISTS t_ro; CREATE TABLE t_ro (x int);");
    std::env::set_var("QUIVER_TEST_MY_PASSWORD", my::PASSWORD);
    let source = |extra: &str| -> anyhow::Result<quiver_connectors::config::MySqlSource> {
        Ok(toml::from_str(&format!("url = \"{}\"\n{extra}", my::URL))?)
    };
    let (_, pool) = quiver_connectors::mysql::executor("ro", &source("")?)?;
    let mut conn = pool.get_conn().await?;
    let err = conn
        .query_drop("INSERT INTO t_ro VALUES (1)")
        .await
        .expect_err("a read-only session must refuse writes");
    assert!(err.to_string().contains("READ ONLY"), "{err}");
    let (_, writable) = quiver_connectors::mysql::executor("rw", &source("writable = true")?)?;
    writable
        .get_conn()
        .await?
        .query_drop("INSERT INTO t_ro VALUES (1)")
        .await?;
    assert_eq!(my::sql("SELECT count(*) FROM t_ro").trim(), "1");
    Ok(())
}

/// An access rule's row filter and mask reach MariaDB inside the pushed-down statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_filters_and_masks_are_pushed_into_mariadb() -> anyhow::Result<()> {
    my::sql(
        "DROP TABLE IF EXISTS t_acl; CREATE TABLE t_acl (id int, email varchar(40), region varchar(4));
         INSERT INTO t_acl VALUES (1, 'ann@example.com', 'eu'), (2, 'bob@example.com', 'us'), (3, 'cy@example.com', 'eu');",
    );
    let config = format!(
        "[server.auth]\nusers = {{ ana = {{ password = \"pw\", roles = [\"eu\"] }} }}\n\
         [[access.rule]]\nroles = [\"eu\"]\nschema = \"maria\"\ntable = \"t_acl\"\nrow_filter = \"region = 'eu'\"\n\
         masks = {{ email = \"'hidden'\" }}\n{}",
        my::source("maria")
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    c.handshake("ana", "pw").await?;
    let out = pretty_format_batches(
        &query(
            &mut c,
            "SELECT id, email FROM t_acl WHERE id < 100 ORDER BY id",
        )
        .await?,
    )?
    .to_string();
    assert!(
        out.contains("| 1  | hidden |") && out.contains("| 3  | hidden |"),
        "{out}"
    );
    assert!(
        !out.contains("| 2 ") && !out.contains("@example"),
        "a filtered row or a masked value leaked: {out}"
    );
    let log = my::log();
    let statement = log
        .lines()
        .rev()
        .find(|l| l.contains("t_acl") && l.contains("hidden"))
        .unwrap_or_default();
    assert!(
        statement.contains("'eu'"),
        "filter not pushed down: {statement}"
    );
    Ok(())
}

/// A large table is read as primary-key ranges, one statement each, and every row
/// arrives once; a table without an integer key is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_large_tables_are_read_in_key_ranges() -> anyhow::Result<()> {
    my::sql(
        "SET SESSION max_recursive_iterations = 10000;
         DROP TABLE IF EXISTS ranged; CREATE TABLE ranged (id int PRIMARY KEY, v int);
         INSERT INTO ranged WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
           SELECT i * 3, i % 7 FROM n;
         DROP TABLE IF EXISTS unkeyed; CREATE TABLE unkeyed (name varchar(10)); INSERT INTO unkeyed VALUES ('a'), ('b');
         ANALYZE TABLE ranged;",
    );
    let config = format!(
        "{}scan_partitions = 4\npartition_min_mb = 0\n",
        my::source("ranges")
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    let sql = "SELECT id, v FROM quiver.ranges.ranged WHERE v <> 99";
    let plan = pretty_format_batches(&query(&mut c, &format!("EXPLAIN {sql}")).await?)?.to_string();
    assert!(plan.contains("partitions=4"), "{plan}");
    for bound in ["`id` < ", "`id` >= "] {
        assert!(plan.contains(bound), "no {bound} in\n{plan}");
    }
    // The ranges' rows, read by several statements, are every row once.
    let rows = query(&mut c, sql).await?;
    let ids: std::collections::BTreeSet<i64> = strings(&rows, "id")
        .iter()
        .map(|i| i.parse())
        .collect::<Result<_, _>>()?;
    assert_eq!(row_count(&rows), 5000);
    assert_eq!(ids.len(), 5000);
    assert_eq!(ids.iter().sum::<i64>(), 3 * 5000 * 5001 / 2);

    let plan = pretty_format_batches(
        &query(
            &mut c,
            "EXPLAIN SELECT name FROM quiver.ranges.unkeyed WHERE name <> 'z'",
        )
        .await?,
    )?
    .to_string();
    assert!(!plan.contains("partitions="), "{plan}");
    Ok(())
}

/// More join keys than the dynamic filter lists (`join_keys_max`, here 10) reach
/// MariaDB as one `IN (…)` of the build side's distinct keys (PostgreSQL gets an
/// array, federated_tpch.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_gets_the_whole_key_set_of_a_join() -> anyhow::Result<()> {
    my::sql(
        "SET SESSION max_recursive_iterations = 30000;
         DROP TABLE IF EXISTS keyed; CREATE TABLE keyed (id bigint PRIMARY KEY, note varchar(20));
         INSERT INTO keyed WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
           SELECT i, CONCAT('n', i) FROM n;
         ANALYZE TABLE keyed;",
    );
    let config = format!(
        "[workers]\njoin_keys_max = 10\njoin_key_array_max = 1000\n{}{}",
        tpch_source(),
        my::source("mkeys2")
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    // The 25 nation keys (more than the 10 listed) are the build side.
    let rows = query(
        &mut c,
        "SELECT n.n_nationkey, t.note FROM tpch.nation n JOIN quiver.mkeys2.keyed t ON t.id = n.n_nationkey
         WHERE t.note <> 'quiver-my-key-set' ORDER BY 1",
    )
    .await?;
    assert_eq!(row_count(&rows), 24);
    assert_eq!(strings(&rows, "note")[0], "n1");
    let log = my::log();
    let statement = log
        .lines()
        .rev()
        .find(|l| l.contains("quiver-my-key-set"))
        .unwrap_or_default();
    let list = statement
        .split(" IN (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_default();
    let mut sent: Vec<i64> = list
        .split(',')
        .filter_map(|k| k.trim().parse().ok())
        .collect();
    sent.sort_unstable();
    let expected: Vec<i64> = (0..25).collect();
    assert_eq!(sent, expected, "MariaDB was asked for: {statement}");
    Ok(())
}
