//! `quiver sql`: a Flight SQL client with one-shot and interactive modes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use rustyline::error::ReadlineError;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(clap::Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub connection: ConnectArgs,
    /// The query; without it, an interactive shell starts.
    query: Option<String>,
}

/// How to reach and log in to a Quiver server.
#[derive(clap::Args)]
pub struct ConnectArgs {
    /// Server address: host:port, grpc://host:port or grpc+tls://host:port.
    #[arg(long, default_value = "127.0.0.1:50051", env = "QUIVER_HOST")]
    host: String,
    #[arg(long, short, env = "QUIVER_USER")]
    user: Option<String>,
    /// Password (prefer the QUIVER_PASSWORD environment variable).
    #[arg(long, env = "QUIVER_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// PEM file of the CA that signed the server's certificate (TLS).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

pub async fn run(args: SqlArgs) -> Result<()> {
    let mut client = connect(&args.connection).await?;
    match &args.query {
        Some(q) => run_one(&mut client, q).await,
        None => repl(&mut client).await,
    }
}

pub async fn connect(args: &ConnectArgs) -> Result<FlightSqlServiceClient<Channel>> {
    let (tls, address) = normalize(&args.host);
    let mut endpoint = Endpoint::from_shared(address.clone()).with_context(|| format!("invalid host '{}'", args.host))?;
    if tls {
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &args.tls_ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(config)?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("cannot connect to {}", args.host))?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(user) = &args.user {
        let password = args.password.clone().unwrap_or_default();
        client.handshake(user, &password).await.context("login failed")?;
    }
    Ok(client)
}

/// Returns (tls, http(s) URL).
fn normalize(host: &str) -> (bool, String) {
    if let Some(rest) = host.strip_prefix("grpc+tls://").or_else(|| host.strip_prefix("https://")) {
        (true, format!("https://{rest}"))
    } else if let Some(rest) = host.strip_prefix("grpc://").or_else(|| host.strip_prefix("grpc+tcp://")) {
        (false, format!("http://{rest}"))
    } else if host.starts_with("http://") {
        (false, host.to_string())
    } else {
        (false, format!("http://{host}"))
    }
}

/// Runs one statement and collects its result.
pub async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<Vec<RecordBatch>> {
    let info = client.execute(sql.to_string(), None).await.map_err(flight_error)?;
    let mut batches = vec![];
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.context("server sent an endpoint without a ticket")?;
        let stream = client.do_get(ticket).await.map_err(flight_error)?;
        let mut part: Vec<RecordBatch> = stream.try_collect().await.map_err(flight_error)?;
        batches.append(&mut part);
    }
    Ok(batches)
}

/// The server's message without the transport's wrapping.
pub fn flight_error(e: arrow_flight::error::FlightError) -> anyhow::Error {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => anyhow::anyhow!("{}", status.message()),
        other => anyhow::anyhow!("{other}"),
    }
}

async fn run_one(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<()> {
    let started = Instant::now();
    let batches = query(client, sql).await?;
    print_result(&batches, started)
}

pub fn print_result(batches: &[RecordBatch], started: Instant) -> Result<()> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if !batches.is_empty() {
        println!("{}", pretty_format_batches(batches)?);
    }
    println!("({rows} row{} in {:.3}s)", if rows == 1 { "" } else { "s" }, started.elapsed().as_secs_f64());
    Ok(())
}

async fn repl(client: &mut FlightSqlServiceClient<Channel>) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".quiver_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprintln!("Quiver SQL shell. End statements with ';'. \\q quits.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { "quiver> " } else { "     -> " };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit") {
                    break;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if !trimmed.ends_with(';') {
                    continue;
                }
                let sql = std::mem::take(&mut buffer);
                let _ = editor.add_history_entry(sql.trim());
                let started = Instant::now();
                match query(client, sql.trim().trim_end_matches(';')).await {
                    Ok(batches) => print_result(&batches, started)?,
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn host_forms() {
        assert_eq!(normalize("127.0.0.1:50051"), (false, "http://127.0.0.1:50051".into()));
        assert_eq!(normalize("grpc://h:1"), (false, "http://h:1".into()));
        assert_eq!(normalize("grpc+tls://h:1"), (true, "https://h:1".into()));
    }
}
