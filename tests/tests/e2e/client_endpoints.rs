//! Results straight from the workers (`workers.client_endpoints = true`): a scan's
//! FlightInfo lists one endpoint per partition at the `quiver worker` processes;
//! clients without any cluster credentials (a raw Flight client fetching them in
//! parallel, `quiver sql`, the ADBC driver) read the whole answer from there. A
//! query that needs a merge still comes from the coordinator, and a worker still
//! refuses any other ticket that comes without the cluster's credentials.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightEndpoint, Ticket};
use futures::TryStreamExt;
use prost::Message;
use quiver_tests::compare::assert_same_rows;
use quiver_tests::*;
use tonic::Code;

const SCAN: &str = "SELECT l_orderkey, l_linenumber, l_comment FROM lineitem";

fn config(workers: &[&Process]) -> String {
    let addresses: Vec<String> = workers.iter().map(|w| format!("{:?}", w.addr)).collect();
    format!(
        "[server]\ndefault_catalog = \"quiver\"\ndefault_schema = \"tpch\"\n[workers]\nmode = \"static\"\naddresses = [{}]\nhealth_interval_secs = 0.5\nsingle_stage_max_bytes = 0\nclient_endpoints = true\n{}",
        addresses.join(", "),
        tpch_source()
    )
}

/// A Flight client to `uri` (`grpc+tcp://host:port`) without any credentials.
async fn raw_client(uri: &str) -> anyhow::Result<FlightServiceClient<tonic::transport::Channel>> {
    let address = uri.replacen("grpc+tcp://", "http://", 1);
    let channel = tonic::transport::Endpoint::from_shared(address)?
        .connect()
        .await?;
    Ok(FlightServiceClient::new(channel).max_decoding_message_size(usize::MAX))
}

/// The batches of one endpoint, read from the worker its location names.
async fn fetch_from_worker(endpoint: FlightEndpoint) -> anyhow::Result<Vec<RecordBatch>> {
    let uri = endpoint
        .location
        .first()
        .map(|l| l.uri.clone())
        .context("an endpoint without a location")?;
    let ticket = endpoint.ticket.context("an endpoint without a ticket")?;
    let data = raw_client(&uri)
        .await?
        .do_get(ticket)
        .await?
        .into_inner()
        .map_err(FlightError::from);
    Ok(FlightRecordBatchStream::new_from_flight_data(data)
        .try_collect()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_fetch_a_scan_from_the_workers_in_parallel() -> anyhow::Result<()> {
    let (w1, w2) = (start_worker("e1")?, start_worker("e2")?);
    let server = start_coordinator(&config(&[&w1, &w2]))?;
    let mut c = client(&server.addr).await?;
    let expected = reference_context()
        .await?
        .sql(SCAN)
        .await?
        .collect()
        .await?;

    // One endpoint per partition, each at a worker, together covering both workers.
    let info = c.execute(SCAN.to_string(), None).await?;
    let schema = info.clone().try_decode_schema()?;
    let endpoints = info.endpoint;
    assert!(endpoints.len() >= 2, "{endpoints:?}");
    let workers = [
        format!("grpc+tcp://{}", w1.addr),
        format!("grpc+tcp://{}", w2.addr),
    ];
    let locations: Vec<String> = endpoints
        .iter()
        .filter_map(|e| e.location.first().map(|l| l.uri.clone()))
        .collect();
    assert_eq!(
        locations.len(),
        endpoints.len(),
        "every endpoint names its worker: {endpoints:?}"
    );
    assert!(
        locations.iter().all(|l| workers.contains(l)),
        "{locations:?} vs {workers:?}"
    );
    assert!(
        workers.iter().all(|w| locations.contains(w)),
        "both workers serve a part: {locations:?}"
    );

    // All at once, without the coordinator: the whole answer, in the announced types.
    let tasks: Vec<_> = endpoints
        .into_iter()
        .map(|e| tokio::spawn(fetch_from_worker(e)))
        .collect();
    let mut actual = vec![];
    for task in tasks {
        actual.extend(task.await??);
    }
    assert_same_rows(
        &actual,
        &expected,
        false,
        "the scan read from the workers' endpoints",
    );
    let comment = actual
        .iter()
        .find(|b| b.num_rows() > 0)
        .context("no rows")?
        .schema()
        .field_with_name("l_comment")?
        .data_type()
        .clone();
    assert_eq!(
        comment,
        DataType::Utf8,
        "a client receives plain strings, not views"
    );
    assert_eq!(
        schema.field_with_name("l_comment")?.data_type(),
        &DataType::Utf8
    );

    // The coordinator knows it handed the query off; it served none of its rows.
    let state = query(
        &mut c,
        &format!("SELECT state, rows FROM system.queries WHERE sql = '{SCAN}'"),
    )
    .await?;
    assert_eq!(strings(&state, "state"), vec!["handed_off"]);

    // A result that needs a merge (ORDER BY + LIMIT) still comes from the coordinator.
    let info = c
        .execute(
            "SELECT l_orderkey FROM lineitem ORDER BY l_orderkey DESC LIMIT 3".to_string(),
            None,
        )
        .await?;
    assert_eq!(info.endpoint.len(), 1);
    assert!(info.endpoint[0].location.is_empty(), "{:?}", info.endpoint);
    let top = fetch(&mut c, info).await?;
    assert_eq!(row_count(&top), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiver_sql_and_adbc_read_endpoints_on_the_workers() -> anyhow::Result<()> {
    let (w1, w2) = (start_worker("e1")?, start_worker("e2")?);
    let server = start_coordinator(&config(&[&w1, &w2]))?;
    let expected = row_count(
        &reference_context()
            .await?
            .sql(SCAN)
            .await?
            .collect()
            .await?,
    );

    // `quiver sql`: every row, once (the header line aside).
    let out = Command::new(quiver_bin())
        .args(["sql", "--host", &server.addr, "-q", "-f", "csv", SCAN])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(
        lines,
        expected + 1,
        "quiver sql printed {lines} lines for {expected} rows"
    );

    // The ADBC Flight SQL driver, unmodified.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("adbc_endpoints.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("grpc://{}", server.addr))
        .arg(SCAN)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "adbc_endpoints.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("rows {expected}")), "{stdout}");

    let mut c = client(&server.addr).await?;
    let states = strings(
        &query(
            &mut c,
            &format!("SELECT state FROM system.queries WHERE sql = '{SCAN}'"),
        )
        .await?,
        "state",
    );
    assert!(
        states.len() >= 2 && states.iter().all(|s| s == "handed_off"),
        "{states:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_only_sealed_client_tickets_without_cluster_credentials(
) -> anyhow::Result<()> {
    let worker = start_worker("e1")?;
    let server = start_coordinator(&config(&[&worker]))?;
    let mut c = client(&server.addr).await?;
    let endpoint = c
        .execute(SCAN.to_string(), None)
        .await?
        .endpoint
        .into_iter()
        .next()
        .context("no endpoint")?;
    let uri = endpoint
        .location
        .first()
        .map(|l| l.uri.clone())
        .context("no location")?;
    let ticket = endpoint.ticket.clone().context("no ticket")?;
    let mut raw = raw_client(&uri).await?;

    // The ticket as handed out works, and works again (a client may retry).
    for _ in 0..2 {
        assert!(row_count(&fetch_from_worker(endpoint.clone()).await?) > 0);
    }

    // One byte of it changed (say, to turn off for_client or swap the plan): refused.
    let mut altered = ticket.ticket.to_vec();
    let last = altered.len() - 1;
    altered[last] ^= 0x01;
    let status = raw
        .do_get(Ticket {
            ticket: altered.into(),
        })
        .await
        .expect_err("an altered ticket was accepted");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("signature is invalid"),
        "{status:?}"
    );

    // A properly sealed fragment ticket that is not a client's: still needs the cluster's call token.
    let key = quiver_proto::ClusterKey::from_secret(CLUSTER_SECRET)?;
    let fragment = quiver_proto::FragmentTicket {
        query_id: "q".into(),
        fragment_id: 1,
        partition: 0,
        plan: vec![1, 2, 3],
        memory_limit: 0,
        for_client: false,
        worker_address: String::new(),
        relay: false,
        string_views: false,
        exchange_scope: String::new(),
    };
    let sealed = key.seal(&fragment.encode_to_vec());
    let status = raw
        .do_get(Ticket {
            ticket: sealed.into(),
        })
        .await
        .expect_err("a cluster ticket was accepted without credentials");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("missing cluster credentials"),
        "{status:?}"
    );

    // A ticket sealed with another cluster's secret: refused.
    let other = quiver_proto::ClusterKey::from_secret("another-cluster-secret-0123456789")?;
    let client_ticket = quiver_proto::FragmentTicket {
        for_client: true,
        worker_address: String::new(),
        relay: false,
        string_views: false,
        exchange_scope: String::new(),
        ..fragment
    };
    let status = raw
        .do_get(Ticket {
            ticket: other.seal(&client_ticket.encode_to_vec()).into(),
        })
        .await
        .expect_err("a foreign ticket was accepted");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // The worker keeps serving.
    assert!(row_count(&fetch_from_worker(endpoint).await?) > 0);
    Ok(())
}
