//! MySQL and MariaDB sources: one database mounted as one Quiver schema, with the
//! same discovery and federation pushdown as PostgreSQL (MySQL dialect).

mod executor;
mod partitions;
pub mod types;
pub mod write;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use crate::config::MySqlSource;
use crate::remote_schema::{DiscoveredTable, Discovery, RemoteSchema};
use crate::ConnectorError;
pub use executor::MySqlExecutor;

pub async fn schema(
    source: &str,
    qualified: String,
    cfg: &MySqlSource,
) -> Result<(RemoteSchema, Vec<String>), ConnectorError> {
    let (executor, pool) = executor(source, cfg)?;
    let database = executor.database.clone();
    let partitioner = partitions::KeyRanges {
        pool: pool.clone(),
        database: database.clone(),
        partitions: cfg.scan_partitions,
        min_bytes: cfg.partition_min_mb.saturating_mul(1 << 20),
    };
    let provider = crate::pushdown::provider(Arc::new(executor), Some(Arc::new(partitioner)));
    let discovery = MyDiscovery {
        pool: pool.clone(),
        database: database.clone(),
    };
    let ttl = std::time::Duration::from_secs(cfg.refresh_secs);
    let (schema, warnings) = RemoteSchema::new(
        qualified,
        "mysql",
        vec![database.clone()],
        provider,
        Box::new(discovery),
        ttl,
    )
    .await;
    let schema = match cfg.writable {
        true => schema.with_writer(Arc::new(write::MySqlWriter {
            source: source.to_string(),
            pool,
            database,
        })),
        false => schema,
    };
    Ok((schema, warnings))
}

/// The connection pool of one source and the executor that runs statements on it.
pub fn executor(source: &str, cfg: &MySqlSource) -> Result<(MySqlExecutor, Pool), ConnectorError> {
    let bad = |message: String| ConnectorError::Source {
        source_name: source.to_string(),
        message,
    };
    let opts = Opts::from_url(cfg.url.expose()).map_err(|e| bad(format!("invalid url: {e}")))?;
    let database = opts
        .db_name()
        .map(str::to_string)
        .ok_or_else(|| bad("the url must name a database".into()))?;
    let context = format!(
        "mysql://{}:{}/{database}",
        opts.ip_or_hostname(),
        opts.tcp_port()
    );
    let constraints = PoolConstraints::new(0, cfg.pool_size.max(1))
        .ok_or_else(|| bad("invalid pool_size".into()))?;
    let opts = OptsBuilder::from_opts(opts)
        .pool_opts(PoolOpts::default().with_constraints(constraints))
        // `setup`, not `init`: it runs again after the pool resets a connection.
        .setup(session_setup(cfg.statement_timeout_secs, cfg.writable));
    let pool = Pool::new(opts);
    Ok((
        MySqlExecutor {
            source: source.to_string(),
            context,
            database,
            pool: pool.clone(),
            connect_timeout: std::time::Duration::from_secs(cfg.connect_timeout_secs.max(1)),
        },
        pool,
    ))
}

/// Statements every pooled connection runs first.
fn session_setup(statement_timeout_secs: u64, writable: bool) -> Vec<String> {
    // The unparser escapes quotes by doubling them, as standard SQL does. In MySQL's
    // default mode a backslash also escapes, so a literal ending in `\` would end the
    // string early (and `\d` would read as `d`): make backslash an ordinary character.
    let mut setup = vec![
        "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_BACKSLASH_ESCAPES')".to_string(),
    ];
    if statement_timeout_secs > 0 {
        // MariaDB's per-statement limit; MySQL rejects this variable, so set 0 there.
        setup.push(format!(
            "SET SESSION max_statement_time = {statement_timeout_secs}"
        ));
    }
    if !writable {
        // No plan, forged or not, can change the database through this session.
        setup.push("SET SESSION TRANSACTION READ ONLY".to_string());
    }
    setup
}

struct MyDiscovery {
    pool: Pool,
    database: String,
}

const COLUMNS: &str = "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, c.NUMERIC_PRECISION, c.NUMERIC_SCALE,
    k.ORDINAL_POSITION
  FROM information_schema.COLUMNS c
  LEFT JOIN information_schema.KEY_COLUMN_USAGE k ON k.TABLE_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME
    AND k.COLUMN_NAME = c.COLUMN_NAME AND k.CONSTRAINT_NAME = 'PRIMARY'
  WHERE c.TABLE_SCHEMA = ? ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION";

#[async_trait]
impl Discovery for MyDiscovery {
    async fn tables(
        &self,
    ) -> Result<BTreeMap<String, DiscoveredTable>, crate::remote_schema::DiscoveryError> {
        let mut conn = self.pool.get_conn().await.map_err(|e| {
            crate::remote_schema::DiscoveryError::Unreachable(crate::error_chain(&e))
        })?;
        type Col = (
            String,
            String,
            String,
            String,
            Option<u64>,
            Option<u64>,
            Option<u64>,
        );
        let rows: Vec<Col> = conn
            .exec(COLUMNS, (self.database.as_str(),))
            .await
            .map_err(|e| {
                crate::remote_schema::DiscoveryError::Failed(format!("discovery failed: {e}"))
            })?;
        let mut tables: BTreeMap<String, (Vec<Field>, Vec<(u64, String)>)> = BTreeMap::new();
        for (table, column, data_type, column_type, precision, scale, key_position) in rows {
            let t = arrow_type(&data_type, &column_type, precision, scale);
            let entry = tables.entry(table).or_default();
            if let Some(p) = key_position {
                entry.1.push((p, column.clone()));
            }
            entry.0.push(Field::new(column, t, true));
        }
        Ok(tables
            .into_iter()
            .map(|(t, (fields, mut key))| {
                key.sort();
                let primary_key = key.into_iter().map(|(_, c)| c).collect();
                (
                    t,
                    DiscoveredTable {
                        schema: Arc::new(Schema::new(fields)) as SchemaRef,
                        primary_key,
                    },
                )
            })
            .collect())
    }
}

/// The Arrow type of a column from information_schema (docs/sources.md lists the mapping).
pub fn arrow_type(
    data_type: &str,
    column_type: &str,
    precision: Option<u64>,
    scale: Option<u64>,
) -> DataType {
    let unsigned = column_type.contains("unsigned");
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" if column_type.starts_with("tinyint(1)") => DataType::Boolean,
        "tinyint" => {
            if unsigned {
                DataType::UInt8
            } else {
                DataType::Int8
            }
        }
        "smallint" => {
            if unsigned {
                DataType::UInt16
            } else {
                DataType::Int16
            }
        }
        "mediumint" | "int" | "integer" => {
            if unsigned {
                DataType::UInt32
            } else {
                DataType::Int32
            }
        }
        "bigint" => {
            if unsigned {
                DataType::UInt64
            } else {
                DataType::Int64
            }
        }
        "year" => DataType::Int16,
        "bit" => DataType::Binary,
        "float" => DataType::Float32,
        "double" | "real" => DataType::Float64,
        "decimal" | "numeric" => match (precision, scale) {
            (Some(p), Some(s)) if p <= 38 => DataType::Decimal128(p as u8, s as i8),
            _ => DataType::Float64,
        },
        "date" => DataType::Date32,
        "datetime" | "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "time" => DataType::Time64(TimeUnit::Microsecond),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "geometry" => {
            DataType::Binary
        }
        _ => DataType::Utf8,
    }
}
