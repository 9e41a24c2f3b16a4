//! Object stores (S3 and S3-compatible) that file sources live on, registered on a
//! DataFusion `RuntimeEnv`. Coordinator and workers both call this, so a fragment
//! that scans `s3://bucket/...` finds the same store wherever it runs.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use url::Url;

use crate::config::{SourceConfig, SourceKind};
use crate::env::EnvString;
use crate::ConnectorError;

/// Registers one store per (scheme, bucket) used by the sources' locations.
/// Local files need nothing: DataFusion always has `file://`.
pub fn register_object_stores(
    runtime: &RuntimeEnv,
    sources: &[SourceConfig],
) -> Result<(), ConnectorError> {
    for source in sources {
        let (locations, options): (Vec<&String>, _) = match &source.kind {
            SourceKind::Files(files) => (
                files
                    .location
                    .iter()
                    .chain(files.tables.iter().map(|t| &t.location))
                    .collect(),
                &files.options,
            ),
            SourceKind::Delta(delta) => (
                delta
                    .location
                    .iter()
                    .chain(delta.tables.iter().map(|t| &t.location))
                    .collect(),
                &delta.options,
            ),
            SourceKind::Iceberg(iceberg) => (
                iceberg
                    .location
                    .iter()
                    .chain(iceberg.tables.iter().map(|t| &t.location))
                    .chain(iceberg.warehouse.iter())
                    .collect(),
                &iceberg.options,
            ),
            SourceKind::Postgres(_)
            | SourceKind::Mysql(_)
            | SourceKind::Sqlite(_)
            | SourceKind::FlightSql(_) => continue,
        };
        for location in locations {
            let Ok(url) = Url::parse(location) else {
                continue;
            };
            match url.scheme() {
                "file" => {}
                "s3" | "s3a" => {
                    let store = s3_store(&source.name, &url, options)?;
                    let root = Url::parse(&format!(
                        "{}://{}",
                        url.scheme(),
                        url.host_str().unwrap_or_default()
                    ))
                    .map_err(|e| location_error(source, location, e.to_string()))?;
                    runtime.register_object_store(&root, Arc::new(store));
                }
                other => {
                    return Err(location_error(
                        source,
                        location,
                        format!(
                            "unsupported scheme '{other}' (supported: local paths, file://, s3://)"
                        ),
                    ))
                }
            }
        }
    }
    Ok(())
}

fn s3_store(
    source: &str,
    url: &Url,
    options: &BTreeMap<String, EnvString>,
) -> Result<object_store::aws::AmazonS3, ConnectorError> {
    let bucket = url.host_str().ok_or_else(|| ConnectorError::Location {
        source_name: source.to_string(),
        location: url.to_string(),
        message: "an s3:// URL needs a bucket".into(),
    })?;
    // Standard AWS_* variables apply first, so a deployment can rely on them alone.
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (key, value) in options {
        let key = AmazonS3ConfigKey::from_str(key).map_err(|_| ConnectorError::Source {
            source_name: source.to_string(),
            message: format!("unknown object store option '{key}'"),
        })?;
        builder = builder.with_config(key, value.expose());
    }
    builder.build().map_err(|e| ConnectorError::Source {
        source_name: source.to_string(),
        message: format!("cannot configure S3 for bucket '{bucket}': {e}"),
    })
}

fn location_error(source: &SourceConfig, location: &str, message: String) -> ConnectorError {
    ConnectorError::Location {
        source_name: source.name.clone(),
        location: location.to_string(),
        message,
    }
}
