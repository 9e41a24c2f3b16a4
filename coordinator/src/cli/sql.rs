//! `quiver sql`: a Flight SQL client with one-shot and interactive modes. Results
//! print as a table, CSV or JSON lines, or go to a Parquet, CSV, Arrow or JSON
//! file; a live progress line shows on a terminal while a query runs; Ctrl-C
//! cancels the query (on the workers too), not the shell; `\d` lists tables and
//! `\d name` a table's columns.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::FlightEndpoint;
use futures::{StreamExt, TryStreamExt};
use rustyline::error::ReadlineError;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::output::{OutputFormat, Sink};

#[derive(clap::Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub connection: ConnectArgs,
    /// How results print: a table, CSV, or JSON (one object per line).
    #[arg(long, short = 'f', value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Write the result to this file instead of printing it; the extension picks
    /// the format: .parquet, .csv, .arrow (Arrow IPC file) or .json / .jsonl.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// No progress line, even on a terminal.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// The query; without it, an interactive shell starts.
    query: Option<String>,
}

/// How one statement's result is shown.
struct Show<'a> {
    format: OutputFormat,
    output: Option<&'a std::path::Path>,
    progress: bool,
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
    use std::io::IsTerminal;
    let mut client = connect(&args.connection).await?;
    let show = Show {
        format: args.format,
        output: args.output.as_deref(),
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    match &args.query {
        Some(q) => match run_statement(&mut client, q, &show).await {
            Err(e) if e.is::<Cancelled>() => {
                eprintln!("query cancelled");
                std::process::exit(130)
            }
            other => other,
        },
        None => repl(&mut client, &show).await,
    }
}

/// The user pressed Ctrl-C while a query ran.
#[derive(Debug, thiserror::Error)]
#[error("query cancelled")]
struct Cancelled;

/// Runs one statement (or a `\d` command) with progress and Ctrl-C, and shows its result.
async fn run_statement(
    client: &mut FlightSqlServiceClient<Channel>,
    input: &str,
    show: &Show<'_>,
) -> Result<()> {
    let started = Instant::now();
    let sql = match meta_command(input) {
        Some(sql) => sql?,
        None => input.to_string(),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let mut tagged = client.clone();
    tagged.set_header(quiver_coordinator::QUERY_ID_HEADER, id.clone());
    let mut sink = Sink::new(show.format, show.output)?;
    let fetch = stream_query(&mut tagged, &sql, &mut sink);
    let ticker = progress(client.clone(), id, started, show.progress);
    let outcome = tokio::select! {
        r = fetch => r,
        _ = ticker => unreachable!("the progress line never ends on its own"),
        _ = tokio::signal::ctrl_c() => Err(Cancelled.into()),
    };
    if show.progress {
        // Clear the progress line before anything else prints.
        eprint!("\r\x1b[2K");
    }
    outcome?;
    let writes = ["insert", "copy", "create"].iter().any(|w| {
        sql.trim_start()
            .get(..w.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(w))
    });
    if let Some(written) = sink.rows_written().filter(|_| writes) {
        println!(
            "{written} row{} written",
            if written == 1 { "" } else { "s" }
        );
        eprintln!("({:.3}s)", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let rows = sink.finish()?;
    let what = match show.output {
        Some(path) => format!("written to {}", path.display()),
        None => String::new(),
    };
    eprintln!(
        "({rows} row{} in {:.3}s{}{what})",
        if rows == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64(),
        if what.is_empty() { "" } else { ", " }
    );
    Ok(())
}

/// Redraws the progress line every quarter second (after the first half second),
/// from the coordinator's `progress` action.
async fn progress(
    mut client: FlightSqlServiceClient<Channel>,
    id: String,
    started: Instant,
    on: bool,
) {
    if !on {
        return futures::future::pending().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut tick = 0usize;
    loop {
        let action = arrow_flight::Action {
            r#type: quiver_coordinator::ACTION_PROGRESS.into(),
            body: id.clone().into_bytes().into(),
        };
        let line = match client.do_action(action).await {
            Ok(mut answers) => match answers.next().await {
                Some(Ok(answer)) => progress_line(&answer.body, started),
                _ => None,
            },
            Err(_) => None,
        };
        let line = line.unwrap_or_else(|| format!("{:.1} s", started.elapsed().as_secs_f64()));
        eprint!("\r\x1b[2K{} {line}", spinner[tick % spinner.len()]);
        tick += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `3.2 s · running · 1,234 rows · 5/8 tasks in 2 stages`
fn progress_line(body: &[u8], started: Instant) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut line = format!(
        "{:.1} s · {} · {} rows",
        started.elapsed().as_secs_f64(),
        v["state"].as_str()?,
        v["rows"].as_u64()?
    );
    let (done, all, stages) = (
        v["fragments_done"].as_u64()?,
        v["fragments"].as_u64()?,
        v["stages"].as_u64()?,
    );
    if all > 0 {
        line.push_str(&format!(
            " · {done}/{all} tasks in {stages} stage{}",
            if stages == 1 { "" } else { "s" }
        ));
    }
    Some(line)
}

/// `\d` / `\dt` (tables) and `\d name` (a table's columns) as SQL over
/// `information_schema`; None for anything else.
fn meta_command(input: &str) -> Option<Result<String>> {
    let input = input.trim().trim_end_matches(';').trim();
    let rest = input
        .strip_prefix("\\dt")
        .or_else(|| input.strip_prefix("\\d"))?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return Some(Err(anyhow::anyhow!(
            "unknown command '{input}': \\d lists tables, \\d name shows a table's columns"
        )));
    }
    let name = rest.trim();
    let quote = |s: &str| format!("'{}'", s.trim_matches('"').replace('\'', "''"));
    if name.is_empty() {
        return Some(Ok("SELECT table_catalog AS catalog, table_schema AS schema, table_name AS name, table_type AS type \
             FROM information_schema.tables WHERE table_schema <> 'information_schema' ORDER BY 1, 2, 3"
            .to_string()));
    }
    let parts: Vec<&str> = name.split('.').collect();
    let mut filter = format!("table_name = {}", quote(parts[parts.len() - 1]));
    if parts.len() >= 2 {
        filter.push_str(&format!(
            " AND table_schema = {}",
            quote(parts[parts.len() - 2])
        ));
    }
    if parts.len() >= 3 {
        filter.push_str(&format!(" AND table_catalog = {}", quote(parts[0])));
    }
    Some(Ok(format!(
        "SELECT column_name AS column, data_type AS type, is_nullable AS nullable FROM information_schema.columns \
         WHERE {filter} ORDER BY table_catalog, table_schema, ordinal_position"
    )))
}

/// Runs one statement and hands each batch to `sink` as it arrives.
async fn stream_query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
    sink: &mut Sink,
) -> Result<()> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(flight_error)?;
    let mut batches = result_batches(client, info).await?;
    while let Some(batch) = batches.next().await {
        sink.write(&batch?)?;
    }
    Ok(())
}

/// The batches of every endpoint of a result. An unordered result of several
/// endpoints (`workers.client_endpoints`: one per partition, on its worker) is
/// fetched in parallel, each endpoint decoded on its own task; an ordered one
/// endpoint after another.
async fn result_batches(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch>>> {
    if info.ordered || info.endpoint.len() <= 1 {
        let mut streams = Vec::new();
        for endpoint in info.endpoint {
            streams.push(fetch(client, endpoint).await?.map_err(flight_error));
        }
        return Ok(futures::stream::iter(streams).flatten().boxed());
    }
    // Every stream is opened first (on the connection it belongs to), then each is
    // read and decoded on its own task. A few batches in flight per endpoint keep
    // every stream busy, and a slow sink holds the senders back.
    let mut streams = Vec::new();
    for endpoint in info.endpoint {
        streams.push(fetch(client, endpoint).await?);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2 * streams.len());
    for mut stream in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                let failed = batch.is_err();
                // The receiver is gone when the query was cancelled or failed.
                if tx.send(batch.map_err(flight_error)).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    drop(tx);
    Ok(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
}

pub async fn connect(args: &ConnectArgs) -> Result<FlightSqlServiceClient<Channel>> {
    let channel = channel(&args.host, args.tls_ca.as_deref()).await?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(user) = &args.user {
        let password = args.password.clone().unwrap_or_default();
        client
            .handshake(user, &password)
            .await
            .context("login failed")?;
    }
    Ok(client)
}

/// A connection to `host` (`host:port`, `grpc://`, `grpc+tcp://`, `grpc+tls://`, `http(s)://`),
/// over TLS trusting the system's roots and `ca` when the scheme says so.
async fn channel(host: &str, ca: Option<&std::path::Path>) -> Result<Channel> {
    let (tls, address) = normalize(host);
    let mut endpoint =
        Endpoint::from_shared(address).with_context(|| format!("invalid host '{host}'"))?;
    if tls {
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(config)?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {host}"))
}

/// Returns (tls, http(s) URL).
fn normalize(host: &str) -> (bool, String) {
    if let Some(rest) = host
        .strip_prefix("grpc+tls://")
        .or_else(|| host.strip_prefix("https://"))
    {
        (true, format!("https://{rest}"))
    } else if let Some(rest) = host
        .strip_prefix("grpc://")
        .or_else(|| host.strip_prefix("grpc+tcp://"))
    {
        (false, format!("http://{rest}"))
    } else if host.starts_with("http://") {
        (false, host.to_string())
    } else {
        (false, format!("http://{host}"))
    }
}

/// Runs one statement and collects its result.
pub async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(flight_error)?;
    result_batches(client, info).await?.try_collect().await
}

/// The batches of one endpoint: from the coordinator, or from the worker its
/// location names when the server hands results out on the workers
/// (`workers.client_endpoints`).
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    endpoint: FlightEndpoint,
) -> Result<FlightRecordBatchStream> {
    let ticket = endpoint
        .ticket
        .context("server sent an endpoint without a ticket")?;
    // An empty location, or the reuse scheme, means the connection the FlightInfo came over.
    let location = endpoint
        .location
        .iter()
        .map(|l| l.uri.as_str())
        .find(|u| !u.is_empty() && !u.starts_with("arrow-flight-reuse-connection:"));
    let Some(uri) = location else {
        return client.do_get(ticket).await.map_err(flight_error);
    };
    let channel = channel(uri, None)
        .await
        .context("cannot reach the worker that serves part of the result")?;
    let mut worker = FlightServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let stream = worker
        .do_get(ticket)
        .await
        .map_err(|s| anyhow::anyhow!("{} (from the worker at {uri})", s.message()))?
        .into_inner();
    Ok(FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(FlightError::from),
    ))
}

/// The server's message without the transport's wrapping.
pub fn flight_error(e: arrow_flight::error::FlightError) -> anyhow::Error {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => anyhow::anyhow!("{}", status.message()),
        other => anyhow::anyhow!("{other}"),
    }
}

pub fn print_result(batches: &[RecordBatch], started: Instant) -> Result<()> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if !batches.is_empty() {
        println!("{}", pretty_format_batches(batches)?);
    }
    println!(
        "({rows} row{} in {:.3}s)",
        if rows == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn repl(client: &mut FlightSqlServiceClient<Channel>, show: &Show<'_>) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".quiver_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprintln!("Quiver SQL shell. End statements with ';'. \\d lists tables, \\d name shows columns, \\q quits; Ctrl-C cancels a running query.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "quiver> "
        } else {
            "     -> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit") {
                    break;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                let meta = buffer.trim_start().starts_with('\\');
                if !trimmed.ends_with(';') && !meta {
                    continue;
                }
                let sql = std::mem::take(&mut buffer);
                let _ = editor.add_history_entry(sql.trim());
                match run_statement(client, sql.trim().trim_end_matches(';'), show).await {
                    Ok(()) => {}
                    Err(e) if e.is::<Cancelled>() => eprintln!("query cancelled"),
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
    use super::{meta_command, normalize};

    #[test]
    fn describe_commands_become_information_schema_queries() {
        assert!(meta_command("\\d")
            .expect("a command")
            .expect("sql")
            .contains("information_schema.tables"));
        assert!(meta_command("\\dt;")
            .expect("a command")
            .expect("sql")
            .contains("information_schema.tables"));
        let cols = meta_command("\\d tpch.lineitem")
            .expect("a command")
            .expect("sql");
        assert!(
            cols.contains("table_name = 'lineitem' AND table_schema = 'tpch'"),
            "{cols}"
        );
        assert!(meta_command("\\d x'y")
            .expect("cmd")
            .expect("sql")
            .contains("'x''y'"));
        assert!(meta_command("\\dx").expect("a command").is_err());
        assert!(meta_command("SELECT 1").is_none());
    }

    #[test]
    fn host_forms() {
        assert_eq!(
            normalize("127.0.0.1:50051"),
            (false, "http://127.0.0.1:50051".into())
        );
        assert_eq!(normalize("grpc://h:1"), (false, "http://h:1".into()));
        assert_eq!(normalize("grpc+tls://h:1"), (true, "https://h:1".into()));
    }
}
