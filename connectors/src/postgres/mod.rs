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
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::common::TableReference;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion_federation::sql::{LogicalOptimizer, SQLFederationProvider, SQLTable, SQLTableSource};
use datafusion_federation::FederatedTableProviderAdaptor;
use deadpool_postgres::{Manager, Pool};
use tokio_postgres::NoTls;

use crate::config::PostgresSource;
use crate::ConnectorError;
use discovery::RemoteTable;
pub use executor::PostgresExecutor;

/// Rediscovery after an unknown table name is asked for at most this often.
const REDISCOVER_AFTER: Duration = Duration::from_secs(5);

pub struct PostgresSchema {
    qualified: String,
    remote_schema: String,
    provider: Arc<SQLFederationProvider>,
    pool: Pool,
    tables: RwLock<(BTreeMap<String, RemoteTable>, Option<Instant>)>,
}

impl std::fmt::Debug for PostgresSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSchema").field("schema", &self.qualified).finish()
    }
}

impl PostgresSchema {
    /// Builds the pool and discovers the tables. An unreachable server is a warning:
    /// the schema is registered empty and discovered again when a table is asked for.
    pub async fn connect(source: &str, qualified: String, cfg: &PostgresSource) -> Result<(Self, Vec<String>), ConnectorError> {
        let bad = |message: String| ConnectorError::Source { source_name: source.to_string(), message };
        let mut pg: tokio_postgres::Config =
            cfg.url.expose().parse().map_err(|e| bad(format!("invalid url: {e}")))?;
        pg.connect_timeout(Duration::from_secs(cfg.connect_timeout_secs));
        pg.application_name("quiver");
        if cfg.statement_timeout_secs > 0 {
            pg.options(format!("-c statement_timeout={}", cfg.statement_timeout_secs * 1000));
        }
        // Same host, port and database: same compute context, so joins push down together.
        let context = format!(
            "postgres://{:?}:{:?}/{}",
            pg.get_hosts(),
            pg.get_ports(),
            pg.get_dbname().unwrap_or_default()
        );
        let pool = Pool::builder(Manager::new(pg, NoTls))
            .max_size(cfg.pool_size.max(1))
            .wait_timeout(Some(Duration::from_secs(cfg.connect_timeout_secs.max(1) * 2)))
            .create_timeout(Some(Duration::from_secs(cfg.connect_timeout_secs.max(1))))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| bad(format!("cannot create connection pool: {e}")))?;
        let executor = PostgresExecutor { source: source.to_string(), context, pool: pool.clone() };
        let schema = Self {
            qualified,
            remote_schema: cfg.remote_schema.clone(),
            provider: Arc::new(SQLFederationProvider::new(Arc::new(executor))),
            pool,
            tables: RwLock::new((BTreeMap::new(), None)),
        };
        let mut warnings = vec![];
        if let Err(e) = schema.rediscover().await {
            warnings.push(format!("schema {}: {e}; tables will be discovered when the server answers", schema.qualified));
        }
        Ok((schema, warnings))
    }

    async fn rediscover(&self) -> Result<()> {
        let client = self.pool.get().await.map_err(|e| self.error(format!("cannot connect: {e}")))?;
        let found = discovery::tables(&client, &self.remote_schema).await.map_err(|e| self.error(format!("discovery failed: {e}")))?;
        let mut tables = self.tables.write().map_err(|_| self.error("lock poisoned".into()))?;
        *tables = (found, Some(Instant::now()));
        Ok(())
    }

    fn error(&self, message: String) -> DataFusionError {
        DataFusionError::External(format!("schema {} (postgres): {message}", self.qualified).into())
    }

    fn lookup(&self, name: &str) -> Option<RemoteTable> {
        self.tables.read().ok().and_then(|t| t.0.get(name).cloned())
    }
}

/// A PostgreSQL table as federation sees it: its remote name, its schema, and the
/// plan repairs applied before its subplan is unparsed.
#[derive(Debug)]
struct PgTable {
    reference: TableReference,
    schema: SchemaRef,
}

impl SQLTable for PgTable {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn table_reference(&self) -> TableReference {
        self.reference.clone()
    }
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn logical_optimizer(&self) -> Option<LogicalOptimizer> {
        Some(Box::new(crate::sql_fixups::pull_filters_above_semi_joins))
    }
}

#[async_trait]
impl SchemaProvider for PostgresSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.read().map(|t| t.0.keys().cloned().collect()).unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let mut table = self.lookup(name);
        if table.is_none() {
            let stale = self.tables.read().map(|t| t.1.is_none_or(|at| at.elapsed() > REDISCOVER_AFTER)).unwrap_or(true);
            if stale {
                self.rediscover().await?;
                table = self.lookup(name);
            }
        }
        let Some(table) = table else { return Ok(None) };
        let table = PgTable {
            reference: TableReference::partial(self.remote_schema.as_str(), table.name.as_str()),
            schema: table.schema.clone(),
        };
        let source = SQLTableSource::new_with_table(self.provider.clone(), Arc::new(table));
        Ok(Some(Arc::new(FederatedTableProviderAdaptor::new(Arc::new(source)))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }
}
