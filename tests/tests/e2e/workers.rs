//! Static pool of `quiver worker` processes: fragments run on them, and a killed
//! worker is planned around.

use quiver_tests::compare::assert_same_rows;
use quiver_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_run_on_worker_processes_and_a_dead_worker_is_avoided() -> anyhow::Result<()> {
    let mut w1 = start_worker("w1")?;
    let w2 = start_worker("w2")?;
    let config = format!(
        "[workers]\nmode = \"static\"\nsingle_stage_max_bytes = 0\naddresses = [{:?}, {:?}]\nhealth_interval_secs = 0.5\n{}",
        w1.addr,
        w2.addr,
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    let reference = reference_context().await?;
    let sql = tpch_query(1);
    let expected = reference.sql(&sql).await?.collect().await?;

    assert_same_rows(
        &query(&mut c, &sql).await?,
        &expected,
        false,
        "q1 on two workers",
    );
    assert!(
        completed_fragments(&w1.addr).await? > 0,
        "w1 ran no fragment"
    );
    assert!(
        completed_fragments(&w2.addr).await? > 0,
        "w2 ran no fragment"
    );

    // Killed right before a query: the coordinator may not have noticed yet, so the
    // fragments assigned to w1 must move to w2 when w1 refuses the connection.
    w1.kill();
    let before = completed_fragments(&w2.addr).await?;
    assert_same_rows(
        &query(&mut c, &sql).await?,
        &expected,
        false,
        "q1 after w1 died",
    );
    assert!(completed_fragments(&w2.addr).await? > before);

    // Once the health check has seen it, plans no longer mention w1.
    let unhealthy =
        "SELECT count(*) FROM system.workers WHERE id = 'worker-1' AND state = 'unhealthy'";
    eventually(
        std::time::Duration::from_secs(10),
        "worker-1 seen unhealthy",
        || {
            let addr = server.addr.clone();
            async move {
                let mut c = client(&addr).await?;
                Ok(strings(&query(&mut c, unhealthy).await?, "count(*)") == ["1"])
            }
        },
    )
    .await?;
    let plan = arrow::util::pretty::pretty_format_batches(
        &query(&mut c, &format!("EXPLAIN {sql}")).await?,
    )?
    .to_string();
    assert!(
        plan.contains("@worker-2") && !plan.contains("@worker-1"),
        "{plan}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_live_worker_is_a_clear_error() -> anyhow::Result<()> {
    let mut w = start_worker("lonely")?;
    let config = format!(
        "[workers]\nmode = \"static\"\nsingle_stage_max_bytes = 0\naddresses = [{:?}]\n{}",
        w.addr,
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    w.kill();
    let ready = "SELECT count(*) FROM system.workers WHERE state = 'ready'";
    eventually(
        std::time::Duration::from_secs(15),
        "the killed worker out of planning",
        || {
            let addr = server.addr.clone();
            async move {
                let mut c = client(&addr).await?;
                Ok(strings(&query(&mut c, ready).await?, "count(*)") == ["0"])
            }
        },
    )
    .await?;
    let err = query_error(&mut c, "SELECT sum(l_quantity) FROM quiver.tpch.lineitem").await;
    assert!(err.contains("no healthy workers"), "{err}");
    // Queries that need no worker still run.
    assert_eq!(row_count(&query(&mut c, "SELECT 1").await?), 1);
    Ok(())
}

/// `workers.mode = "dns"` (what the Helm chart uses): the workers are the addresses
/// a name resolves to; here `localhost` and the port of a `quiver worker` process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_pool_finds_its_workers_by_name() -> anyhow::Result<()> {
    let worker = start_worker("dns-worker")?;
    let port = worker
        .addr
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let config = format!(
        "[workers]\nmode = \"dns\"\nservice = \"localhost\"\nport = {port}\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    let listed = arrow::util::pretty::pretty_format_batches(
        &query(
            &mut c,
            "SELECT id, state FROM system.workers WHERE state = 'ready'",
        )
        .await?,
    )?
    .to_string();
    assert!(listed.contains(&format!("127.0.0.1:{port}")), "{listed}");
    let before = completed_fragments(&worker.addr).await?;
    assert_eq!(
        row_count(&query(&mut c, "SELECT * FROM quiver.tpch.nation").await?),
        25
    );
    assert!(
        completed_fragments(&worker.addr).await? > before,
        "the resolved worker ran no fragment"
    );
    Ok(())
}

/// A client that gives up on a long query leaves nothing running on the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_query_stops_its_fragments_within_two_seconds() -> anyhow::Result<()> {
    let worker = start_worker("cancel-worker")?;
    let config = format!(
        "[workers]\nmode = \"static\"\nsingle_stage_max_bytes = 0\naddresses = [{:?}]\n{}",
        worker.addr,
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let addr = server.addr.clone();
    let long = tokio::spawn(async move {
        let mut c = client(&addr).await?;
        query(
            &mut c,
            "SELECT count(*) FROM quiver.tpch.lineitem l1 WHERE levenshtein(l_comment || l_comment || l_comment, reverse(l_comment) || l_comment) > 40",
        )
        .await
    });
    // Wait until the fragments run, then drop the client mid-query.
    let started = std::time::Instant::now();
    while running_fragments(&worker.addr).await? == 0 {
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the query never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    anyhow::ensure!(
        !long.is_finished(),
        "the query finished before it could be dropped; make it slower"
    );
    long.abort();
    let dropped = std::time::Instant::now();
    while running_fragments(&worker.addr).await? > 0 {
        anyhow::ensure!(
            dropped.elapsed() < std::time::Duration::from_secs(2),
            "fragments still running 2 s after the client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A `quiver worker` sent SIGTERM mid-query (what Kubernetes does on scale-down)
/// drains: it refuses new fragments, finishes the running ones, the coordinator
/// sees it as draining, the query's answer is right, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sent_sigterm_drains_and_loses_no_query() -> anyhow::Result<()> {
    use arrow::util::pretty::pretty_format_batches;
    let mut w1 = start_worker_with("drain-1", &["--drain-grace-secs", "120"], &[])?;
    let w2 = start_worker("drain-2")?;
    let config = format!(
        "[server]\ntarget_partitions = 4\nhttp_listen = \"127.0.0.1:0\"\n[workers]\nmode = \"static\"\nsingle_stage_max_bytes = 0\naddresses = [{:?}, {:?}]\nhealth_interval_secs = 0.5\n{}",
        w1.addr,
        w2.addr,
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    // Partial aggregates over an expensive filter: each fragment runs for seconds.
    let sql = "SELECT l_returnflag, count(*) AS n FROM quiver.tpch.lineitem \
               WHERE levenshtein(l_comment || l_comment, reverse(l_comment) || l_comment) > 40 \
               GROUP BY l_returnflag ORDER BY l_returnflag";
    let reference = reference_context().await?;
    let expected = reference
        .sql(&sql.replace("quiver.tpch.", ""))
        .await?
        .collect()
        .await?;

    let addr = server.addr.clone();
    let running = tokio::spawn(async move {
        let mut c = client(&addr).await?;
        query(&mut c, sql).await
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while running_fragments(&w1.addr).await? == 0 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "worker 1 never ran a fragment"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let sigterm = std::process::Command::new("kill")
        .args(["-TERM", &w1.child.id().to_string()])
        .status()?;
    assert!(sigterm.success());
    // The coordinator sees it draining while it finishes its fragments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let states = pretty_format_batches(
            &query(&mut c, "SELECT id, state FROM system.workers ORDER BY id").await?,
        )?
        .to_string();
        if states.contains("worker-1 | draining") {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "worker 1 not seen draining: {states}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got = running.await??;
    assert_same_rows(&got, &expected, true, "the query across a draining worker");

    // It exits on its own, cleanly, once nothing of it is needed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = w1.child.try_wait()? {
            break status;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the drained worker did not exit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(status.success(), "drained worker exit: {status:?}");
    // Nothing it ran was cut off: attempts moved elsewhere were only refusals of new work.
    // A refusal that hit a task of a streamed run (placed before the worker began
    // draining) starts the query again with exchange files, and the streamed run's
    // other tasks are cancelled with it, by the coordinator.
    let restarted = metric(&server.http_addr(), "quiver_streamed_restarts_total")? > 0;
    let moved = pretty_format_batches(
        &query(&mut c, "SELECT state, error FROM system.fragments WHERE worker = 'worker-1' AND state <> 'finished'").await?,
    )?
    .to_string();
    for line in moved.lines().skip(3).filter(|l| l.starts_with("| ")) {
        assert!(
            line.contains("draining") || (restarted && line.contains("| cancelled")),
            "a fragment of the draining worker was lost: {moved}"
        );
    }
    // The pool goes on with the other worker.
    assert_same_rows(
        &query(&mut c, sql).await?,
        &expected,
        true,
        "after the drained worker left",
    );
    drop(w2);
    Ok(())
}
