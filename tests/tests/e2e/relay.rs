//! Results relayed without re-encoding: a scan's result over Flight SQL comes as
//! the worker processes' own Flight messages, forwarded by the coordinator. The
//! rows equal single-node DataFusion's, in plain strings or, when the client asks,
//! string views; `system.queries` counts them; a worker's error reaches the
//! client by name; a kept answer comes back from the results cache; and a result
//! that needs the coordinator (an ORDER BY) still runs there.

use arrow::datatypes::DataType;
use quiver_tests::compare::assert_same_rows;
use quiver_tests::*;

const SCAN: &str = "SELECT l_orderkey, l_linenumber, l_comment FROM lineitem";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_is_relayed_as_the_workers_flight_data() -> anyhow::Result<()> {
    let (w1, w2) = (start_worker("r1")?, start_worker("r2")?);
    let addresses = format!("{:?}, {:?}", w1.addr, w2.addr);
    let server = start_coordinator(&format!(
        "[server]\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [workers]\nmode = \"static\"\naddresses = [{addresses}]\nhealth_interval_secs = 0.5\nsingle_stage_max_bytes = 0\n\
         [cache]\nenabled = true\n{}",
        tpch_source()
    ))?;
    let http = server.http_addr();
    let reference = reference_context().await?;
    let mut c = client(&server.addr).await?;

    // Plain strings, as every client reads them, equal to DataFusion's rows.
    let before = metric(&http, "quiver_relayed_results_total")?;
    let rows = query(&mut c, SCAN).await?;
    let expected = reference.sql(SCAN).await?.collect().await?;
    assert_same_rows(&rows, &expected, false, SCAN);
    assert_eq!(rows[0].schema().field(2).data_type(), &DataType::Utf8);
    assert_eq!(metric(&http, "quiver_relayed_results_total")?, before + 1);
    let counted = scalar(
        &mut c,
        &format!("SELECT rows FROM system.queries WHERE sql = '{SCAN}' AND state = 'finished'"),
    )
    .await?;
    assert_eq!(counted, row_count(&expected).to_string());

    // String views for a client that asks for them: the workers keep them.
    let mut views = client(&server.addr).await?;
    views.set_header("x-quiver-string-views", "true");
    // Not the answer kept from the first run: this one is relayed too.
    views.set_header("x-quiver-cache", "off");
    let info = views.execute(SCAN.to_string(), None).await?;
    let announced = info.clone().try_decode_schema()?;
    assert_eq!(announced.field(2).data_type(), &DataType::Utf8View);
    let rows = fetch(&mut views, info).await?;
    assert_eq!(rows[0].schema().field(2).data_type(), &DataType::Utf8View);
    assert_same_rows(&rows, &expected, false, "SCAN with string views");
    assert_eq!(metric(&http, "quiver_relayed_results_total")?, before + 2);

    // A worker's error reaches the client by name, and the server keeps serving.
    let error = query_error(
        &mut c,
        "SELECT l_orderkey / (l_linenumber - l_linenumber) FROM lineitem",
    )
    .await;
    assert!(error.contains("Divide by zero"), "{error}");

    // A small answer relayed once is kept, and the repeat is a cache hit.
    let small = "SELECT n_nationkey, n_name FROM nation";
    let first = query(&mut c, small).await?;
    let again = query(&mut c, small).await?;
    assert_eq!(row_count(&first), 25);
    assert_same_rows(&again, &first, false, small);
    assert_eq!(again[0].schema(), first[0].schema());
    let hit = scalar(
        &mut c,
        &format!("SELECT count(*) FROM system.queries WHERE sql = '{small}' AND cache_hit"),
    )
    .await?;
    assert_eq!(hit, "1");

    // An ordered result needs the coordinator's merge: it runs there.
    let relayed = metric(&http, "quiver_relayed_results_total")?;
    let ordered = "SELECT l_orderkey FROM lineitem ORDER BY l_orderkey DESC LIMIT 3";
    let rows = query(&mut c, ordered).await?;
    assert_same_rows(
        &rows,
        &reference.sql(ordered).await?.collect().await?,
        true,
        ordered,
    );
    assert_eq!(metric(&http, "quiver_relayed_results_total")?, relayed);
    Ok(())
}
