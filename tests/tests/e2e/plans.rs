//! Snapshots of the distributed plan of the 22 TPC-H queries: `EXPLAIN` on a
//! coordinator with two embedded workers, a fixed partition count and stages
//! even for this small data (`single_stage_max_bytes = 0`), kept in
//! `tests/tests/e2e/snapshots/`. A change of the planner (stages, exchanges, what runs
//! where) changes a snapshot, so it shows in review. After an intended change,
//! `INSTA_UPDATE=always cargo test --workspace --locked --test e2e -- plans::` writes the
//! new snapshots; review and commit them.

use quiver_tests::*;

/// The physical plan of `EXPLAIN`, with what differs between machines replaced:
/// the data folder, and the byte ranges of file groups (they follow the Parquet
/// writer, not the planner).
fn physical_plan(batches: &[arrow::record_batch::RecordBatch], data: &str) -> String {
    let mut out = String::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let kind = arrow::util::display::array_value_to_string(batch.column(0), row)
                .unwrap_or_default();
            if kind != "physical_plan" {
                continue;
            }
            let plan = arrow::util::display::array_value_to_string(batch.column(1), row)
                .unwrap_or_default();
            out.push_str(&plan);
        }
    }
    // EXPLAIN shows object-store paths, without the leading '/'.
    let out = out.replace(data.trim_start_matches('/'), "<tpch>");
    // `file.parquet:123..4567` -> `file.parquet:<range>`
    let mut normalized = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find(".parquet:") {
        let (head, tail) = rest.split_at(at + ".parquet:".len());
        normalized.push_str(head);
        let end = tail
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(tail.len());
        if end > 0 {
            normalized.push_str("<range>");
        }
        rest = &tail[end..];
    }
    normalized.push_str(rest);
    normalized
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_distributed_plans_match_their_snapshots() -> anyhow::Result<()> {
    let config = format!(
        "[server]\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\ntarget_partitions = 4\n\
         [workers]\nmode = \"embedded\"\ncount = 2\nsingle_stage_max_bytes = 0\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    let data = tpch_dir().to_string_lossy().to_string();
    for n in 1..=22 {
        let batches = query(&mut c, &format!("EXPLAIN {}", tpch_query(n))).await?;
        let plan = physical_plan(&batches, &data);
        assert!(
            plan.contains("Exec"),
            "q{n}: no physical plan in EXPLAIN:\n{plan}"
        );
        insta::assert_snapshot!(format!("tpch_q{n:02}"), plan);
    }
    Ok(())
}
