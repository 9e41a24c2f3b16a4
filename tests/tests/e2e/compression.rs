//! IPC compression between cluster processes (`workers.exchange_compression`):
//! worker processes told to compress (as `auto` does across hosts) send fragment
//! results that cross the wire in a fraction of the bytes, shuffle through
//! compressed exchange streams and files, and every answer equals single-node
//! DataFusion's. A word the setting does not know stops the worker with an
//! error that names it.

use quiver_tests::compare::assert_same_rows;
use quiver_tests::*;

/// Not relayed (the coordinator merges the sorted partitions), so the fragments'
/// results reach the coordinator as the workers encoded them.
const SORTED: &str = "SELECT l_orderkey, l_linenumber, l_comment, l_shipinstruct FROM lineitem \
                      ORDER BY l_orderkey, l_linenumber";

/// Both sides of the join hashed over exchanges, then an aggregate.
const SHUFFLED: &str = "SELECT o_orderpriority, count(*) AS n, sum(l_extendedprice) AS revenue \
                        FROM orders JOIN lineitem ON o_orderkey = l_orderkey \
                        GROUP BY o_orderpriority";

fn config(workers: &[&Process], extra: &str) -> String {
    let addresses: Vec<String> = workers.iter().map(|w| format!("{:?}", w.addr)).collect();
    format!(
        "[server]\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [workers]\nmode = \"static\"\nsingle_stage_max_bytes = 0\nbroadcast_join_max_bytes = 0\n\
         addresses = [{}]\nhealth_interval_secs = 0.5\n{extra}\n[cache]\nenabled = false\n{}",
        addresses.join(", "),
        tpch_source()
    )
}

fn worker(id: &str, compression: &str) -> anyhow::Result<Process> {
    start_worker_with(id, &[], &[("QUIVER_EXCHANGE_COMPRESSION", compression)])
}

/// Bytes of fragment results the coordinator received for `sql`.
async fn wire_bytes(
    server: &Process,
    sql: &str,
) -> anyhow::Result<(u64, Vec<arrow::record_batch::RecordBatch>)> {
    let http = server.http_addr();
    let mut c = client(&server.addr).await?;
    let before = metric(&http, "quiver_worker_wire_bytes_total")?;
    let rows = query(&mut c, sql).await?;
    Ok((
        metric(&http, "quiver_worker_wire_bytes_total")? - before,
        rows,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_told_to_compress_send_fewer_bytes_and_the_same_answers() -> anyhow::Result<()> {
    let reference = reference_context().await?;
    let sorted = reference.sql(SORTED).await?.collect().await?;
    let shuffled = reference.sql(SHUFFLED).await?.collect().await?;

    let (p1, p2) = (worker("plain-1", "none")?, worker("plain-2", "none")?);
    let plain = start_coordinator(&config(&[&p1, &p2], ""))?;
    let (plain_bytes, rows) = wire_bytes(&plain, SORTED).await?;
    assert_same_rows(&rows, &sorted, true, "sorted, uncompressed");

    let (z1, z2) = (worker("lz4-1", "lz4")?, worker("lz4-2", "lz4")?);
    for mode in ["stream", "files"] {
        let server =
            start_coordinator(&config(&[&z1, &z2], &format!("exchange_mode = \"{mode}\"")))?;
        let (lz4_bytes, rows) = wire_bytes(&server, SORTED).await?;
        assert_same_rows(&rows, &sorted, true, &format!("sorted, lz4, {mode}"));
        // Comments and shipping instructions are words from a small vocabulary.
        assert!(
            lz4_bytes > 0 && lz4_bytes * 3 < plain_bytes * 2,
            "{mode}: {lz4_bytes} bytes with lz4 against {plain_bytes} without"
        );
        // The exchanges between the workers are compressed too.
        let mut c = client(&server.addr).await?;
        let explained = query(&mut c, &format!("EXPLAIN {SHUFFLED}")).await?;
        let explained = arrow::util::pretty::pretty_format_batches(&explained)?.to_string();
        assert!(
            explained.contains("StageExec"),
            "{mode}: not staged:\n{explained}"
        );
        let rows = query(&mut c, SHUFFLED).await?;
        assert_same_rows(&rows, &shuffled, false, &format!("shuffled, lz4, {mode}"));
    }
    Ok(())
}

#[test]
fn an_unknown_compression_stops_the_worker_with_its_name() -> anyhow::Result<()> {
    let out = std::process::Command::new(quiver_bin())
        .args(["worker", "--listen", "127.0.0.1:0", "--allow-insecure"])
        .env("QUIVER_EXCHANGE_COMPRESSION", "gzip")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a worker started with gzip: {err}");
    assert!(err.contains("'gzip'") && err.contains("lz4"), "{err}");
    Ok(())
}
