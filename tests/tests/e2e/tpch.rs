//! All 22 TPC-H queries through the Flight SQL endpoint with 2 embedded workers
//! return the rows single-node DataFusion returns over the same files (embedded
//! workers share one process, so their exchanges are read as local files).

use anyhow::Context;
use quiver_tests::compare::assert_same_rows;
use quiver_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_22_queries_match_single_node_datafusion() -> anyhow::Result<()> {
    let config = format!(
        "[server]\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\n[workers]\nmode = \"embedded\"\ncount = 2\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut client = client(&server.addr).await?;
    let reference = reference_context().await?;
    for n in 1..=22 {
        let sql = tpch_query(n);
        let actual = query(&mut client, &sql)
            .await
            .with_context(|| format!("q{n} through Quiver"))?;
        let expected = reference
            .sql(&sql)
            .await?
            .collect()
            .await
            .with_context(|| format!("q{n} reference"))?;
        assert!(
            row_count(&expected) > 0,
            "q{n}: the reference returns no rows, so the comparison proves nothing"
        );
        assert_same_rows(&actual, &expected, false, &format!("q{n}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_stages_on_both_workers() -> anyhow::Result<()> {
    let config = format!(
        "[workers]\ncount = 2\nsingle_stage_max_bytes = 0\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut client = client(&server.addr).await?;
    let batches = query(&mut client, &format!("EXPLAIN {}", tpch_query(1))).await?;
    let text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
    assert!(
        text.contains(
            "DistributedQueryExec: stages=1, exchanges=streamed, workers=[@embedded-1, @embedded-2]"
        ),
        "{text}"
    );
    // The partial aggregate runs in a stage that shuffles by the group keys; the
    // final one reads that shuffle, above the stages.
    let stage_at = text.find("StageExec: stage=1").unwrap_or(0);
    assert!(
        text[stage_at..]
            .contains("exchange=shuffle, output=Hash([l_returnflag@0, l_linestatus@1], 4)"),
        "{text}"
    );
    let partial_at = text.find("mode=Partial").unwrap_or(0);
    let final_at = text.find("mode=FinalPartitioned").unwrap_or(usize::MAX);
    assert!(
        final_at < stage_at && stage_at < partial_at,
        "final aggregate above the stage, partial inside:\n{text}"
    );
    Ok(())
}

/// q11 and q22 (scalar subqueries) run whole on one worker, with DataFusion's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scalar_subqueries_run_whole_on_one_worker() -> anyhow::Result<()> {
    // Both compare with an uncorrelated scalar subquery: its ScalarSubqueryExec
    // goes to the worker with the rest of the plan.
    let reference = reference_context().await?;
    let limit = "64MiB";
    let config = format!(
        "[workers]\ncount = 2\nsingle_stage_max_bytes = \"{limit}\"\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut client = client(&server.addr).await?;
    for q in [11, 22] {
        let sql = tpch_query(q);
        let expected = reference.sql(&sql).await?.collect().await?;
        let plan = arrow::util::pretty::pretty_format_batches(
            &query(&mut client, &format!("EXPLAIN {sql}")).await?,
        )?
        .to_string();
        let (whole, subquery) = (
            plan.find("single_stage (inputs "),
            plan.find("ScalarSubqueryExec"),
        );
        assert!(
            matches!((whole, subquery), (Some(w), Some(s)) if w < s),
            "q{q}: the subquery runs inside the fragment:\n{plan}"
        );
        let actual = query(&mut client, &sql).await?;
        assert_same_rows(
            &actual,
            &expected,
            false,
            &format!("q{q} with single_stage_max_bytes = {limit}"),
        );
    }
    Ok(())
}

/// A query over little data runs whole on one worker (no stages), with the same
/// rows; a lower `single_stage_max_bytes` sends the same query through stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_query_runs_whole_on_one_worker() -> anyhow::Result<()> {
    let reference = reference_context().await?;
    let sql = tpch_query(5);
    let expected = reference.sql(&sql).await?.collect().await?;
    for (limit, whole) in [("64MiB", true), ("1MiB", false)] {
        let config = format!(
            "[workers]\ncount = 2\nsingle_stage_max_bytes = \"{limit}\"\n{}",
            tpch_source()
        );
        let server = start_coordinator(&config)?;
        let mut client = client(&server.addr).await?;
        let plan = arrow::util::pretty::pretty_format_batches(
            &query(&mut client, &format!("EXPLAIN {sql}")).await?,
        )?
        .to_string();
        assert_eq!(
            plan.contains("single_stage (inputs "),
            whole,
            "limit {limit}:\n{plan}"
        );
        assert_eq!(
            !plan.contains("DistributedQueryExec"),
            whole,
            "limit {limit}:\n{plan}"
        );
        let actual = query(&mut client, &sql).await?;
        assert_same_rows(
            &actual,
            &expected,
            false,
            &format!("q5 with single_stage_max_bytes = {limit}"),
        );
        let tasks = query(
            &mut client,
            "SELECT count(*) AS n FROM quiver.system.fragments f JOIN quiver.system.queries q ON f.query_id = q.id \
             WHERE q.sql LIKE '%revenue%' AND q.sql NOT LIKE '%EXPLAIN%' AND q.sql NOT LIKE '%system%'",
        )
        .await?;
        let tasks: i64 = strings(&tasks, "n")
            .first()
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1);
        // One fragment for the whole query, or many stage tasks.
        if whole {
            assert_eq!(tasks, 1, "limit {limit}");
        } else {
            assert!(tasks > 4, "limit {limit}: {tasks} tasks");
        }
    }
    Ok(())
}

/// `workers.broadcast_join_max_bytes` decides how a join's rows move: under it,
/// q3's small sides are built whole by every task and lineitem stays where it is
/// read; at 0, both sides of every join are shuffled by the join keys. Same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broadcast_threshold_decides_between_broadcast_and_shuffle() -> anyhow::Result<()> {
    let reference = reference_context().await?;
    let sql = tpch_query(3);
    let expected = reference.sql(&sql).await?.collect().await?;
    for (setting, shuffled) in [("", false), ("broadcast_join_max_bytes = 0\n", true)] {
        let config = format!(
            "[workers]\ncount = 2\nsingle_stage_max_bytes = 0\n{setting}{}",
            tpch_source()
        );
        let server = start_coordinator(&config)?;
        let mut client = client(&server.addr).await?;
        let plan = arrow::util::pretty::pretty_format_batches(
            &query(&mut client, &format!("EXPLAIN {sql}")).await?,
        )?
        .to_string();
        assert_eq!(
            plan.contains("HashJoinExec: mode=Partitioned"),
            shuffled,
            "{setting}:\n{plan}"
        );
        assert_eq!(
            plan.contains("HashJoinExec: mode=CollectLeft"),
            !shuffled,
            "{setting}:\n{plan}"
        );
        let actual = query(&mut client, &sql).await?;
        assert_same_rows(&actual, &expected, false, &format!("q3 with {setting:?}"));
    }
    Ok(())
}

/// Joins written with the largest tables first are reordered from the files'
/// statistics: the filtered nation meets customer first, lineitem comes last;
/// `EXPLAIN` shows the estimates and the answer is DataFusion's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_are_ordered_from_statistics() -> anyhow::Result<()> {
    const SQL: &str = "SELECT n.n_name, count(*) AS lines, sum(l.l_quantity) AS quantity
        FROM lineitem l, orders o, customer c, nation n
        WHERE l.l_orderkey = o.o_orderkey AND o.o_custkey = c.c_custkey
          AND c.c_nationkey = n.n_nationkey AND n.n_name = 'FRANCE'
        GROUP BY n.n_name";
    let config = format!(
        "[server]\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\n[workers]\ncount = 2\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut client = client(&server.addr).await?;
    let explain = query(&mut client, &format!("EXPLAIN {SQL}")).await?;
    let text = arrow::util::pretty::pretty_format_batches(&explain)?.to_string();
    assert!(
        text.contains("join order from statistics (estimated rows):"),
        "{text}"
    );
    // One line per input with its estimate: lineitem's is its row count at SF0.1.
    let estimate = |alias: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| {
                l.split('|')
                    .nth(2)?
                    .trim()
                    .strip_prefix(&format!("{alias}: "))
            })
            .and_then(|v| v.trim().parse().ok())
    };
    assert_eq!(estimate("l"), Some(600_572.0), "{text}");
    assert_eq!(estimate("c"), Some(15_000.0), "{text}");
    assert!(
        estimate("n").is_some_and(|n| n < 25.0),
        "nation's filter counts: {text}"
    );
    let steps: Vec<&str> = text.lines().filter(|l| l.contains(" ⋈ ")).collect();
    assert_eq!(steps.len(), 3, "{text}");
    assert!(
        steps[0].contains(" n ⋈ c ") || steps[0].contains(" c ⋈ n "),
        "nation and customer first: {text}"
    );
    assert!(
        steps[2].contains("⋈ l ->") || steps[2].contains(" l ⋈"),
        "lineitem last: {text}"
    );

    let actual = query(&mut client, SQL).await?;
    let expected = reference_context().await?.sql(SQL).await?.collect().await?;
    assert!(row_count(&expected) == 1, "FRANCE has orders");
    assert_same_rows(&actual, &expected, false, "reordered join");

    // `written` keeps the query's order: no estimates, the same answer.
    let written =
        start_coordinator(&config.replace("[server]\n", "[server]\njoin_order = \"written\"\n"))?;
    let mut plain = quiver_tests::client(&written.addr).await?;
    let explain = query(&mut plain, &format!("EXPLAIN {SQL}")).await?;
    let text = arrow::util::pretty::pretty_format_batches(&explain)?.to_string();
    assert!(!text.contains("join order from statistics"), "{text}");
    assert_same_rows(
        &query(&mut plain, SQL).await?,
        &expected,
        false,
        "written order",
    );
    Ok(())
}
