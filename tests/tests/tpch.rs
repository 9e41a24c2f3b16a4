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
        let actual = query(&mut client, &sql).await.with_context(|| format!("q{n} through Quiver"))?;
        let expected = reference.sql(&sql).await?.collect().await.with_context(|| format!("q{n} reference"))?;
        assert!(row_count(&expected) > 0, "q{n}: the reference returns no rows, so the comparison proves nothing");
        assert_same_rows(&actual, &expected, false, &format!("q{n}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_stages_on_both_workers() -> anyhow::Result<()> {
    let config = format!("[workers]\ncount = 2\n{}", tpch_source());
    let server = start_coordinator(&config)?;
    let mut client = client(&server.addr).await?;
    let batches = query(&mut client, &format!("EXPLAIN {}", tpch_query(1))).await?;
    let text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
    assert!(text.contains("DistributedQueryExec: stages=1, workers=[@embedded-1, @embedded-2]"), "{text}");
    // The partial aggregate runs in a stage that shuffles by the group keys; the
    // final one reads that shuffle, above the stages.
    let stage_at = text.find("StageExec: stage=1").unwrap_or(0);
    assert!(text[stage_at..].contains("exchange=shuffle, output=Hash([l_returnflag@0, l_linestatus@1], 4)"), "{text}");
    let partial_at = text.find("mode=Partial").unwrap_or(0);
    let final_at = text.find("mode=FinalPartitioned").unwrap_or(usize::MAX);
    assert!(final_at < stage_at && stage_at < partial_at, "final aggregate above the stage, partial inside:\n{text}");
    Ok(())
}
