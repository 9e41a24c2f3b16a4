//! `quiver workers`: list the workers of a running coordinator, or set their number.

use std::time::Instant;

use anyhow::{Context, Result};
use arrow_flight::Action;

use super::sql::{connect, flight_error, print_result, query, ConnectArgs};

#[derive(clap::Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    connection: ConnectArgs,
    #[command(subcommand)]
    command: Option<WorkersCommand>,
}

#[derive(clap::Subcommand)]
enum WorkersCommand {
    /// Pin the pool at N workers (Docker pools), or hand it back to the autoscaler with "auto".
    Scale { size: String },
    /// Show the pool's recent scaling decisions with their reasons.
    Events,
}

pub async fn run(args: WorkersArgs) -> Result<()> {
    let mut client = connect(&args.connection).await?;
    let started = Instant::now();
    match args.command {
        None => {
            let sql = "SELECT id, address, state, running_fragments, round(idle_secs) AS idle_secs, container \
                       FROM system.workers ORDER BY id";
            print_result(&query(&mut client, sql).await?, started)
        }
        Some(WorkersCommand::Events) => {
            let sql = "SELECT at, action, worker, reason FROM system.scaling_events ORDER BY at";
            print_result(&query(&mut client, sql).await?, started)
        }
        Some(WorkersCommand::Scale { size }) => {
            let action = Action {
                r#type: "scale".into(),
                body: size.into_bytes().into(),
            };
            let mut answers = client.do_action(action).await.map_err(flight_error)?;
            while let Some(answer) = answers.message().await.context("scale failed")? {
                println!("{}", String::from_utf8_lossy(&answer.body));
            }
            Ok(())
        }
    }
}

/// Healthy when any of `addrs` answers within `timeout` (all are asked at once); the
/// error names every address and why it failed.
pub async fn health_any(addrs: &[String], timeout: std::time::Duration) -> Result<()> {
    let answers = futures::future::join_all(addrs.iter().map(|a| health(a, timeout))).await;
    if answers.iter().any(Result::is_ok) {
        return Ok(());
    }
    let why: Vec<String> = answers
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{e:#}"))
        .collect();
    anyhow::bail!("{}", why.join("; "))
}

/// `quiver health --addr`: exit 0 when a Quiver worker or coordinator at `addr`
/// answers. A coordinator with authentication refuses the unauthenticated call,
/// which still shows that it serves.
pub async fn health(addr: &str, timeout: std::time::Duration) -> Result<()> {
    use arrow_flight::flight_service_client::FlightServiceClient;
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .with_context(|| format!("invalid address '{addr}'"))?;
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let action = Action {
            r#type: quiver_proto::ACTION_HEALTH.into(),
            body: Default::default(),
        };
        match FlightServiceClient::new(channel).do_action(action).await {
            Ok(answer) => {
                let first = answer
                    .into_inner()
                    .message()
                    .await
                    .context("health answer")?;
                match first {
                    Some(r) if r.body.as_ref() == b"ok" => Ok(()),
                    other => anyhow::bail!("unexpected health answer: {other:?}"),
                }
            }
            Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(()),
            Err(status) => anyhow::bail!("{addr} answered: {}", status.message()),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .with_context(|| format!("no answer from {addr} within {timeout:?}"))?
}
