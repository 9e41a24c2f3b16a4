//! Admission control and input limits against a real coordinator: queries over
//! `max_running_queries` queue and then run, a full queue is refused, oversized
//! statements are refused before parsing, and long flat expressions (what BI tools
//! generate) return the right answer instead of overflowing a stack.

use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use arrow::record_batch::RecordBatch;
use quiver_tests::*;

const LONG_QUERY: &str = "SELECT count(*) FROM quiver.tpch.lineitem \
    WHERE levenshtein(l_comment || l_comment || l_comment, reverse(l_comment) || l_comment) > 40";

fn first_i64(batches: &[RecordBatch]) -> i64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(0))
        .expect("an integer")
}

async fn states(addr: &str) -> anyhow::Result<Vec<String>> {
    let mut c = client(addr).await?;
    let rows = query(&mut c, "SELECT state FROM system.queries WHERE sql LIKE '%levenshtein%' AND sql NOT LIKE '%system.queries%'").await?;
    Ok(strings(&rows, "state"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_limit_queues_then_runs_and_a_full_queue_refuses() -> anyhow::Result<()> {
    let config = format!(
        "[server]\nmax_running_queries = 1\nmax_queued_queries = 1\nqueue_timeout_secs = 600\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let addr = server.addr.clone();
    let spawn = |addr: String| {
        tokio::spawn(async move {
            let mut c = client(&addr).await?;
            anyhow::Ok(first_i64(&query(&mut c, LONG_QUERY).await?))
        })
    };
    let first = spawn(addr.clone());
    let wait_for = |wanted: &'static [&'static str]| {
        let addr = addr.clone();
        async move {
            let started = Instant::now();
            loop {
                let s = states(&addr).await?;
                if wanted.iter().all(|w| {
                    s.iter().filter(|x| x == w).count() >= wanted.iter().filter(|v| *v == w).count()
                }) {
                    return anyhow::Ok(s);
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(60),
                    "states never became {wanted:?}: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(&["running"]).await?;
    let second = spawn(addr.clone());
    let seen = wait_for(&["running", "queued"]).await?;
    assert!(
        !first.is_finished(),
        "the first query ended before the second queued; make it slower ({seen:?})"
    );

    // One running, one queued: a third is refused at once, with the limit named.
    let refused_at = Instant::now();
    let mut c = client(&addr).await?;
    let err = query_error(&mut c, LONG_QUERY).await;
    assert!(
        err.contains("too many queries") && err.contains("server.max_queued_queries"),
        "{err}"
    );
    assert!(
        refused_at.elapsed() < Duration::from_secs(10),
        "refusal took {:?}",
        refused_at.elapsed()
    );

    // Nothing is lost: both queries end with the right answer.
    let (a, b) = (first.await??, second.await??);
    assert!(a > 0);
    assert_eq!(a, b);
    let s = states(&addr).await?;
    assert_eq!(s.iter().filter(|x| *x == "finished").count(), 2, "{s:?}");
    assert_eq!(s.iter().filter(|x| *x == "refused").count(), 1, "{s:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_statements_are_refused_before_parsing() -> anyhow::Result<()> {
    let config = format!(
        "[server]\nmax_statement_bytes = \"4KiB\"\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    let big = format!("SELECT 1 /* {} */", "x".repeat(5000));
    let err = query_error(&mut c, &big).await;
    assert!(
        err.contains("over the limit of 4096 bytes (server.max_statement_bytes)"),
        "{err}"
    );
    assert_eq!(row_count(&query(&mut c, "SELECT 1").await?), 1);
    Ok(())
}

/// The shapes that used to overflow the coordinator's stack, each well past where
/// it broke, return the right answer; the server keeps serving after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_flat_expressions_return_the_right_answer() -> anyhow::Result<()> {
    let server = start_coordinator(&tpch_source())?;
    let mut c = client(&server.addr).await?;

    // 10,000 OR-ed equalities, as BI tools write an IN list.
    let ors = (0..10_000)
        .map(|i| format!("l_orderkey = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let n = first_i64(
        &query(
            &mut c,
            &format!("SELECT count(*) FROM lineitem WHERE {ors}"),
        )
        .await?,
    );
    let reference = reference_context().await?;
    let expected = reference
        .sql("SELECT count(*) FROM lineitem WHERE l_orderkey < 10000")
        .await?
        .collect()
        .await?;
    assert_eq!(n, first_i64(&expected));

    // A long sum: 1 + 1 + ... (3,000 terms), constant and over a column.
    let ones = vec!["1"; 3000].join(" + ");
    assert_eq!(
        first_i64(&query(&mut c, &format!("SELECT {ones}")).await?),
        3000
    );
    let keys = vec!["n_nationkey"; 2000].join(" + ");
    let sum = first_i64(&query(&mut c, &format!("SELECT sum({keys}) FROM nation")).await?);
    assert_eq!(sum, 2000 * (0..25).sum::<i64>());

    // AND chains, a long CASE and a long IN list.
    // (Planning cost grows faster than linearly with the number of AND-ed terms, in
    // DataFusion's filter pushdown and Parquet pruning: 2,500 keeps this test short.)
    let ands = (0..2500)
        .map(|i| format!("n_nationkey <> {}", -i - 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    assert_eq!(
        first_i64(&query(&mut c, &format!("SELECT count(*) FROM nation WHERE {ands}")).await?),
        25
    );
    let whens = (0..3000)
        .map(|i| format!("WHEN n_nationkey = {i} THEN {}", i * 2))
        .collect::<Vec<_>>()
        .join(" ");
    let doubled = first_i64(
        &query(
            &mut c,
            &format!("SELECT sum(CASE {whens} ELSE 0 END) FROM nation"),
        )
        .await?,
    );
    assert_eq!(doubled, 2 * (0..25).sum::<i64>());
    let list = (0..20_000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let n = first_i64(
        &query(
            &mut c,
            &format!("SELECT count(*) FROM orders WHERE o_orderkey IN ({list})"),
        )
        .await?,
    );
    let expected = reference
        .sql("SELECT count(*) FROM orders WHERE o_orderkey < 20000")
        .await?
        .collect()
        .await?;
    assert_eq!(n, first_i64(&expected));
    let concat = vec!["'a'"; 3000].join(" || ");
    let rows = query(&mut c, &format!("SELECT length({concat})")).await?;
    assert_eq!(
        arrow::compute::cast(rows[0].column(0), &arrow::datatypes::DataType::Int64)?
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.value(0)),
        Some(3000)
    );
    Ok(())
}

/// Genuinely deep nesting beyond the documented limit is a clear error, and the
/// server survives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_a_clear_error() -> anyhow::Result<()> {
    let server = start_coordinator(&tpch_source())?;
    let mut c = client(&server.addr).await?;
    for depth in [12, 300, 5000, 100_000] {
        // Subqueries are limited sooner: planning time doubles with each level.
        let subqueries = format!("SELECT {}1{}", "(SELECT ".repeat(depth), ")".repeat(depth));
        let err = query_error(&mut c, &subqueries).await;
        assert!(
            err.contains("nested too deeply") || err.contains("recursion limit"),
            "depth {depth}: {err}"
        );
    }
    for depth in [300, 5000, 100_000] {
        let parens = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
        let err = query_error(&mut c, &parens).await;
        assert!(err.contains("nested too deeply"), "depth {depth}: {err}");
    }
    let ten = format!("SELECT {}1{}", "(SELECT ".repeat(10), ")".repeat(10));
    assert_eq!(first_i64(&query(&mut c, &ten).await?), 1);
    // Moderate nesting works.
    let parens = format!("SELECT {}1{}", "(".repeat(40), ")".repeat(40));
    assert_eq!(first_i64(&query(&mut c, &parens).await?), 1);
    assert_eq!(row_count(&query(&mut c, "SELECT * FROM region").await?), 5);
    Ok(())
}

/// Raises this test process' open-files limit, so it can hold thousands of sockets.
fn raise_own_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

async fn pg_count(pg: &str) -> anyhow::Result<i64> {
    let (c, conn) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_postgres::connect(
            &format!("postgres://quiver@{pg}/quiver"),
            tokio_postgres::NoTls,
        ),
    )
    .await??;
    tokio::spawn(conn);
    Ok(c.query_one("SELECT count(*) FROM nation", &[])
        .await?
        .get(0))
}

fn http_count(http: &str) -> anyhow::Result<(u16, String)> {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "-d",
            "SELECT count(*) AS n FROM nation",
            &format!("http://{http}/v1/sql"),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// 2,000 sockets that connect and say nothing, held on the PostgreSQL port, do
/// not stop any door, that one included; a door over `max_connections` refuses
/// clearly (53300, HTTP 503), and silent connections are closed after the
/// handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_starve_the_doors() -> anyhow::Result<()> {
    raise_own_fd_limit();
    let doors = "[server]\npostgres_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n";
    let server = start_coordinator(&format!("{doors}{}", tpch_source()))?;
    let (pg, http) = (server.postgres_addr(), server.http_addr());
    let mut silent = Vec::with_capacity(2000);
    for _ in 0..2000 {
        silent.push(tokio::net::TcpStream::connect(&pg).await?);
    }
    assert_eq!(
        pg_count(&pg).await?,
        25,
        "the PostgreSQL port under 2,000 idle sockets"
    );
    let (code, body) = http_count(&http)?;
    assert_eq!(code, 200, "{body}");
    let mut flight = client(&server.addr).await?;
    assert_eq!(
        first_i64(&query(&mut flight, "SELECT count(*) FROM nation").await?),
        25
    );
    drop(silent);

    // A small door: the 21st connection is refused with a reason, until the silent ones time out.
    let small = format!(
        "{doors}max_connections = 20\nhandshake_timeout_secs = 2\n{}",
        tpch_source()
    );
    let server = start_coordinator(&small)?;
    let (pg, http) = (server.postgres_addr(), server.http_addr());
    let mut silent = vec![];
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(&pg).await?);
        silent.push(tokio::net::TcpStream::connect(&http).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = pg_count(&pg)
        .await
        .expect_err("a full PostgreSQL port refuses");
    let code = refused
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .map(|d| d.code().code().to_string());
    assert_eq!(code.as_deref(), Some("53300"), "{refused:#}");
    let (code, body) = http_count(&http)?;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("too many connections"), "{body}");
    // The silent ones are closed after 2 s; the doors serve again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pg_count(&pg).await?, 25);
    assert_eq!(http_count(&http)?.0, 200);
    drop(silent);
    Ok(())
}
