//! PostgreSQL sources: one PostgreSQL schema mounted as one Quiver schema.
//!
//! Tables are discovered from the server's catalog. Queries go through
//! datafusion-federation: the largest subplan whose tables all live in one
//! database becomes one PostgreSQL statement (DataFusion's unparser, Postgres
//! dialect), streamed back with binary COPY (see `executor.rs`).

mod copy;
mod discovery;
mod executor;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion_federation::sql::SQLFederationProvider;
use deadpool_postgres::{Manager, Pool};
use tokio_postgres::NoTls;

use crate::config::PostgresSource;
use crate::remote_schema::{Discovery, RemoteSchema};
use crate::ConnectorError;
pub use executor::PostgresExecutor;

/// Builds the pool and the schema of one PostgreSQL source.
pub async fn schema(source: &str, qualified: String, cfg: &PostgresSource) -> Result<(RemoteSchema, Vec<String>), ConnectorError> {
    let bad = |message: String| ConnectorError::Source { source_name: source.to_string(), message };
    let mut pg: tokio_postgres::Config = cfg.url.expose().parse().map_err(|e| bad(format!("invalid url: {e}")))?;
    pg.connect_timeout(Duration::from_secs(cfg.connect_timeout_secs));
    pg.application_name("quiver");
    if cfg.statement_timeout_secs > 0 {
        pg.options(format!("-c statement_timeout={}", cfg.statement_timeout_secs * 1000));
    }
    // Same host, port and database: same compute context, so joins push down together.
    let context = format!("postgres://{:?}:{:?}/{}", pg.get_hosts(), pg.get_ports(), pg.get_dbname().unwrap_or_default());
    let pool = Pool::builder(Manager::new(pg, NoTls))
        .max_size(cfg.pool_size.max(1))
        .wait_timeout(Some(Duration::from_secs(cfg.connect_timeout_secs.max(1) * 2)))
        .create_timeout(Some(Duration::from_secs(cfg.connect_timeout_secs.max(1))))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| bad(format!("cannot create connection pool: {e}")))?;
    let executor = PostgresExecutor { source: source.to_string(), context, pool: pool.clone() };
    let provider = Arc::new(SQLFederationProvider::new(Arc::new(executor)));
    let discovery = PgDiscovery { pool, schema: cfg.remote_schema.clone() };
    Ok(RemoteSchema::new(qualified, "postgres", cfg.remote_schema.clone(), provider, Box::new(discovery), std::time::Duration::from_secs(cfg.refresh_secs)).await)
}

struct PgDiscovery {
    pool: Pool,
    schema: String,
}

#[async_trait]
impl Discovery for PgDiscovery {
    async fn tables(&self) -> Result<BTreeMap<String, SchemaRef>, String> {
        let client = self.pool.get().await.map_err(|e| format!("cannot connect: {e}"))?;
        discovery::tables(&client, &self.schema).await.map_err(|e| format!("discovery failed: {e}"))
    }
}
