//! PostgreSQL sources: one PostgreSQL schema mounted as one Quiver schema.
//!
//! Tables are discovered from the server's catalog. Queries go through
//! datafusion-federation: the largest subplan whose tables all live in one
//! database becomes one PostgreSQL statement (DataFusion's unparser, Postgres
//! dialect), streamed back with binary COPY (see `executor.rs`).

pub mod changes;
mod copy;
mod discovery;
mod estimates;
mod executor;
mod partitions;
pub mod types;
pub mod write;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, Pool};
use tokio_postgres::NoTls;

use crate::config::PostgresSource;
use crate::remote_schema::{Discovery, RemoteSchema};
use crate::ConnectorError;
pub use executor::PostgresExecutor;

/// Builds the pool and the schema of one PostgreSQL source.
pub async fn schema(
    source: &str,
    qualified: String,
    cfg: &PostgresSource,
) -> Result<(RemoteSchema, Vec<String>), ConnectorError> {
    let (executor, pool) = executor(source, cfg)?;
    let partitioner = partitions::PageRanges {
        pool: pool.clone(),
        partitions: cfg.scan_partitions,
        min_bytes: cfg.partition_min_mb.saturating_mul(1 << 20),
        estimates: estimates::Estimates::new(pool.clone()),
    };
    let provider = crate::pushdown::provider(Arc::new(executor), Some(Arc::new(partitioner)));
    let discovery = PgDiscovery {
        pool: pool.clone(),
        schema: cfg.remote_schema.clone(),
    };
    let ttl = Duration::from_secs(cfg.refresh_secs);
    let (schema, warnings) = RemoteSchema::new(
        qualified,
        "postgres",
        vec![cfg.remote_schema.clone()],
        provider,
        Box::new(discovery),
        ttl,
    )
    .await;
    let schema = match cfg.writable {
        true => schema.with_writer(Arc::new(write::PgWriter {
            source: source.to_string(),
            pool,
            schema: cfg.remote_schema.clone(),
        })),
        false => schema,
    };
    Ok((schema, warnings))
}

/// The connection pool of one source and the executor that runs statements on it.
pub fn executor(
    source: &str,
    cfg: &PostgresSource,
) -> Result<(PostgresExecutor, Pool), ConnectorError> {
    let bad = |message: String| ConnectorError::Source {
        source_name: source.to_string(),
        message,
    };
    let mut pg: tokio_postgres::Config = cfg
        .url
        .expose()
        .parse()
        .map_err(|e| bad(format!("invalid url: {e}")))?;
    pg.connect_timeout(Duration::from_secs(cfg.connect_timeout_secs));
    pg.application_name("quiver");
    pg.options(session_options(pg.get_options(), cfg));
    // Same host, port and database: same compute context, so joins push down together.
    let context = format!(
        "postgres://{:?}:{:?}/{}",
        pg.get_hosts(),
        pg.get_ports(),
        pg.get_dbname().unwrap_or_default()
    );
    let manager = match tls(cfg, &mut pg).map_err(bad)? {
        Some(tls) => Manager::new(pg, tls),
        None => Manager::new(pg, NoTls),
    };
    let pool = Pool::builder(manager)
        .max_size(cfg.pool_size.max(1))
        .wait_timeout(Some(Duration::from_secs(
            cfg.connect_timeout_secs.max(1) * 2,
        )))
        .create_timeout(Some(Duration::from_secs(cfg.connect_timeout_secs.max(1))))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| bad(format!("cannot create connection pool: {e}")))?;
    Ok((
        PostgresExecutor {
            source: source.to_string(),
            context,
            pool: pool.clone(),
        },
        pool,
    ))
}

/// Server settings of every session: the statement timeout and, unless the source
/// is writable, read-only transactions. Options already in the URL are kept.
fn session_options(from_url: Option<&str>, cfg: &PostgresSource) -> String {
    let mut options: Vec<String> = from_url
        .filter(|o| !o.trim().is_empty())
        .map(|o| vec![o.to_string()])
        .unwrap_or_default();
    if cfg.statement_timeout_secs > 0 {
        options.push(format!(
            "-c statement_timeout={}",
            cfg.statement_timeout_secs * 1000
        ));
    }
    if !cfg.writable {
        options.push("-c default_transaction_read_only=on".into());
    }
    options.join(" ")
}

/// The TLS connector when the source asks for TLS: a CA file in the config, or
/// `sslmode=require` in the URL. Without either, connections are plaintext as before.
fn tls(
    cfg: &PostgresSource,
    pg: &mut tokio_postgres::Config,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use tokio_postgres::config::SslMode;
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.tls_ca_file {
        Some(path) => {
            pg.ssl_mode(SslMode::Require);
            let unreadable =
                |e: &dyn std::fmt::Display| format!("tls_ca_file {}: {e}", path.display());
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                roots
                    .add(cert.map_err(|e| unreadable(&e))?)
                    .map_err(|e| unreadable(&e))?;
            }
            if roots.is_empty() {
                return Err(unreadable(&"no certificate in the file"));
            }
        }
        None if pg.get_ssl_mode() == SslMode::Require => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "sslmode=require but the system has no CA certificates; set tls_ca_file".into(),
                );
            }
        }
        None => return Ok(None),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

struct PgDiscovery {
    pool: Pool,
    schema: String,
}

#[async_trait]
impl Discovery for PgDiscovery {
    async fn tables(
        &self,
    ) -> Result<
        BTreeMap<String, crate::remote_schema::DiscoveredTable>,
        crate::remote_schema::DiscoveryError,
    > {
        let client = self.pool.get().await.map_err(|e| {
            crate::remote_schema::DiscoveryError::Unreachable(crate::error_chain(&e))
        })?;
        discovery::tables(&client, &self.schema).await.map_err(|e| {
            crate::remote_schema::DiscoveryError::Failed(format!("discovery failed: {e}"))
        })
    }
}
