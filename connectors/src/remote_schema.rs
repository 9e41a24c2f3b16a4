//! The schema of a SQL database source (PostgreSQL, MySQL): tables discovered from
//! the server's catalog, each exposed to datafusion-federation so that subplans
//! over one database are pushed down to it as one statement.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::exec_err;
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result};
use datafusion_federation::sql::{
    LogicalOptimizer, SQLFederationProvider, SQLTable, SQLTableSource,
};
use datafusion_federation::FederatedTableProviderAdaptor;

/// Rediscovery after an unknown table name is asked for happens at most this often.
const REDISCOVER_AFTER: Duration = Duration::from_secs(5);

/// One discovered table or view.
#[derive(Debug, Clone)]
pub struct DiscoveredTable {
    pub schema: SchemaRef,
    /// Primary-key columns in key order; empty when there is none (views).
    pub primary_key: Vec<String>,
}

/// Lists the tables of one remote schema with their Arrow schemas and keys.
#[async_trait]
pub trait Discovery: Send + Sync {
    async fn tables(
        &self,
    ) -> std::result::Result<BTreeMap<String, DiscoveredTable>, DiscoveryError>;
}

/// Why tables could not be listed.
#[derive(Debug)]
pub enum DiscoveryError {
    /// The source cannot be reached.
    Unreachable(String),
    Failed(String),
}

pub struct RemoteSchema {
    qualified: String,
    /// Tables are rediscovered when the cached list is older than this.
    ttl: Duration,
    kind: &'static str,
    /// Where the tables live in the database: `[catalog, schema]`, `[schema]` or `[]`.
    remote_path: Vec<String>,
    provider: Arc<SQLFederationProvider>,
    discovery: Box<dyn Discovery>,
    /// Set when the source is writable.
    writer: Option<Arc<dyn crate::writable::TableWriter>>,
    tables: RwLock<(BTreeMap<String, DiscoveredTable>, Option<Instant>)>,
}

impl std::fmt::Debug for RemoteSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSchema")
            .field("schema", &self.qualified)
            .field("kind", &self.kind)
            .finish()
    }
}

impl RemoteSchema {
    /// Discovers the tables now. An unreachable server is a warning, not an error:
    /// the schema starts empty and is discovered again when a table is asked for.
    pub async fn new(
        qualified: String,
        kind: &'static str,
        remote_path: Vec<String>,
        provider: Arc<SQLFederationProvider>,
        discovery: Box<dyn Discovery>,
        ttl: Duration,
    ) -> (Self, Vec<String>) {
        let schema = Self {
            qualified,
            ttl,
            kind,
            remote_path,
            provider,
            discovery,
            writer: None,
            tables: RwLock::new((BTreeMap::new(), None)),
        };
        let mut warnings = vec![];
        if let Err(e) = schema.rediscover().await {
            warnings.push(format!(
                "{e}; tables will be discovered when the server answers"
            ));
        }
        (schema, warnings)
    }

    /// `catalog.schema` of this source.
    pub fn name(&self) -> &str {
        &self.qualified
    }

    /// Takes writes through `writer` (a source with `writable = true`).
    pub fn with_writer(mut self, writer: Arc<dyn crate::writable::TableWriter>) -> Self {
        self.writer = Some(writer);
        self
    }

    pub fn is_writable(&self) -> bool {
        self.writer.is_some()
    }

    /// `postgres`, `mysql`, `sqlite` or `flightsql`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The target of a write that creates table `name` with `schema`; None when
    /// the source is read-only.
    pub fn new_table(
        self: &Arc<Self>,
        name: &str,
        schema: SchemaRef,
    ) -> Option<Arc<dyn TableProvider>> {
        let writer = self.writer.clone()?;
        let this = Arc::downgrade(self);
        // Once the table exists, the next lookup lists the tables again and finds it.
        let after = crate::writable::AfterWrite(Arc::new(move || {
            if let Some(schema) = this.upgrade() {
                {
                    let mut tables = schema.tables.write();
                    tables.1 = None;
                }
            }
        }));
        let table = crate::writable::WritableTable::new(
            format!("{}.{name}", self.qualified),
            name.to_string(),
            schema,
            writer,
            true,
        );
        Some(Arc::new(table.with_after(after)))
    }

    /// Discovers the tables again now (the REFRESH statement and action); returns how many.
    pub async fn refresh(&self) -> Result<usize> {
        self.rediscover().await?;
        Ok(self.table_names().len())
    }

    async fn rediscover(&self) -> Result<()> {
        let found = self.discovery.tables().await.map_err(|e| match e {
            DiscoveryError::Unreachable(cause) => {
                DataFusionError::External(Box::new(crate::Unreachable(format!(
                    "schema {} ({}): cannot connect: {cause}",
                    self.qualified, self.kind
                ))))
            }
            DiscoveryError::Failed(message) => self.error(message),
        })?;
        let mut tables = self.tables.write();
        *tables = (found, Some(Instant::now()));
        Ok(())
    }

    fn error(&self, message: String) -> DataFusionError {
        DataFusionError::External(
            format!("schema {} ({}): {message}", self.qualified, self.kind).into(),
        )
    }

    fn lookup(&self, name: &str) -> Option<SchemaRef> {
        self.tables.read().0.get(name).map(|d| d.schema.clone())
    }

    /// Primary keys of the cached tables (all, or the one named), as (table, columns in key order).
    pub fn primary_keys(&self, table: Option<&str>) -> Vec<(String, Vec<String>)> {
        let tables = self.tables.read();
        tables
            .0
            .iter()
            .filter(|(name, d)| {
                table.is_none_or(|t| t == name.as_str()) && !d.primary_key.is_empty()
            })
            .map(|(name, d)| (name.clone(), d.primary_key.clone()))
            .collect()
    }
}

#[async_trait]
impl SchemaProvider for RemoteSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.read().0.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let expired = self
            .tables
            .read()
            .1
            .is_some_and(|at| at.elapsed() > self.ttl);
        if expired {
            // A failed refresh keeps serving the cached tables; the query itself will
            // report an unreachable server.
            if let Err(e) = self.rediscover().await {
                tracing::warn!(schema = %self.qualified, error = %e, "table list refresh failed");
            }
        }
        let mut schema = self.lookup(name);
        if schema.is_none() {
            let stale = self
                .tables
                .read()
                .1
                .is_none_or(|at| at.elapsed() > REDISCOVER_AFTER);
            if stale {
                self.rediscover().await?;
                schema = self.lookup(name);
            }
        }
        let Some(schema) = schema else {
            return Ok(None);
        };
        let table = RepairedTable {
            reference: match self.remote_path.as_slice() {
                [catalog, schema] => TableReference::full(catalog.as_str(), schema.as_str(), name),
                [schema] => TableReference::partial(schema.as_str(), name),
                _ => TableReference::bare(name),
            },
            schema: schema.clone(),
        };
        let source = Arc::new(SQLTableSource::new_with_table(
            self.provider.clone(),
            Arc::new(table),
        ));
        Ok(Some(match &self.writer {
            Some(writer) => {
                let display = format!("{}.{name}", self.qualified);
                let target = crate::writable::WritableTable::new(
                    display,
                    name.to_string(),
                    schema,
                    writer.clone(),
                    false,
                );
                Arc::new(FederatedTableProviderAdaptor::new_with_provider(
                    source,
                    Arc::new(target),
                ))
            }
            None => Arc::new(FederatedTableProviderAdaptor::new(source)),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }
}

/// A remote table as federation sees it: its remote name, its schema, and the plan
/// repairs applied before a subplan over it is unparsed.
#[derive(Debug)]
struct RepairedTable {
    reference: TableReference,
    schema: SchemaRef,
}

impl SQLTable for RepairedTable {
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

/// Casts a batch decoded from the database's own types to the schema the plan
/// expects (e.g. PostgreSQL's numeric average into DataFusion's float64).
pub fn cast_to(
    batch: datafusion::arrow::array::RecordBatch,
    target: &SchemaRef,
) -> Result<datafusion::arrow::array::RecordBatch> {
    use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
    if batch.num_columns() != target.fields().len() {
        return exec_err!(
            "pushed-down query returned {} columns, expected {}",
            batch.num_columns(),
            target.fields().len()
        );
    }
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &options,
    )?)
}
