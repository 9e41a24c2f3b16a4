//! All 22 TPC-H queries through the Flight SQL endpoint with 2 embedded workers
//! return the rows single-node DataFusion returns over the same files.

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
async fn explain_shows_fragments_on_both_workers() -> anyhow::Result<()> {
    let config = format!("[workers]\ncount = 2\n{}", tpch_source());
    let server = start_coordinator(&config)?;
    let mut client = client(&server.addr).await?;
    let batches = query(&mut client, &format!("EXPLAIN {}", tpch_query(1))).await?;
    let text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
    assert!(text.contains("RemoteFragmentExec"), "{text}");
    assert!(text.contains("@embedded-1") && text.contains("@embedded-2"), "{text}");
    // The partial aggregate runs inside the fragment, the final one on the coordinator.
    let fragment_at = text.find("RemoteFragmentExec").unwrap_or(0);
    let partial_at = text.find("mode=Partial").unwrap_or(0);
    assert!(partial_at > fragment_at, "partial aggregate should be inside the fragment:\n{text}");
    Ok(())
}
