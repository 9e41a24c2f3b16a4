//! Every SQLSTATE of docs/clients.md's table, as a real PostgreSQL client
//! (tokio-postgres) receives it: the table is read from the docs, so a code
//! added there without a statement that produces it here fails this test.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use quiver_tests::*;
use tokio_postgres::NoTls;

/// Codes whose own tests produce them through a real client.
const ELSEWHERE: &[(&str, &str)] = &[
    (
        "42501",
        "pgwire.rs errors_carry_sqlstates (an access rule denies a table)",
    ),
    (
        "28P01",
        "pgwire.rs logins_use_scram_or_the_password_and_refuse_wrong_ones",
    ),
    (
        "53300",
        "limits.rs (connections over server.max_connections)",
    ),
    (
        "57014",
        "pgwire.rs (psql's and tokio-postgres' cancel requests)",
    ),
    (
        "XX000",
        "an internal error has no statement that makes it on purpose",
    ),
];

/// The codes in the docs' SQLSTATE table.
fn documented() -> BTreeSet<String> {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/clients.md"),
    )
    .expect("docs/clients.md");
    let table = docs
        .split("| SQLSTATE | when |")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("the SQLSTATE table");
    let mut codes = BTreeSet::new();
    for line in table.lines() {
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        for part in first_cell.split('`').skip(1).step_by(2) {
            if part.len() == 5 {
                codes.insert(part.to_string());
            }
        }
    }
    codes
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn sqlstate(c: &tokio_postgres::Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(_) => format!("no error from {sql}"),
        Err(e) => e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| format!("{e:?}")),
    }
}

const LONG_QUERY: &str = "SELECT count(*) FROM tpch.lineitem \
    WHERE levenshtein(l_comment || l_comment || l_comment, reverse(l_comment) || l_comment) > 40";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_sqlstate_reaches_a_postgresql_client() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake)?;
    // A worker process with a small memory limit per query, a source nobody
    // listens for, one query running at a time and none waiting.
    let worker = start_worker("w1")?;
    let config = format!(
        "[server]\npostgres_listen = \"127.0.0.1:0\"\ndefault_schema = \"tpch\"\nmax_running_queries = 1\nmax_queued_queries = 0\n\
         [workers]\nmode = \"static\"\naddresses = [{:?}]\nsingle_stage_max_bytes = 0\nquery_memory_limit = \"8MiB\"\nmax_fragments_per_worker = 2\n\
         {}[[source]]\nname = \"lake\"\nkind = \"files\"\nlocation = {:?}\nwritable = true\n\
         [[source]]\nname = \"gone\"\nkind = \"postgres\"\nurl = \"postgres://nobody@127.0.0.1:1/nothing\"\n",
        worker.addr,
        tpch_source(),
        lake.display().to_string()
    );
    let server = start_coordinator(&config)?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    let c = connect(&url).await?;
    c.simple_query("CREATE TABLE lake.t AS SELECT 1 AS x")
        .await?;
    c.simple_query("CREATE SCHEMA marts").await?;
    c.simple_query("CREATE VIEW marts.v AS SELECT 1 AS x")
        .await?;

    let statements: &[(&str, &str)] = &[
        ("42601", "SELECT (1 + FROM nation"),
        ("42P01", "SELECT * FROM no_such_table"),
        ("42703", "SELECT nope FROM nation"),
        (
            "42702",
            "SELECT n_name FROM nation a JOIN nation b ON a.n_nationkey = b.n_nationkey",
        ),
        ("42883", "SELECT abs('x')"),
        ("42704", "SHOW no_such_setting"),
        ("42804", "SELECT * FROM nation WHERE 1"),
        ("42P07", "CREATE TABLE lake.t AS SELECT 2 AS x"),
        ("42P06", "CREATE SCHEMA lake"),
        ("2BP01", "DROP SCHEMA marts"),
        ("22012", "SELECT 1/0"),
        ("22003", "SELECT CAST(100000 AS SMALLINT)"),
        ("22P02", "SELECT CAST('abc' AS INT)"),
        ("22007", "SELECT CAST('nope' AS DATE)"),
        ("22023", "SELECT date_trunc('fortnight', DATE '2024-01-01')"),
        ("0A000", "UPDATE nation SET n_name = 'x'"),
        ("08006", "SELECT * FROM gone.anything"),
        ("42000", "SELECT 1 UNION SELECT 1, 2"),
        (
            "53200",
            "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_comment = b.l_comment",
        ),
    ];
    let mut seen = BTreeSet::new();
    for (code, sql) in statements {
        assert_eq!(&sqlstate(&c, sql).await, code, "{sql}");
        seen.insert(code.to_string());
    }

    // 53000: one query runs, none may wait, so a second is refused at once.
    let long = {
        let url = url.clone();
        tokio::spawn(async move {
            let c = connect(&url).await?;
            anyhow::Ok(c.simple_query(LONG_QUERY).await.is_ok())
        })
    };
    let started = Instant::now();
    loop {
        let running = c
            .query_one(
                "SELECT count(*) FROM quiver.system.queries WHERE state = 'running' AND sql LIKE '%levenshtein%' AND sql NOT LIKE '%system.queries%'",
                &[],
            )
            .await;
        // The query about queries itself may be the one refused while the long one runs.
        if matches!(running, Ok(ref r) if r.get::<_, i64>(0) > 0) || running.is_err() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the long query never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sqlstate(&c, "SELECT count(*) FROM nation").await, "53000");
    seen.insert("53000".into());
    assert!(long.await??, "the long query ran to its end");

    // 28000: a server that takes only TLS turns a plaintext login away.
    let certs = tempfile::tempdir()?;
    make_certs(certs.path())?;
    let tls = start_coordinator(&format!(
        "[server]\npostgres_listen = \"127.0.0.1:0\"\n{}{}",
        tls_section(certs.path()),
        tpch_source()
    ))?;
    let refused = tokio_postgres::connect(
        &format!(
            "postgres://quiver@{}/quiver?sslmode=disable",
            tls.postgres_addr()
        ),
        NoTls,
    )
    .await
    .err()
    .and_then(|e| e.as_db_error().map(|d| d.code().code().to_string()));
    assert_eq!(refused.as_deref(), Some("28000"));
    seen.insert("28000".into());

    // The connection still serves, and the docs' table is all covered.
    assert_eq!(
        c.query_one("SELECT count(*) FROM nation", &[])
            .await?
            .get::<_, i64>(0),
        25
    );
    let elsewhere: BTreeSet<String> = ELSEWHERE.iter().map(|(c, _)| c.to_string()).collect();
    let missing: Vec<_> = documented()
        .into_iter()
        .filter(|c| !seen.contains(c) && !elsewhere.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not produced: {missing:?}"
    );
    Ok(())
}
