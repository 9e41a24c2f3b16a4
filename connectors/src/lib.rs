//! Quiver's data sources: configuration of the virtual schema and one module per
//! source kind, each exposed to DataFusion as catalogs, schemas and `TableProvider`s.

pub mod catalog;
pub mod config;
pub mod env;
pub mod federated_columns;
pub mod files;
pub mod flight_sql;
pub mod join_keys;
pub mod lakehouse;
pub mod mysql;
pub mod object_stores;
pub mod postgres;
pub mod pushdown;
pub mod remote_schema;
pub mod source_scan;
pub mod sql_fixups;
pub mod sqlite;
pub mod writable;

pub use catalog::{register_sources, Registered};
pub use config::{FileFormat, SourceConfig, SourceKind};
pub use object_stores::register_object_stores;
pub use source_scan::{SourceScanCodec, SourceScanExec};

/// Errors of source configuration and discovery.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("source '{source_name}': {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error("source '{source_name}': invalid location '{location}': {message}")]
    Location {
        source_name: String,
        location: String,
        message: String,
    },
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// An error with its causes, `outer: inner: innermost`: connection pools wrap the
/// reason (a refused connection, a certificate the server sent) as a source.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// A source that cannot be reached (refused, unresolvable, timed out): the error
/// clients see as `08006` connection_failure, whatever the door.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

impl Unreachable {
    /// A DataFusion error of this kind for `source` (`kind`: postgres, mysql, …).
    pub fn error(
        source: &str,
        kind: &str,
        cause: &dyn std::fmt::Display,
    ) -> datafusion::error::DataFusionError {
        datafusion::error::DataFusionError::External(Box::new(Self(format!(
            "source '{source}' ({kind}): cannot connect: {cause}"
        ))))
    }
}
