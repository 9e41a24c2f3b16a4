//! Distributed execution over `quiver worker` processes: queries cut into stages
//! whose tasks exchange rows between workers, surviving a killed worker, failing
//! clearly when none is left, and staying inside a memory limit.

use std::time::{Duration, Instant};

use anyhow::Context;
use quiver_tests::compare::assert_same_rows;
use quiver_tests::*;

fn static_config(workers: &[&Process], extra: &str) -> String {
    let addresses: Vec<String> = workers.iter().map(|w| format!("{:?}", w.addr)).collect();
    format!(
        "[server]\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\n[workers]\nmode = \"static\"\nsingle_stage_max_bytes = 0\naddresses = [{}]\nhealth_interval_secs = 0.5\n{extra}\n{}",
        addresses.join(", "),
        tpch_source()
    )
}

fn pretty(batches: &[arrow::record_batch::RecordBatch]) -> anyhow::Result<String> {
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

/// The one string value of a one-row, one-column answer.
fn single_value(batches: &[arrow::record_batch::RecordBatch]) -> String {
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| arrow::util::display::array_value_to_string(b.column(0), 0).unwrap_or_default())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_22_queries_match_with_1_2_and_4_worker_processes() -> anyhow::Result<()> {
    let workers: Vec<Process> = (1..=4)
        .map(|i| start_worker(&format!("w{i}")))
        .collect::<anyhow::Result<_>>()?;
    let reference = reference_context().await?;
    let mut expected = vec![];
    for n in 1..=22 {
        let rows = reference.sql(&tpch_query(n)).await?.collect().await?;
        assert!(
            row_count(&rows) > 0,
            "q{n}: the reference returns no rows, so the comparison proves nothing"
        );
        expected.push(rows);
    }
    // Streamed exchanges (the default) on 1, 2 and 4 workers, then exchange files on 2.
    for (count, mode) in [(1, "stream"), (2, "stream"), (4, "stream"), (2, "files")] {
        let pool: Vec<&Process> = workers.iter().take(count).collect();
        let extra = format!("exchange_mode = \"{mode}\"");
        let server = start_coordinator(&static_config(&pool, &extra))?;
        let mut c = client(&server.addr).await?;
        for n in 1..=22 {
            let actual = query(&mut c, &tpch_query(n))
                .await
                .with_context(|| format!("q{n} on {count} workers, {mode}"))?;
            assert_same_rows(
                &actual,
                &expected[n - 1],
                false,
                &format!("q{n} on {count} workers, {mode}"),
            );
        }
        // Every worker of the pool ran stage tasks.
        let used = query(
            &mut c,
            "SELECT count(DISTINCT worker) FROM system.fragments WHERE state = 'finished'",
        )
        .await?;
        assert_eq!(
            single_value(&used),
            count.to_string(),
            "workers that ran stage tasks with {count} workers"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_joins_and_aggregates_shuffled_between_workers() -> anyhow::Result<()> {
    let w1 = start_worker("w1")?;
    let w2 = start_worker("w2")?;
    let server = start_coordinator(&static_config(&[&w1, &w2], ""))?;
    let mut c = client(&server.addr).await?;
    for n in [3, 5, 9, 18] {
        let plan = pretty(&query(&mut c, &format!("EXPLAIN {}", tpch_query(n))).await?)?;
        let physical = &plan[plan.find("physical_plan").unwrap_or(0)..];
        assert!(
            physical.contains("DistributedQueryExec"),
            "q{n}:\n{physical}"
        );
        assert!(
            physical.contains("exchange=shuffle, output=Hash("),
            "q{n}: no hash shuffle:\n{physical}"
        );
        // Joins and aggregates sit inside stages, reading exchanges, not on the coordinator.
        let stages = &physical[physical.find("StageExec").unwrap_or(physical.len())..];
        assert!(
            stages.contains("HashJoinExec"),
            "q{n}: no join inside a stage:\n{physical}"
        );
        assert!(
            stages.contains("AggregateExec: mode=Partial"),
            "q{n}: no partial aggregate in a stage:\n{physical}"
        );
        assert!(
            stages.contains("ShuffleReadExec"),
            "q{n}: no stage reads another stage:\n{physical}"
        );
        // The coordinator keeps only what is above the fragments streamed from workers.
        let coordinator = &physical[..physical.find("WorkerFragmentsExec").unwrap_or(0)];
        assert!(
            !coordinator.is_empty(),
            "q{n}: no fragments on workers:\n{physical}"
        );
        assert!(
            !coordinator.contains("HashJoinExec") && !coordinator.contains("AggregateExec"),
            "q{n}: work left on the coordinator:\n{physical}"
        );
    }
    // EXPLAIN ANALYZE reports, per task, its worker, rows, bytes, spill and time; both workers took part.
    let analyzed = pretty(&query(&mut c, &format!("EXPLAIN ANALYZE {}", tpch_query(3))).await?)?;
    // q3's hash exchange streamed (the run reached its first row that way), across processes.
    assert!(
        analyzed.contains("DistributedQueryExec: stages=3, exchanges=streamed,"),
        "{analyzed}"
    );
    assert!(analyzed.contains("ran=[t0@worker-"), "{analyzed}");
    assert!(
        analyzed
            .contains("WorkerFragmentsExec: partitions=4, streamed from workers, ran=[p0@worker-"),
        "{analyzed}"
    );
    assert!(
        analyzed.contains("@worker-1 rows=") && analyzed.contains("@worker-2 rows="),
        "{analyzed}"
    );
    assert!(
        analyzed.contains(" bytes=") && analyzed.contains(" spill=") && analyzed.contains(" time="),
        "{analyzed}"
    );
    // system.workers shows each worker process's own CPU time and memory.
    let load = query(
        &mut c,
        "SELECT count(*) FROM system.workers WHERE cpu_secs > 0 AND memory_bytes > 1000000",
    )
    .await?;
    assert_eq!(
        single_value(&load),
        "2",
        "{}",
        pretty(&query(&mut c, "SELECT * FROM system.workers").await?)?
    );
    // system.fragments lists the same tasks.
    let tasks = query(
        &mut c,
        "SELECT count(*) FROM system.fragments WHERE state = 'finished' AND bytes > 0",
    )
    .await?;
    assert!(
        single_value(&tasks).parse::<u64>()? > 4,
        "{}",
        pretty(&tasks)?
    );
    Ok(())
}

/// A worker SIGKILLed after it has finished stage tasks while the query still
/// runs, with streamed exchanges: the streams through it break before the first
/// row, and the query runs again with exchange files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_query_loses_nothing() -> anyhow::Result<()> {
    a_worker_killed_mid_query("stream").await
}

/// The same with exchange files: the killed worker holds exchange output that
/// later stages need, and the scheduler recomputes just that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_query_loses_nothing_with_exchange_files() -> anyhow::Result<()> {
    a_worker_killed_mid_query("files").await
}

async fn a_worker_killed_mid_query(mode: &str) -> anyhow::Result<()> {
    let w1 = start_worker("w1")?;
    let w2 = start_worker("w2")?;
    let mut victim = start_worker("w3")?;
    // No broadcast: at SF0.1 a side of this join is under broadcast_join_max_bytes.
    // No dynamic filter: the probe stage would wait for the build stage, which can
    // leave the victim with nothing still needed when it is killed (a run with
    // nothing to retry), while this test is about a loss mid-exchange.
    let workers = format!(
        "max_fragments_per_worker = 1\nbroadcast_join_max_bytes = 0\ndynamic_filters = false\nexchange_mode = \"{mode}\""
    );
    let server = start_coordinator(&static_config(&[&w1, &w2, &victim], &workers))?;
    let mut c = client(&server.addr).await?;
    // Three stages (both sides of a partitioned join, then the grouped aggregate),
    // long enough that the victim finishes tasks well before the query ends.
    let sql = "SELECT a.l_suppkey, count(*) AS n, sum(b.l_quantity) AS q FROM lineitem a JOIN lineitem b \
               ON a.l_orderkey = b.l_orderkey AND a.l_linenumber <> b.l_linenumber \
               GROUP BY a.l_suppkey ORDER BY n DESC, a.l_suppkey LIMIT 20"
        .to_string();
    let expected = reference_context()
        .await?
        .sql(&sql)
        .await?
        .collect()
        .await?;
    let plan = pretty(&query(&mut c, &format!("EXPLAIN {sql}")).await?)?;
    assert!(plan.contains("DistributedQueryExec: stages=3"), "{plan}");

    let mut running = client(&server.addr).await?;
    let q = sql.clone();
    let handle = tokio::spawn(async move { query(&mut running, &q).await });
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed_fragments(&victim.addr).await.unwrap_or(0) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the victim never ran a task");
        anyhow::ensure!(
            !handle.is_finished(),
            "the query ended before the victim finished a task; make it longer"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.kill();
    let actual = handle.await??;
    assert_same_rows(
        &actual,
        &expected,
        true,
        &format!("a 3-stage query with a worker killed, {mode} exchanges"),
    );
    // The scheduler saw the loss and ran tasks again.
    let retried = query(
        &mut c,
        "SELECT count(*) FROM system.fragments WHERE state = 'retried'",
    )
    .await?;
    assert!(
        single_value(&retried).parse::<u64>()? > 0,
        "no task was retried:\n{}",
        pretty(&query(&mut c, "SELECT * FROM system.fragments").await?)?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_every_worker_dies_fails_clearly_and_leaves_nothing_running(
) -> anyhow::Result<()> {
    let mut w1 = start_worker("w1")?;
    let mut w2 = start_worker("w2")?;
    let server = start_coordinator(&static_config(&[&w1, &w2], ""))?;
    let mut c = client(&server.addr).await?;
    let mut running = client(&server.addr).await?;
    let handle = tokio::spawn(async move { query_error(&mut running, &tpch_query(9)).await });
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_fragments(&w1.addr).await.unwrap_or(0) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "no fragment ever ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w1.kill();
    w2.kill();
    let error = tokio::time::timeout(Duration::from_secs(60), handle).await??;
    assert!(
        error.contains("no healthy worker") || error.contains("no worker could run"),
        "the error should say no worker is left: {error}"
    );
    // The coordinator serves on, and tracks nothing as running.
    assert_eq!(row_count(&query(&mut c, "SELECT 1").await?), 1);
    let running = query(
        &mut c,
        "SELECT count(*) FROM system.fragments WHERE state = 'running'",
    )
    .await?;
    assert_eq!(
        single_value(&running),
        "0",
        "{}",
        pretty(&query(&mut c, "SELECT * FROM system.fragments").await?)?
    );
    let busy = query(&mut c, "SELECT sum(running_fragments) FROM system.workers").await?;
    assert_eq!(single_value(&busy), "0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_spills_or_fails_clearly() -> anyhow::Result<()> {
    let w1 = start_worker("w1")?;
    let server = start_coordinator(&static_config(
        &[&w1],
        "query_memory_limit = \"8MiB\"\nmax_fragments_per_worker = 2",
    ))?;
    let mut c = client(&server.addr).await?;
    // A grouped aggregate with a group per order line: too big for 4 MiB a task, so it spills.
    let sql = "SELECT count(*), sum(q), max(q) FROM (SELECT l_orderkey, l_linenumber, sum(l_quantity) AS q FROM lineitem GROUP BY l_orderkey, l_linenumber)";
    let expected = reference_context().await?.sql(sql).await?.collect().await?;
    let analyzed = pretty(&query(&mut c, &format!("EXPLAIN ANALYZE {sql}")).await?)?;
    let spills: u64 = analyzed
        .split(" spill=")
        .skip(1)
        .filter_map(|s| {
            s.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(spills > 0, "nothing spilled:\n{analyzed}");
    assert_same_rows(
        &query(&mut c, sql).await?,
        &expected,
        true,
        "aggregate that spilled",
    );

    // A hash join cannot spill: its build side over the limit is a clear error.
    let err = query_error(
        &mut c,
        "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_comment = b.l_comment",
    )
    .await;
    assert!(
        err.contains("Resources exhausted") || err.contains("memory"),
        "{err}"
    );
    // The worker was not killed: it still runs queries.
    assert_eq!(
        single_value(&query(&mut c, "SELECT count(*) FROM nation").await?),
        "25"
    );
    assert!(completed_fragments(&w1.addr).await? > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_time_limit_is_cancelled() -> anyhow::Result<()> {
    let w1 = start_worker("w1")?;
    let server = start_coordinator(&format!(
        "[server]\nquery_timeout_secs = 0.5\n{}",
        &static_config(&[&w1], "")[9..]
    ))?;
    let mut c = client(&server.addr).await?;
    let started = Instant::now();
    let err = query_error(
        &mut c,
        "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey",
    )
    .await;
    assert!(err.contains("query_timeout_secs"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout did not stop the query"
    );
    // Its fragments stop too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while running_fragments(&w1.addr).await? > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "fragments still run 5 s after the timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A stage task that fails on its own data (not a lost worker) fails the query
/// with that error, and the coordinator and workers keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_failing_on_its_data_fails_the_query_with_its_error() -> anyhow::Result<()> {
    let w1 = start_worker("w1")?;
    let w2 = start_worker("w2")?;
    let server = start_coordinator(&static_config(&[&w1, &w2], ""))?;
    let mut c = client(&server.addr).await?;
    // Line 1 of every order divides by zero inside the partial aggregate's stage.
    let sql =
        "SELECT l_suppkey, sum(l_orderkey / (l_linenumber - 1)) FROM lineitem GROUP BY l_suppkey";
    let plan = pretty(&query(&mut c, &format!("EXPLAIN {sql}")).await?)?;
    assert!(plan.contains("exchanges=streamed"), "{plan}");
    let error = query_error(&mut c, sql).await;
    assert!(error.contains("Divide by zero"), "{error}");
    let ok = query(
        &mut c,
        "SELECT count(*) FROM lineitem WHERE l_linenumber > 1",
    )
    .await?;
    assert!(single_value(&ok).parse::<u64>()? > 0);
    Ok(())
}

/// The rows a stage's tasks sent on, summed from the EXPLAIN ANALYZE line of
/// the first stage whose line contains `marker`.
fn stage_rows(analyzed: &str, marker: &str) -> Option<u64> {
    let line = analyzed
        .lines()
        .find(|l| l.contains("StageExec:") && l.contains(marker))?;
    Some(
        line.split(" rows=")
            .skip(1)
            .filter_map(|r| {
                r.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum(),
    )
}

/// A partitioned join's build-side keys filter the stage that produces its probe
/// side: of lineitem's rows only those of the selected parts are shuffled, with
/// streamed exchanges and with files, and the answer equals DataFusion's. With
/// `workers.dynamic_filters = false` every row is shuffled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joins_build_keys_filter_its_probe_stage_before_the_exchange() -> anyhow::Result<()> {
    let w1 = start_worker("w1")?;
    let w2 = start_worker("w2")?;
    let sql = "SELECT p_brand, count(*) AS n, sum(l_quantity) AS q FROM part JOIN lineitem \
               ON p_partkey = l_partkey WHERE p_size < 4 GROUP BY p_brand";
    let expected = reference_context().await?.sql(sql).await?.collect().await?;
    assert!(row_count(&expected) > 0);
    let mut shuffled = vec![];
    for (mode, filters) in [("stream", true), ("files", true), ("stream", false)] {
        let extra = format!(
            "exchange_mode = \"{mode}\"\ndynamic_filters = {filters}\nbroadcast_join_max_bytes = 0"
        );
        let server = start_coordinator(&static_config(&[&w1, &w2], &extra))?;
        let mut c = client(&server.addr).await?;
        let what = format!("{mode}, dynamic filters {filters}");
        assert_same_rows(&query(&mut c, sql).await?, &expected, false, &what);
        let explained = pretty(&query(&mut c, &format!("EXPLAIN {sql}")).await?)?;
        assert_eq!(
            explained.contains("filtered by the keys of stage"),
            filters,
            "{what}:\n{explained}"
        );
        let analyzed = pretty(&query(&mut c, &format!("EXPLAIN ANALYZE {sql}")).await?)?;
        let probe = stage_rows(&analyzed, "output=Hash([l_partkey")
            .with_context(|| format!("{what}: no probe stage in\n{analyzed}"))?;
        shuffled.push(probe);
    }
    let all = reference_context()
        .await?
        .sql("SELECT count(*) FROM lineitem")
        .await?
        .collect()
        .await?;
    assert_eq!(
        shuffled[2].to_string(),
        single_value(&all),
        "unfiltered, every lineitem row is shuffled"
    );
    for filtered in &shuffled[..2] {
        assert!(
            *filtered * 5 < shuffled[2],
            "the filtered probe stage shuffled {filtered} of {} rows",
            shuffled[2]
        );
    }
    Ok(())
}
