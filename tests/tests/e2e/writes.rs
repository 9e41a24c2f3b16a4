//! Pipelines: COPY … TO, CREATE TABLE … AS, INSERT and DROP TABLE on a writable
//! files source (written by the embedded workers, committed by the coordinator),
//! INSERT and CTAS into the real PostgreSQL and MariaDB, refusals and errors that
//! name the problem, a cut-off write that leaves nothing, and ADBC bulk ingest.

// A static lock serializes the tests that share a server; it is held across
// awaits on purpose, and each test has a runtime of its own, so blocking its
// thread holds up no other task.
#![allow(clippy::await_holding_lock)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use quiver_tests::pg::{self, psql};
use quiver_tests::*;

const ENV: [(&str, &str); 2] = [
    ("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD),
    ("QUIVER_TEST_MY_PASSWORD", my::PASSWORD),
];

/// The PostgreSQL and MariaDB tests use schemas of their own, but the services are shared.
static DATABASES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lake(dir: &Path) -> String {
    format!(
        "[[source]]\nname = \"lake\"\nkind = \"files\"\nlocation = {:?}\nwritable = true\n",
        dir.display().to_string()
    )
}

/// The one number a write answers with.
fn written(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .map(|b| {
            b.column(0)
                .as_primitive::<UInt64Type>()
                .iter()
                .flatten()
                .sum::<u64>()
        })
        .sum()
}

fn int(batches: &[RecordBatch], column: usize) -> i64 {
    let c = batches[0].column(column);
    arrow::compute::cast(c, &arrow::datatypes::DataType::Int64)
        .expect("cast")
        .as_primitive::<Int64Type>()
        .value(0)
}

/// Files anywhere under `dir` whose path contains `needle`.
fn files_with(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(needle) {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Rows of a folder of Parquet files as pyarrow reads them.
fn pyarrow_rows(folder: &Path) -> String {
    let script = "import sys, pyarrow.dataset as ds\nt = ds.dataset(sys.argv[1], format='parquet', partitioning='hive').to_table()\nprint(t.num_rows, sum(t.column(0).to_pylist()))";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(folder)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_create_insert_and_drop_on_a_files_source() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("lake");
    std::fs::create_dir_all(&root)?;
    let server = start_coordinator(&format!("{}{}", tpch_source(), lake(&root)))?;
    let mut c = client(&server.addr).await?;

    // COPY a query to a new folder: the workers write it, pyarrow and Quiver read it back.
    let out = root.join("nations");
    let copied = query(
        &mut c,
        &format!(
            "COPY (SELECT n_nationkey, n_name FROM tpch.nation) TO '{}/' (FORMAT parquet)",
            out.display()
        ),
    )
    .await?;
    assert_eq!(written(&copied), 25);
    assert_eq!(pyarrow_rows(&out), "25 300");
    let back = query(
        &mut c,
        "SELECT count(*), sum(n_nationkey) FROM lake.nations",
    )
    .await?;
    assert_eq!((int(&back, 0), int(&back, 1)), (25, 300));
    // INSERT OVERWRITE replaces the table's files.
    let replaced = query(&mut c, "INSERT OVERWRITE TABLE lake.nations SELECT n_nationkey, n_name FROM tpch.nation WHERE n_nationkey < 3").await?;
    assert_eq!(written(&replaced), 3);
    let back = query(
        &mut c,
        "SELECT count(*), sum(n_nationkey) FROM lake.nations",
    )
    .await?;
    assert_eq!((int(&back, 0), int(&back, 1)), (3, 3));
    assert_eq!(pyarrow_rows(&out), "3 3");

    // Partitioned, in DataFusion's own syntax: hive folders, and the partition column reads back.
    let by_region = root.join("by_region");
    let sql = format!("COPY (SELECT n_nationkey, n_regionkey FROM tpch.nation) TO '{}/' STORED AS PARQUET PARTITIONED BY (n_regionkey)", by_region.display());
    assert_eq!(written(&query(&mut c, &sql).await?), 25);
    assert!(
        by_region.join("n_regionkey=3").is_dir(),
        "hive partition folders"
    );
    let back = query(
        &mut c,
        "SELECT count(*) FROM lake.by_region WHERE n_regionkey = '3'",
    )
    .await?;
    assert_eq!(int(&back, 0), 5);

    // CREATE TABLE AS from a join, spread over the workers (the plan shows the write tasks).
    let select = "SELECT o_orderkey, o_totalprice FROM tpch.orders JOIN tpch.customer ON o_custkey = c_custkey WHERE c_mktsegment = 'BUILDING'";
    let expected = int(
        &query(
            &mut c,
            &format!("SELECT count(*), sum(o_orderkey) FROM ({select})"),
        )
        .await?,
        0,
    );
    let plan = strings(
        &query(
            &mut c,
            &format!("EXPLAIN CREATE TABLE lake.building AS {select}"),
        )
        .await?,
        "plan",
    )
    .join("\n");
    assert!(
        plan.contains("CommitExec") && plan.contains("WriteFilesExec"),
        "{plan}"
    );
    let created = query(&mut c, &format!("CREATE TABLE lake.building AS {select}")).await?;
    assert_eq!(written(&created) as i64, expected);
    let back = query(&mut c, "SELECT count(*) FROM lake.building").await?;
    assert_eq!(int(&back, 0), expected);
    let again = query_error(&mut c, &format!("CREATE TABLE lake.building AS {select}")).await;
    assert!(again.contains("already exists"), "{again}");

    // A folder someone else made (seen by the next listing, after the next write).
    std::fs::create_dir_all(root.join("manual"))?;
    std::fs::copy(
        files_with(&out, ".parquet")[0].clone(),
        root.join("manual").join("m.parquet"),
    )?;

    // INSERT … SELECT and INSERT … VALUES add new files; the old rows stay.
    let more = query(&mut c, "INSERT INTO lake.building SELECT o_orderkey, o_totalprice FROM tpch.orders WHERE o_orderkey <= 3").await?;
    assert_eq!(written(&more), 3);
    assert_eq!(
        written(
            &query(
                &mut c,
                "INSERT INTO lake.building VALUES (-1, 1.5), (-2, 2.5)"
            )
            .await?
        ),
        2
    );
    assert_eq!(
        int(
            &query(&mut c, "SELECT count(*) FROM lake.building").await?,
            0
        ),
        expected + 5
    );

    // Nothing is left in staging, and system.queries has what each write wrote.
    assert!(
        files_with(&root, ".quiver-staging").is_empty(),
        "{:?}",
        files_with(&root, ".quiver-staging")
    );
    let log = query(&mut c, "SELECT rows_written FROM quiver.system.queries WHERE sql LIKE 'INSERT INTO lake.building VALUES%'").await?;
    assert_eq!(int(&log, 0), 2);

    // Refusals that say why.
    let ro = query_error(&mut c, "INSERT INTO tpch.nation SELECT * FROM tpch.nation").await;
    assert!(
        ro.contains("read-only") && ro.contains("writable = true"),
        "{ro}"
    );
    let outside = query_error(
        &mut c,
        &format!(
            "COPY (SELECT 1) TO '{}/elsewhere/' (FORMAT parquet)",
            dir.path().display()
        ),
    )
    .await;
    assert!(
        outside.contains("not under a writable files source")
            && outside.contains("writable locations"),
        "{outside}"
    );
    let relative = query_error(&mut c, "COPY (SELECT 1) TO 'out/' (FORMAT parquet)").await;
    assert!(relative.contains("absolute path"), "{relative}");
    let bad_option = query_error(
        &mut c,
        &format!("COPY (SELECT 1) TO '{}/x/' (FORMAT)", root.display()),
    )
    .await;
    assert!(bad_option.contains("FORMAT"), "{bad_option}");

    // DROP TABLE removes what Quiver created, and leaves alone what it did not.
    let manual = query_error(&mut c, "DROP TABLE lake.manual").await;
    assert!(manual.contains("not created by Quiver"), "{manual}");
    query(&mut c, "DROP TABLE lake.building").await?;
    assert!(!root.join("building").exists());
    let gone = query_error(&mut c, "SELECT count(*) FROM lake.building").await;
    assert!(gone.contains("building"), "{gone}");
    assert!(root.join("manual").join("m.parquet").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_write_publishes_nothing_and_a_restart_clears_staging() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("lake");
    std::fs::create_dir_all(&root)?;
    let config = format!(
        "[server]\nquery_timeout_secs = 1.5\n{}{}",
        tpch_source(),
        lake(&root)
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    // Long enough to be cut off by the timeout while the tasks write.
    let slow = "SELECT a.l_orderkey, b.l_comment FROM tpch.lineitem a JOIN tpch.lineitem b ON a.l_suppkey = b.l_suppkey";
    let err = query_error(
        &mut c,
        &format!(
            "COPY ({slow}) TO '{}/slow/' (FORMAT parquet)",
            root.display()
        ),
    )
    .await;
    assert!(
        err.to_lowercase().contains("timeout") || err.contains("cancel"),
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !files_with(&root, ".quiver-staging").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        files_with(&root, ".quiver-staging").is_empty(),
        "staged files remain: {:?}",
        files_with(&root, ".quiver-staging")
    );
    assert!(
        !root.join("slow").exists(),
        "a cut-off COPY published nothing"
    );
    drop(c);
    drop(server);

    // What a killed coordinator staged is removed when the next one starts.
    let leftover = root
        .join(".quiver-staging")
        .join("dead-statement")
        .join("task-0-x");
    std::fs::create_dir_all(&leftover)?;
    std::fs::write(leftover.join("part.parquet"), b"half")?;
    let server = start_coordinator(&config)?;
    assert!(!root.join(".quiver-staging").join("dead-statement").exists());
    let mut c = client(&server.addr).await?;
    let ok = query(
        &mut c,
        &format!("COPY (SELECT 1 AS one) TO '{}/one.parquet'", root.display()),
    )
    .await?;
    assert_eq!(written(&ok), 1);
    assert!(
        root.join("one.parquet").is_file(),
        "a single-file target is one file"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_into_postgres_and_mariadb_are_all_or_nothing() -> anyhow::Result<()> {
    let _db = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    psql(
        "DROP SCHEMA IF EXISTS t_write CASCADE; CREATE SCHEMA t_write;
         CREATE TABLE t_write.items (l_orderkey bigint, l_quantity numeric(15,2), l_shipdate date, l_comment varchar(44));
         CREATE TABLE t_write.small (id int2, name varchar(3));",
    );
    my::sql(
        "DROP TABLE IF EXISTS w_items; DROP TABLE IF EXISTS w_nations;
         CREATE TABLE w_items (l_orderkey BIGINT, l_quantity DECIMAL(15,2), l_shipdate DATE, l_comment VARCHAR(44));",
    );
    let config = format!(
        "{}{}writable = true\n{}writable = true\n",
        tpch_source(),
        pg::source("pgw", "t_write"),
        my::source("myw")
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let mut c = client(&server.addr).await?;
    let select = "SELECT l_orderkey, l_quantity, l_shipdate, l_comment FROM tpch.lineitem WHERE l_orderkey < 2000";
    let expected = query(
        &mut c,
        &format!("SELECT count(*), sum(l_orderkey), sum(l_quantity) FROM ({select})"),
    )
    .await?;
    let (rows, keys) = (int(&expected, 0), int(&expected, 1));
    let quantity = arrow::util::display::array_value_to_string(expected[0].column(2), 0)?;

    // PostgreSQL: one binary COPY in one transaction.
    assert_eq!(
        written(&query(&mut c, &format!("INSERT INTO pgw.items {select}")).await?) as i64,
        rows
    );
    let pg_side = psql(
        "SELECT count(*) || ',' || sum(l_orderkey) || ',' || sum(l_quantity) FROM t_write.items",
    );
    assert_eq!(pg_side.trim(), format!("{rows},{keys},{quantity}"));

    // MariaDB: batched INSERTs in one transaction.
    assert_eq!(
        written(&query(&mut c, &format!("INSERT INTO myw.w_items {select}")).await?) as i64,
        rows
    );
    let my_side =
        my::sql("SELECT CONCAT(count(*), ',', sum(l_orderkey), ',', sum(l_quantity)) FROM w_items");
    assert_eq!(my_side.trim(), format!("{rows},{keys},{quantity}"));

    // A value that does not fit is an error naming the column; the table is unchanged.
    psql("INSERT INTO t_write.small VALUES (1, 'a')");
    let overflow = query_error(
        &mut c,
        "INSERT INTO pgw.small VALUES (2, 'b'), (70000, 'c')",
    )
    .await;
    assert!(
        overflow.contains("column id") && overflow.contains("row 2") && overflow.contains("70000"),
        "{overflow}"
    );
    let too_long = query_error(&mut c, "INSERT INTO pgw.small VALUES (3, 'abcd')").await;
    assert!(
        too_long.contains("character varying(3)") && too_long.contains("name"),
        "{too_long}"
    );
    assert_eq!(psql("SELECT count(*) FROM t_write.small").trim(), "1");
    // INSERT OVERWRITE empties the table in the same transaction.
    assert_eq!(
        written(
            &query(
                &mut c,
                "INSERT OVERWRITE TABLE pgw.small VALUES (5, 'e'), (6, 'f')"
            )
            .await?
        ),
        2
    );
    assert_eq!(
        psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t_write.small").trim(),
        "5,6"
    );

    // CREATE TABLE AS makes the table in the database, and it reads back through Quiver.
    assert_eq!(
        written(
            &query(
                &mut c,
                "CREATE TABLE pgw.nations AS SELECT n_nationkey, n_name FROM tpch.nation"
            )
            .await?
        ),
        25
    );
    assert_eq!(psql("SELECT count(*) FROM t_write.nations").trim(), "25");
    assert_eq!(
        int(&query(&mut c, "SELECT count(*) FROM pgw.nations").await?, 0),
        25
    );
    assert_eq!(
        written(
            &query(
                &mut c,
                "CREATE TABLE myw.w_nations AS SELECT n_nationkey, n_name FROM tpch.nation"
            )
            .await?
        ),
        25
    );
    assert_eq!(my::sql("SELECT count(*) FROM w_nations").trim(), "25");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_ingest_creates_appends_and_replaces() -> anyhow::Result<()> {
    let _db = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    psql("DROP SCHEMA IF EXISTS t_ingest CASCADE; CREATE SCHEMA t_ingest;");
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("lake");
    std::fs::create_dir_all(&root)?;
    let config = format!(
        "{}{}{}writable = true\n",
        tpch_source(),
        lake(&root),
        pg::source("pgi", "t_ingest")
    );
    let server = start_coordinator_with_env(&config, &ENV)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("adbc_ingest.py");
    for (schema, table) in [("lake", "events"), ("pgi", "events")] {
        let out = Command::new(python())
            .arg(&script)
            .args([&format!("grpc://{}", server.addr), "quiver", schema, table])
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("INGEST OK"),
            "{schema}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(psql("SELECT count(*) FROM t_ingest.events").trim(), "13");
    assert!(files_with(&root, ".quiver-staging").is_empty());
    Ok(())
}

/// A worker SIGKILLed while its write tasks run: the tasks move to the other
/// worker, the table gets every row exactly once, and no staged file remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_write_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("lake");
    std::fs::create_dir_all(&root)?;
    let survivor = start_worker("w1")?;
    let mut victim = start_worker("w2")?;
    let config = format!(
        "[workers]\nmode = \"static\"\naddresses = [{:?}, {:?}]\nhealth_interval_secs = 0.5\n{}{}",
        survivor.addr,
        victim.addr,
        tpch_source(),
        lake(&root)
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    // Both workers must be ready, or the plan puts every write task on the survivor.
    let deadline = Instant::now() + Duration::from_secs(30);
    while int(
        &query(
            &mut c,
            "SELECT count(*) FROM system.workers WHERE state = 'ready'",
        )
        .await?,
        0,
    ) < 2
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the two workers never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected = query(
        &mut c,
        "SELECT count(*), sum(l_orderkey) FROM tpch.lineitem",
    )
    .await?;
    // Four times lineitem: long enough for the victim to be writing when it dies.
    let all = "SELECT * FROM tpch.lineitem UNION ALL SELECT * FROM tpch.lineitem UNION ALL SELECT * FROM tpch.lineitem UNION ALL SELECT * FROM tpch.lineitem";
    // Now and then the victim's tasks are over before a poll sees one running: that
    // COPY must still be right, and the next attempt kills the victim mid-write.
    let mut attempt = 0;
    let (handle, folder) = loop {
        attempt += 1;
        let folder = format!("copied{attempt}");
        let sql = format!(
            "COPY ({all}) TO '{}/{folder}/' (FORMAT parquet)",
            root.display()
        );
        let mut running = client(&server.addr).await?;
        let handle = tokio::spawn(async move { query(&mut running, &sql).await });
        let deadline = Instant::now() + Duration::from_secs(60);
        while running_fragments(&victim.addr).await.unwrap_or(0) == 0 && !handle.is_finished() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the victim never ran a write task"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !handle.is_finished() {
            break (handle, folder);
        }
        anyhow::ensure!(
            attempt < 3,
            "three COPYs ended before the victim was seen writing"
        );
        assert_eq!(written(&handle.await??) as i64, 4 * int(&expected, 0));
    };
    victim.kill();
    let copied = handle.await??;
    assert_eq!(written(&copied) as i64, 4 * int(&expected, 0));
    let back = query(
        &mut c,
        &format!("SELECT count(*), sum(l_orderkey) FROM lake.{folder}"),
    )
    .await?;
    assert_eq!(
        (int(&back, 0), int(&back, 1)),
        (4 * int(&expected, 0), 4 * int(&expected, 1))
    );
    assert!(
        files_with(&root, ".quiver-staging").is_empty(),
        "{:?}",
        files_with(&root, ".quiver-staging")
    );
    Ok(())
}

/// Sessions racing to create one table (dbt runs models in parallel threads): one
/// wins, the others get 42P07, and the table holds one copy. A table created from
/// no rows keeps its columns: it reads as empty and takes inserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_table_is_atomic_and_an_empty_one_keeps_its_columns() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("lake");
    std::fs::create_dir_all(&root)?;
    let config = format!(
        "[server]\npostgres_listen = \"127.0.0.1:0\"\n{}{}",
        tpch_source(),
        lake(&root)
    );
    let server = start_coordinator(&config)?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    for round in 0..3 {
        let table = format!("lake.same_{round}");
        let mut tasks = vec![];
        for _ in 0..4 {
            let (url, sql) = (
                url.clone(),
                format!("CREATE TABLE {table} AS SELECT * FROM tpch.nation"),
            );
            tasks.push(tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                Ok::<_, tokio_postgres::Error>(c.simple_query(&sql).await.map(|_| ()))
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await?? {
                Ok(()) => won += 1,
                Err(e) => {
                    let code = e.as_db_error().map(|d| d.code().clone());
                    assert_eq!(
                        code,
                        Some(tokio_postgres::error::SqlState::DUPLICATE_TABLE),
                        "round {round}: {e:?}"
                    );
                }
            }
        }
        assert_eq!(
            won, 1,
            "round {round}: exactly one session creates the table"
        );
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        assert_eq!(n, 25, "round {round}: one copy of nation");
    }
    assert!(
        files_with(&root, "quiver-create").is_empty(),
        "no claim file is left behind"
    );

    // COPY to a file is DataFusion's statement: the PostgreSQL port says where to
    // send it, with or without an option list, and writes nothing.
    let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    for sql in [
        format!(
            "COPY (SELECT 1 AS a) TO '{}/by_a/' (FORMAT parquet, PARTITION_BY (a))",
            root.display()
        ),
        format!("COPY tpch.nation TO '{}/nation.csv'", root.display()),
    ] {
        let e = pg.simple_query(&sql).await.expect_err("refused");
        let db = e
            .as_db_error()
            .map(|d| (d.code().code().to_string(), d.message().to_string()));
        assert!(
            matches!(&db, Some((code, message)) if code == "0A000" && message.contains("Flight SQL")),
            "{sql}: {e:?}"
        );
    }
    assert!(!root.join("by_a").exists() && !root.join("nation.csv").exists());

    let mut c = client(&server.addr).await?;
    let created = query(&mut c, "CREATE TABLE lake.nothing AS SELECT n_nationkey, n_name FROM tpch.nation WHERE n_nationkey < 0").await?;
    assert_eq!(written(&created), 0);
    let back = query(&mut c, "SELECT count(*) FROM lake.nothing").await?;
    assert_eq!(int(&back, 0), 0);
    let cols = strings(&query(&mut c, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'lake' AND table_name = 'nothing' ORDER BY ordinal_position").await?, "column_name");
    assert_eq!(cols, ["n_nationkey", "n_name"]);
    let inserted = query(
        &mut c,
        "INSERT INTO lake.nothing SELECT n_nationkey, n_name FROM tpch.nation",
    )
    .await?;
    assert_eq!(written(&inserted), 25);
    let back = query(&mut c, "SELECT count(*) FROM lake.nothing").await?;
    assert_eq!(int(&back, 0), 25);
    Ok(())
}
