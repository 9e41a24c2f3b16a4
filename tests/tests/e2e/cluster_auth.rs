//! Cluster authentication against real worker processes: a call without the
//! cluster's credentials, a replayed call, an unsealed, altered or expired ticket are
//! all refused before the ticket is decoded, while queries through the coordinator work.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Ticket};
use prost::Message;
use quiver_proto::{ClusterKey, FragmentTicket, CLUSTER_HEADER};
use quiver_tests::*;
use tonic::Code;

fn key() -> ClusterKey {
    ClusterKey::from_secret(CLUSTER_SECRET).expect("test key")
}

/// A ticket that decodes as a fragment (its plan is garbage: reaching the decoder
/// is what tells that authentication passed).
fn fragment_ticket() -> Vec<u8> {
    FragmentTicket {
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
    }
    .encode_to_vec()
}

async fn raw_client(addr: &str) -> anyhow::Result<FlightServiceClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(FlightServiceClient::new(channel))
}

fn with_token(ticket: Vec<u8>, token: &str) -> tonic::Request<Ticket> {
    let mut request = tonic::Request::new(Ticket {
        ticket: ticket.into(),
    });
    request
        .metadata_mut()
        .insert(CLUSTER_HEADER, token.parse().expect("header value"));
    request
}

async fn do_get_error(
    client: &mut FlightServiceClient<tonic::transport::Channel>,
    request: tonic::Request<Ticket>,
) -> tonic::Status {
    match client.do_get(request).await {
        Ok(_) => panic!("the worker accepted the call"),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_refuse_calls_and_tickets_without_the_cluster_secret() -> anyhow::Result<()> {
    let worker = start_worker("guarded")?;
    let mut raw = raw_client(&worker.addr).await?;

    // No credentials at all: refused, for fragments and for actions.
    let status = do_get_error(
        &mut raw,
        tonic::Request::new(Ticket {
            ticket: fragment_ticket().into(),
        }),
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("missing cluster credentials"),
        "{status:?}"
    );
    let stats = raw
        .do_action(Action {
            r#type: "stats".into(),
            body: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(stats.code(), Code::Unauthenticated);
    let release = raw
        .do_action(Action {
            r#type: "release".into(),
            body: "q".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(release.code(), Code::Unauthenticated);
    assert_eq!(
        raw.list_actions(arrow_flight::Empty {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // The health check stays open and says nothing but "ok".
    let mut health = raw
        .do_action(Action {
            r#type: "health".into(),
            body: Default::default(),
        })
        .await?
        .into_inner();
    assert_eq!(
        health.message().await?.map(|r| r.body.to_vec()),
        Some(b"ok".to_vec())
    );

    // Its identity can be read (another coordinator asks whether the owner lives), but
    // recording a heartbeat needs the credentials.
    let mut who = raw
        .do_action(Action {
            r#type: "instance".into(),
            body: Default::default(),
        })
        .await?
        .into_inner();
    let body = who.message().await?.map(|r| r.body).unwrap_or_default();
    let instance = quiver_proto::WorkerInstance::decode_from(&body)?;
    assert_eq!(instance.instance_id.len(), 32, "{instance:?}");
    assert_eq!(
        (instance.owner_seen_ms, instance.draining),
        (None, false),
        "{instance:?}"
    );
    let forged = raw
        .do_action(Action {
            r#type: "instance".into(),
            body: "not-the-owner".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated, "{forged:?}");

    // Valid credentials, but the ticket is not sealed.
    let status = do_get_error(
        &mut raw,
        with_token(fragment_ticket(), &key().call_token()?),
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("not sealed"), "{status:?}");

    // A sealed ticket with one byte changed.
    let mut altered = key().seal(&fragment_ticket());
    let last = altered.len() - 1;
    altered[last] ^= 0x40;
    let status = do_get_error(&mut raw, with_token(altered, &key().call_token()?)).await;
    assert!(
        status.message().contains("signature is invalid"),
        "{status:?}"
    );

    // A ticket replayed after it expired.
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let soon = key().seal_until(&fragment_ticket(), now_ms + 300);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = do_get_error(&mut raw, with_token(soon, &key().call_token()?)).await;
    assert!(status.message().contains("ticket expired"), "{status:?}");

    // Credentials of another cluster.
    let other = ClusterKey::from_secret("some-other-cluster-secret-42")?;
    let status = do_get_error(
        &mut raw,
        with_token(other.seal(&fragment_ticket()), &other.call_token()?),
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("invalid cluster credentials"),
        "{status:?}"
    );

    // A properly sealed ticket passes authentication and reaches the decoder;
    // the same call token a second time is a replay.
    let token = key().call_token()?;
    let status = do_get_error(&mut raw, with_token(key().seal(&fragment_ticket()), &token)).await;
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "authenticated ticket should reach the plan decoder: {status:?}"
    );
    let status = do_get_error(&mut raw, with_token(key().seal(&fragment_ticket()), &token)).await;
    assert!(status.message().contains("already used"), "{status:?}");

    // The worker still serves its cluster: a query through a coordinator runs on it.
    let config = format!(
        "[workers]\nmode = \"static\"\naddresses = [\"{}\"]\nexchanges = false\n{}",
        worker.addr,
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    let before = completed_fragments(&worker.addr).await?;
    assert_eq!(row_count(&query(&mut c, "SELECT * FROM nation").await?), 25);
    assert!(
        completed_fragments(&worker.addr).await? > before,
        "the worker ran no fragment"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_with_another_secret_gets_nothing_from_a_worker() -> anyhow::Result<()> {
    let worker = start_worker("other-cluster")?;
    let config = format!(
        "[workers]\nmode = \"static\"\naddresses = [\"{}\"]\nhealth_interval_secs = 0.2\n{}",
        worker.addr,
        tpch_source()
    );
    let server = start_coordinator_with_env(
        &config,
        &[(CLUSTER_SECRET_VAR, "a-different-secret-0123456789")],
    )?;
    let mut c = client(&server.addr).await?;
    let err = query_error(&mut c, "SELECT * FROM nation").await;
    assert!(
        err.contains("no healthy worker") || err.contains("cluster credentials"),
        "{err}"
    );
    assert_eq!(completed_fragments(&worker.addr).await?, 0);
    Ok(())
}

#[test]
fn workers_and_static_coordinators_refuse_to_start_without_a_secret() {
    let out = std::process::Command::new(quiver_bin())
        .args(["worker", "--listen", "127.0.0.1:0"])
        .env_remove(CLUSTER_SECRET_VAR)
        .output()
        .expect("run quiver worker");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a worker needs the cluster secret") && err.contains("allow_insecure"),
        "{err}"
    );

    let out = std::process::Command::new(quiver_bin())
        .args(["worker", "--listen", "127.0.0.1:0"])
        .env(CLUSTER_SECRET_VAR, "short")
        .output()
        .expect("run quiver worker");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 bytes"));

    let (ok, err) = serve_until_exit(
        "[workers]\nmode = \"static\"\naddresses = [\"127.0.0.1:1\"]\n",
        &[(CLUSTER_SECRET_VAR, None)],
    );
    assert!(!ok && err.contains("needs the cluster secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_worker_serves_anyone_and_warns() -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new(quiver_bin());
    cmd.args(["worker", "--listen", "127.0.0.1:0", "--allow-insecure"])
        .env_remove(CLUSTER_SECRET_VAR)
        .env("QUIVER_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .await??;
    let addr = line
        .trim()
        .rsplit("://")
        .next()
        .unwrap_or_default()
        .to_string();
    let mut raw = raw_client(&addr).await?;
    let stats = raw
        .do_action(Action {
            r#type: "stats".into(),
            body: Default::default(),
        })
        .await;
    child.kill()?;
    let out = child.wait_with_output()?;
    assert!(
        stats.is_ok(),
        "an insecure worker answers anyone: {stats:?}"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("cluster authentication is OFF"), "{log}");
    Ok(())
}
