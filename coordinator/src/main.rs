//! `quiver`: serve the coordinator, run a worker, or query a server.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "quiver",
    version,
    about = "Quiver: one SQL query over many data sources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator. Without --config: a demo over generated TPC-H data with 2 embedded workers.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Where the demo keeps its generated data.
        #[arg(long, default_value = "quiver-data")]
        data_dir: PathBuf,
        /// TPC-H scale factor of the demo data.
        #[arg(long, default_value_t = 0.1)]
        scale: f64,
        /// Overrides server.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Overrides server.postgres_listen (the PostgreSQL protocol).
        #[arg(long)]
        postgres_listen: Option<SocketAddr>,
        /// Overrides server.http_listen (web console, /v1/sql, /metrics).
        #[arg(long)]
        http_listen: Option<SocketAddr>,
    },
    /// Run SQL against a Quiver server: one query, or an interactive shell without one.
    Sql(cli::sql::SqlArgs),
    /// List a coordinator's workers, show its scaling decisions, or set the number of workers.
    Workers(cli::workers::WorkersArgs),
    /// Exit 0 when a worker or coordinator answers at one of --addr (container health
    /// checks). The default probes both roles' ports, so one image's check fits either.
    Health {
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "127.0.0.1:50061,127.0.0.1:50051"
        )]
        addr: Vec<String>,
        #[arg(long, default_value_t = 3.0)]
        timeout_secs: f64,
    },
    /// Run a worker that executes fragments for a coordinator (`workers.mode = "static"`).
    Worker {
        #[arg(long, default_value = "0.0.0.0:50061")]
        listen: SocketAddr,
        /// The coordinator's config file: its sources' object stores and database connections.
        /// Without it, the document in QUIVER_CONFIG_TOML if set (Docker workers get it there).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Name shown in stats and logs (default: the listen address).
        #[arg(long)]
        id: Option<String>,
        /// Serve without cluster authentication (anyone who reaches the port may run plans).
        #[arg(long)]
        allow_insecure: bool,
        /// On SIGTERM: how long to finish running fragments (and keep serving their
        /// exchange outputs) before stopping. Keep it below Kubernetes'
        /// terminationGracePeriodSeconds.
        #[arg(long, default_value_t = 30.0)]
        drain_grace_secs: f64,
    },
    /// Print an argon2id hash of a password, for `[server.auth.users]` in the config.
    /// Reads the password from the terminal (without echo), or one line of standard input.
    Passwd {
        /// Print a SCRAM-SHA-256 verifier instead (PostgreSQL's format), so the user
        /// can log in with SCRAM on the PostgreSQL port too.
        #[arg(long)]
        scram: bool,
    },
    /// Generate TPC-H data as Parquet (one folder per table).
    GenTpch {
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for the process: ring, as Quiver's own TLS code uses.
    // deltalake's HTTP client also links aws-lc, and with two compiled in, code that
    // asks rustls for the default (tonic's TLS) would not know which to take.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Large stacks: planning and evaluating what balancing leaves deep (up to
    // the coordinator's `balance::MAX_DEPTH` levels) recurse. Only touched pages cost memory.
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(STACK_BYTES)
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| match cli.command {
            Command::Sql(args) => runtime.block_on(cli::sql::run(args)),
            Command::Workers(args) => runtime.block_on(cli::workers::run(args)),
            Command::Passwd { scram } => passwd(scram),
            Command::Health { addr, timeout_secs } => runtime.block_on(cli::workers::health_any(
                &addr,
                std::time::Duration::from_secs_f64(timeout_secs),
            )),
            command => {
                init_logging();
                runtime.block_on(run_server(command))
            }
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line, no backtrace: this is for people.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn passwd(scram: bool) -> Result<()> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == again, "the passwords differ");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    anyhow::ensure!(!password.is_empty(), "empty password");
    let line = match scram {
        true => quiver_coordinator::ScramVerifier::new(&password)
            .map_err(anyhow::Error::msg)?
            .to_string(),
        false => quiver_coordinator::hash_password(&password).map_err(anyhow::Error::msg)?,
    };
    println!("{line}");
    Ok(())
}

/// Stack of every runtime thread.
const STACK_BYTES: usize = 256 << 20;

fn init_logging() {
    let filter = EnvFilter::try_from_env("QUIVER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run_server(command: Command) -> Result<()> {
    match command {
        Command::Serve {
            config,
            data_dir,
            scale,
            listen,
            postgres_listen,
            http_listen,
        } => {
            let mut config = match config {
                Some(path) => quiver_coordinator::QuiverConfig::load(&path)?,
                None => cli::demo::config(&data_dir, scale)?,
            };
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            config.server.postgres_listen = postgres_listen.or(config.server.postgres_listen);
            config.server.http_listen = http_listen.or(config.server.http_listen);
            let database = config
                .server
                .default_catalog
                .clone()
                .unwrap_or_else(|| "quiver".into());
            let running = quiver_coordinator::start(config).await?;
            // The other doors first: the Flight SQL line below is the readiness line.
            if let Some(addr) = running.http {
                let scheme = if running.tls { "https" } else { "http" };
                println!("quiver: web console at {scheme}://{addr}/");
            }
            if let Some(addr) = running.postgres {
                println!("quiver: PostgreSQL listening on postgres://{addr}/{database}");
            }
            if let Some(addr) = running.keda {
                println!("quiver: KEDA external scaler on grpc://{addr}");
            }
            let scheme = if running.tls { "grpc+tls" } else { "grpc" };
            // Machine-readable readiness line: scripts and tests wait for it.
            println!(
                "quiver: Flight SQL listening on {scheme}://{}",
                running.addr
            );
            running.serve_until_signal().await?;
            // Embedded workers wrote their exchange files in this process's directory.
            quiver_worker::exchange::store().remove_all();
        }
        Command::Worker {
            listen,
            config,
            id,
            allow_insecure,
            drain_grace_secs,
        } => {
            let config = match (config, std::env::var("QUIVER_CONFIG_TOML")) {
                (Some(path), _) => quiver_coordinator::QuiverConfig::load(&path)?,
                (None, Ok(text)) => {
                    quiver_coordinator::QuiverConfig::parse(&text, std::path::Path::new("/"))
                        .map_err(|e| anyhow::anyhow!("invalid QUIVER_CONFIG_TOML: {e}"))?
                }
                (None, Err(_)) => quiver_coordinator::QuiverConfig::default(),
            };
            let mut cluster = config.cluster.clone();
            cluster.allow_insecure |= allow_insecure;
            let secret =
                quiver_coordinator::worker_cluster_secret(&cluster).map_err(anyhow::Error::msg)?;
            let join_keys = config.workers.join_keys();
            // The Docker pool overrides `auto` for its containers, which share one host.
            let compression = match std::env::var(quiver_worker::LinkCompression::ENV) {
                Ok(word) => word.parse().map_err(anyhow::Error::msg)?,
                Err(_) => config.workers.exchange_compression,
            };
            let sources = config.source;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let addr = listener.local_addr()?;
            let codec = quiver_coordinator::quiver_codec(&sources);
            let options = quiver_worker::WorkerOptions {
                id: id.unwrap_or_else(|| addr.to_string()),
                sources,
                cluster: secret.map(|s| s.key),
                join_keys,
                compression,
                ..Default::default()
            };
            let service = quiver_worker::WorkerService::new(options, codec)?;
            println!("quiver: worker listening on http://{addr}");
            // SIGTERM drains first (new fragments refused, running ones finished),
            // then the server stops.
            let drainer = service.clone();
            let grace = std::time::Duration::from_secs_f64(drain_grace_secs.max(0.0));
            let shutdown = async move {
                quiver_coordinator::shutdown_signal().await;
                drainer.drain(grace).await;
            };
            quiver_worker::serve(listener, service, shutdown).await?;
            quiver_worker::exchange::store().remove_all();
        }
        Command::GenTpch { scale, out } => {
            let started = std::time::Instant::now();
            let made =
                tokio::task::spawn_blocking(move || quiver_coordinator::tpch::ensure(&out, scale))
                    .await??;
            if made {
                eprintln!(
                    "generated TPC-H scale {scale} in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            } else {
                eprintln!("TPC-H data already present");
            }
        }
        Command::Sql(_) | Command::Workers(_) | Command::Health { .. } | Command::Passwd { .. } => {
            unreachable!("handled in main")
        }
    }
    Ok(())
}
