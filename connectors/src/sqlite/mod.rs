//! SQLite sources: one database file mounted as one Quiver schema.
//!
//! Tables and views are discovered from `sqlite_schema` and `pragma_table_info`;
//! column types follow the declared types (see `types.rs`). Queries go through
//! datafusion-federation like PostgreSQL's: the largest subplan over the file
//! becomes one statement in SQLite's dialect, run on a blocking thread
//! (`executor.rs`). The file is opened read-only unless the source is writable.

mod executor;
pub mod types;
mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use rusqlite::{Connection, OpenFlags};

use crate::config::SqliteSource;
use crate::remote_schema::{DiscoveredTable, Discovery, DiscoveryError, RemoteSchema};
use crate::ConnectorError;
pub use executor::SqliteExecutor;

/// Opens connections to one file, read-only or not.
#[derive(Debug, Clone)]
pub(crate) struct Opener {
    path: PathBuf,
    writable: bool,
    busy_timeout: Duration,
}

impl Opener {
    pub(crate) fn open(&self) -> Result<Connection, String> {
        let mode = if self.writable {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        };
        // Never create the file: a missing database is a configuration error.
        let conn = Connection::open_with_flags(&self.path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| e.to_string())?;
        Ok(conn)
    }
}

/// Builds the executor and the schema of one SQLite source.
pub async fn schema(
    source: &str,
    qualified: String,
    cfg: &SqliteSource,
) -> Result<(RemoteSchema, Vec<String>), ConnectorError> {
    let executor = executor(source, cfg)?;
    let opener = executor.opener.clone();
    let provider = crate::pushdown::provider(Arc::new(executor), None);
    let discovery = SqliteDiscovery {
        opener: opener.clone(),
    };
    let (schema, warnings) = RemoteSchema::new(
        qualified,
        "sqlite",
        vec![],
        provider,
        Box::new(discovery),
        Duration::from_secs(cfg.refresh_secs),
    )
    .await;
    let schema = match cfg.writable {
        true => schema.with_writer(Arc::new(write::SqliteWriter {
            source: source.to_string(),
            opener,
        })),
        false => schema,
    };
    Ok((schema, warnings))
}

/// The executor that runs statements on one file.
pub fn executor(source: &str, cfg: &SqliteSource) -> Result<SqliteExecutor, ConnectorError> {
    let path = PathBuf::from(
        cfg.location
            .strip_prefix("file://")
            .unwrap_or(&cfg.location),
    );
    if !path.is_absolute() {
        return Err(ConnectorError::Location {
            source_name: source.to_string(),
            location: cfg.location.clone(),
            message: "a SQLite source needs a local file path".into(),
        });
    }
    Ok(SqliteExecutor {
        source: source.to_string(),
        context: format!("sqlite://{}", path.display()),
        opener: Opener {
            path,
            writable: cfg.writable,
            busy_timeout: Duration::from_secs(cfg.busy_timeout_secs),
        },
        permits: Arc::new(tokio::sync::Semaphore::new(cfg.pool_size.max(1))),
        statement_timeout: Duration::from_secs(cfg.statement_timeout_secs),
    })
}

struct SqliteDiscovery {
    opener: Opener,
}

const TABLES: &str = "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
    AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name";
const COLUMNS: &str = "SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid";

#[async_trait]
impl Discovery for SqliteDiscovery {
    async fn tables(&self) -> Result<BTreeMap<String, DiscoveredTable>, DiscoveryError> {
        let opener = self.opener.clone();
        let found = tokio::task::spawn_blocking(move || {
            let conn = opener.open().map_err(DiscoveryError::Unreachable)?;
            let failed =
                |e: rusqlite::Error| DiscoveryError::Failed(format!("discovery failed: {e}"));
            let names: Vec<String> = conn
                .prepare(TABLES)
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(failed)?;
            let mut tables = BTreeMap::new();
            let mut columns = conn.prepare(COLUMNS).map_err(failed)?;
            for name in names {
                let mut fields = vec![];
                let mut key: Vec<(i64, String)> = vec![];
                let rows = columns
                    .query_map([&name], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .map_err(failed)?;
                for row in rows {
                    let (column, declared, pk) = row.map_err(failed)?;
                    let t = types::arrow_type(declared.as_deref().unwrap_or(""));
                    if pk > 0 {
                        key.push((pk, column.clone()));
                    }
                    fields.push(Field::new(column, t, true));
                }
                key.sort();
                tables.insert(
                    name,
                    DiscoveredTable {
                        schema: Arc::new(Schema::new(fields)) as SchemaRef,
                        primary_key: key.into_iter().map(|(_, c)| c).collect(),
                    },
                );
            }
            Ok(tables)
        })
        .await
        .map_err(|e| DiscoveryError::Failed(format!("discovery failed: {e}")))?;
        found
    }
}
