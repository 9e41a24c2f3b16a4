//! Apache Iceberg tables (`kind = "iceberg"`), read by Quiver's own small reader.
//!
//! Why not the `iceberg` crate: its releases build on an older arrow than Quiver's,
//! and two arrows in one binary cannot share record batches. Reading a snapshot
//! needs little: the metadata JSON ([`metadata`]), the manifest list and manifests
//! in Avro ([`manifests`], through `apache-avro`), and file pruning from partition
//! values and column bounds ([`pruning`]); DataFusion's Parquet scan reads the data
//! files ([`provider`]), with merge-on-read deletes applied ([`deletes`],
//! [`deletes_exec`]).
//!
//! Tables are found in one of two catalogs: a warehouse folder (`location`, each
//! sub-folder with a `metadata/` folder is a table, at its newest metadata file),
//! or a SQL catalog (`catalog_url`, the `iceberg_tables` table that Iceberg's
//! JDBC catalog and pyiceberg's `SqlCatalog` keep, in SQLite or PostgreSQL).

mod catalog;
mod deletes;
mod deletes_exec;
mod manifests;
mod metadata;
mod provider;
mod pruning;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;
use serde::Deserialize;
use url::Url;

use super::delta::DeltaTableConfig;
use super::{folder_url, At, LakeSchema, Snapshot, TableFormat};
use crate::env::EnvString;
use crate::ConnectorError;
use catalog::Catalog;
use deletes::DeleteCache;
pub use deletes_exec::{IcebergDeletesCodec, IcebergDeletesExec};
use manifests::{read_all, ManifestCache};
use metadata::TableMetadata;

/// `[[source]] kind = "iceberg"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergSource {
    /// A warehouse folder whose sub-folders holding `metadata/` are tables.
    #[serde(default)]
    pub location: Option<String>,
    /// A SQL catalog: `sqlite:///path/catalog.db` or `postgres://user:pw@host/db`.
    #[serde(default)]
    pub catalog_url: Option<EnvString>,
    /// The catalog's name in the SQL catalog (its `catalog_name` column); any if unset.
    #[serde(default)]
    pub catalog_name: Option<String>,
    /// The namespace of the SQL catalog that becomes this source's schema.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Where a SQL catalog's data lives (`s3://bucket/...`), so its object store
    /// is registered; local warehouses need nothing.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Tables named one by one: a table folder (its newest metadata file is read).
    #[serde(default, rename = "table")]
    pub tables: Vec<DeltaTableConfig>,
    /// A table's snapshot is read again when older than this; 0 = every query.
    #[serde(default = "refresh")]
    pub refresh_secs: u64,
    /// Object store options (S3 endpoint, region, credentials), as for files sources.
    #[serde(default)]
    pub options: BTreeMap<String, EnvString>,
}

fn refresh() -> u64 {
    10
}

impl IcebergSource {
    /// The schema of this source: its tables listed, kept listed.
    pub async fn discover(
        &self,
        qualified: String,
        runtime: Arc<RuntimeEnv>,
        views: bool,
    ) -> Result<(Arc<LakeSchema>, Vec<String>), ConnectorError> {
        let error = |message: String| ConnectorError::Source {
            source_name: qualified.clone(),
            message,
        };
        let catalog = match (&self.location, &self.catalog_url) {
            (Some(_), Some(_)) => {
                return Err(error("set either location or catalog_url, not both".into()))
            }
            (Some(location), None) => Some(Catalog::Folder(folder_url(location).map_err(error)?)),
            (None, Some(url)) => {
                let namespace = self
                    .namespace
                    .clone()
                    .ok_or_else(|| error("catalog_url needs a namespace".into()))?;
                Some(
                    Catalog::sql(url.expose(), self.catalog_name.clone(), namespace)
                        .map_err(error)?,
                )
            }
            (None, None) => None,
        };
        let mut declared = BTreeMap::new();
        for t in &self.tables {
            declared.insert(t.name.clone(), folder_url(&t.location).map_err(error)?);
        }
        let format = Arc::new(Iceberg {
            catalog,
            runtime,
            views,
            manifests: ManifestCache::default(),
            deletes: Arc::default(),
        });
        Ok(LakeSchema::discover(qualified, format, declared, self.refresh_secs, false).await)
    }
}

/// Reads Iceberg metadata.
#[derive(Debug)]
struct Iceberg {
    catalog: Option<Catalog>,
    runtime: Arc<RuntimeEnv>,
    /// Strings and binaries as views, as DataFusion reads Parquet files.
    views: bool,
    manifests: ManifestCache,
    deletes: Arc<DeleteCache>,
}

impl Iceberg {
    fn store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>, String> {
        super::store_for(&self.runtime, url).map(|(_, s)| s)
    }

    /// The current metadata file of the table `name` whose handle is `handle`.
    async fn metadata_location(&self, name: &str, handle: &Url) -> Result<Url, String> {
        match &self.catalog {
            Some(Catalog::Sql(sql)) if !handle.path().ends_with('/') => {
                manifests::to_url(&sql.metadata_location(name).await?)
            }
            _ => catalog::newest_metadata(self.store(handle)?.as_ref(), handle).await,
        }
    }
}

#[async_trait]
impl TableFormat for Iceberg {
    fn runtime(&self) -> &RuntimeEnv {
        &self.runtime
    }

    fn name(&self) -> &'static str {
        "iceberg"
    }

    async fn list(&self) -> Option<Result<BTreeMap<String, Url>, String>> {
        match self.catalog.as_ref()? {
            Catalog::Folder(root) => {
                Some(super::folders_holding(&self.runtime, root, "metadata").await)
            }
            Catalog::Sql(sql) => Some(sql.list().await),
        }
    }

    async fn load(
        &self,
        name: &str,
        handle: &Url,
        at: Option<&At>,
    ) -> Result<(Arc<dyn TableProvider>, Option<Snapshot>), String> {
        let location = self.metadata_location(name, handle).await?;
        let json = read_all(self.store(&location)?.as_ref(), &location).await?;
        let metadata = TableMetadata::parse(&json).map_err(|e| format!("{location}: {e}"))?;
        let snapshot = match at {
            None => metadata
                .current_snapshot_id
                .filter(|id| *id >= 0)
                .map(|id| {
                    metadata
                        .snapshot(id)
                        .ok_or_else(|| format!("current snapshot {id} is not in {location}"))
                }),
            Some(At::Version(id)) => Some(metadata.snapshot(*id).ok_or_else(|| {
                let ids: Vec<String> = metadata
                    .snapshots
                    .iter()
                    .map(|s| s.snapshot_id.to_string())
                    .collect();
                format!("there is no snapshot {id} (snapshots: {})", ids.join(", "))
            })),
            Some(At::Time(t)) => Some(
                metadata
                    .snapshot_at(t.timestamp_millis())
                    .ok_or_else(|| format!("there is no snapshot committed at or before {t}")),
            ),
        }
        .transpose()?
        .cloned();
        // Time travel reads the schema the snapshot was written with.
        let schema = match (at, snapshot.as_ref().and_then(|s| s.schema_id)) {
            (Some(_), Some(id)) => metadata
                .schema_by_id(id)
                .ok_or_else(|| format!("snapshot schema {id} is not in the metadata"))?,
            _ => metadata.current_schema()?,
        }
        .clone();
        let open = |url: &Url| self.store(url);
        let files = match &snapshot {
            None => vec![],
            Some(s) => match (&s.manifest_list, &s.manifests) {
                (Some(list), _) => self.manifests.snapshot_files(list, &open).await?,
                (None, Some(inline)) => self.manifests.inline_files(inline, &open).await?,
                (None, None) => {
                    return Err(format!("snapshot {} lists no manifests", s.snapshot_id))
                }
            },
        };
        let seen = Snapshot {
            version: snapshot.as_ref().map_or(-1, |s| s.snapshot_id),
            files: files.len() as u64,
            bytes: files.iter().map(|f| f.size).sum(),
            committed_ms: snapshot
                .as_ref()
                .map(|s| s.timestamp_ms)
                .or(metadata.last_updated_ms),
        };
        let arrow = Arc::new(schema.to_arrow(self.views)?);
        let mut table = provider::IcebergTable {
            name: name.to_string(),
            metadata: Arc::new(metadata),
            schema,
            arrow,
            files,
            deletes: self.deletes.clone(),
            columns: vec![],
        };
        table.columns = table.column_statistics();
        Ok((Arc::new(table), Some(seen)))
    }
}
