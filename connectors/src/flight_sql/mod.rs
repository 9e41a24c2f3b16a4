//! Flight SQL sources: one schema of another Flight SQL service (another Quiver,
//! Dremio, Spice, …) mounted as one Quiver schema.
//!
//! Tables are discovered with `CommandGetTables` (with their Arrow schemas).
//! Queries go through datafusion-federation: the largest subplan over the
//! service becomes one statement in the configured dialect, sent with
//! `CommandStatementQuery`; the endpoints of its answer are read in parallel
//! (`remote.rs`), also from the remote's own workers when it names them.

mod executor;
mod remote;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::CommandGetTables;
use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use futures::TryStreamExt;

use crate::config::FlightSqlSource;
use crate::remote_schema::{DiscoveredTable, Discovery, DiscoveryError, RemoteSchema};
use crate::ConnectorError;
pub use executor::{executor, FlightSqlExecutor};
use remote::Remote;

/// Schemas a service keeps for itself, never mounted by default.
const SYSTEM_SCHEMAS: [&str; 3] = ["information_schema", "pg_catalog", "system"];

/// Builds the client and the schema of one Flight SQL source.
pub async fn schema(
    source: &str,
    qualified: String,
    cfg: &FlightSqlSource,
) -> Result<(RemoteSchema, Vec<String>), ConnectorError> {
    let executor = executor(source, cfg)?;
    let remote = executor.remote.clone();
    let provider = crate::pushdown::provider(Arc::new(executor), None);
    let path = match (&cfg.remote_catalog, &cfg.remote_schema) {
        (Some(c), Some(s)) => vec![c.clone(), s.clone()],
        (None, Some(s)) => vec![s.clone()],
        _ => vec![],
    };
    let discovery = FlightDiscovery {
        remote,
        catalog: cfg.remote_catalog.clone(),
        schema: cfg.remote_schema.clone(),
    };
    let (schema, warnings) = RemoteSchema::new(
        qualified,
        "flightsql",
        path,
        provider,
        Box::new(discovery),
        Duration::from_secs(cfg.refresh_secs),
    )
    .await;
    Ok((schema, warnings))
}

struct FlightDiscovery {
    remote: Remote,
    catalog: Option<String>,
    schema: Option<String>,
}

/// One row of `CommandGetTables`.
struct Listed {
    catalog: Option<String>,
    schema: Option<String>,
    table: String,
    arrow: SchemaRef,
}

impl FlightDiscovery {
    async fn list(&self) -> Result<Vec<Listed>> {
        let command = CommandGetTables {
            catalog: self.catalog.clone(),
            // A LIKE pattern: `_` matches any character, so names are compared exactly below.
            db_schema_filter_pattern: self.schema.clone(),
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        };
        let _permit = self.remote.permit().await?;
        let info = self
            .remote
            .call("listing tables failed", |mut c| {
                let command = command.clone();
                async move { c.get_tables(command).await }
            })
            .await?;
        let batches: Vec<_> = self.remote.read(info).await?.try_collect().await?;
        let mut listed = vec![];
        for batch in batches {
            let column = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| {
                    self.remote
                        .error("bad table list", &format!("no column {name}"))
                })
            };
            let (catalogs, schemas, tables, schemas_ipc) = (
                column("catalog_name")?.as_string_opt::<i32>(),
                column("db_schema_name")?.as_string_opt::<i32>(),
                column("table_name")?.as_string_opt::<i32>(),
                column("table_schema")?.as_binary_opt::<i32>(),
            );
            let (Some(catalogs), Some(schemas), Some(tables), Some(ipc)) =
                (catalogs, schemas, tables, schemas_ipc)
            else {
                return Err(self
                    .remote
                    .error("bad table list", &"unexpected column types"));
            };
            for i in 0..batch.num_rows() {
                let text = |a: &datafusion::arrow::array::StringArray| {
                    (!a.is_null(i)).then(|| a.value(i).to_string())
                };
                let arrow =
                    datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer(ipc.value(i))
                        .map_err(|e| self.remote.error("bad table schema", &e))?;
                // Nullable everywhere: a remote's NOT NULL is not a promise Quiver can check.
                let fields: Vec<Field> = arrow
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect();
                listed.push(Listed {
                    catalog: text(catalogs),
                    schema: text(schemas),
                    table: tables.value(i).to_string(),
                    arrow: Arc::new(Schema::new(fields)),
                });
            }
        }
        Ok(listed)
    }
}

#[async_trait]
impl Discovery for FlightDiscovery {
    async fn tables(&self) -> Result<BTreeMap<String, DiscoveredTable>, DiscoveryError> {
        let listed = self.list().await.map_err(|e| match &e {
            DataFusionError::External(inner) if inner.is::<crate::Unreachable>() => {
                DiscoveryError::Unreachable(e.to_string())
            }
            _ => DiscoveryError::Failed(e.to_string()),
        })?;
        let wanted = |l: &Listed| {
            self.catalog
                .as_ref()
                .is_none_or(|c| l.catalog.as_ref() == Some(c))
                && match &self.schema {
                    Some(s) => l.schema.as_ref() == Some(s),
                    None => l
                        .schema
                        .as_deref()
                        .is_none_or(|s| !SYSTEM_SCHEMAS.contains(&s)),
                }
        };
        let listed: Vec<Listed> = listed.into_iter().filter(wanted).collect();
        let places: BTreeSet<(Option<String>, Option<String>)> = listed
            .iter()
            .map(|l| (l.catalog.clone(), l.schema.clone()))
            .collect();
        if self.schema.is_none() && places.len() > 1 {
            let names: Vec<String> = places
                .iter()
                .map(|(c, s)| {
                    format!(
                        "{}.{}",
                        c.as_deref().unwrap_or("?"),
                        s.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            return Err(DiscoveryError::Failed(format!(
                "the service has several schemas ({}): set remote_schema (and remote_catalog)",
                names.join(", ")
            )));
        }
        Ok(listed
            .into_iter()
            .map(|l| {
                (
                    l.table,
                    DiscoveredTable {
                        schema: l.arrow,
                        primary_key: vec![],
                    },
                )
            })
            .collect())
    }
}
