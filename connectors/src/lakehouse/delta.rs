//! Delta Lake tables (`kind = "delta"`), read through the `deltalake` crate.
//!
//! `location` is a folder (local or `s3://`) whose sub-folders holding a
//! `_delta_log/` are tables; `[[source.table]]` entries name single tables
//! anywhere. deltalake reads the log into a snapshot. A snapshot without column
//! mapping or deletion vectors (the common case) is scanned as a plain DataFusion
//! Parquet scan with partition columns ([`super::delta_scan`]), which the workers
//! run whole; any other is scanned by deltalake's own `DeltaScanExec`, whose
//! Parquet reads the workers run and whose per-file transforms the coordinator
//! applies. Refresh, listing and time travel are shared with Iceberg (see the
//! parent module).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::execution::runtime_env::RuntimeEnv;
use deltalake_core::DeltaTableBuilder;
use serde::Deserialize;
use url::Url;

use super::{folder_url, At, LakeSchema, Snapshot, TableFormat};
use crate::ConnectorError;

/// `[[source]] kind = "delta"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaSource {
    /// A folder whose sub-folders with a `_delta_log/` are tables.
    #[serde(default)]
    pub location: Option<String>,
    /// Tables named one by one (with or without `location`).
    #[serde(default, rename = "table")]
    pub tables: Vec<DeltaTableConfig>,
    /// A table's snapshot is read again when older than this; 0 = every query.
    #[serde(default = "refresh")]
    pub refresh_secs: u64,
    /// Object store options (S3 endpoint, region, credentials), as for files sources.
    #[serde(default)]
    pub options: BTreeMap<String, crate::env::EnvString>,
    /// INSERT and CREATE TABLE … AS commit Delta transactions (new tables go under `location`).
    #[serde(default)]
    pub writable: bool,
}

/// One `[[source.table]]` of a Delta or Iceberg source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaTableConfig {
    pub name: String,
    pub location: String,
}

fn refresh() -> u64 {
    10
}

impl DeltaSource {
    /// The schema of this source: its tables listed, kept listed.
    pub async fn discover(
        &self,
        qualified: String,
        runtime: Arc<RuntimeEnv>,
    ) -> Result<(Arc<LakeSchema>, Vec<String>), ConnectorError> {
        let error = |message: String| ConnectorError::Source {
            source_name: qualified.clone(),
            message,
        };
        let root = self
            .location
            .as_deref()
            .map(folder_url)
            .transpose()
            .map_err(error)?;
        let mut declared = BTreeMap::new();
        for t in &self.tables {
            declared.insert(t.name.clone(), folder_url(&t.location).map_err(error)?);
        }
        if self.writable && root.is_none() {
            return Err(error(
                "writable = true needs a location: new tables go under it".into(),
            ));
        }
        register_s3_log_stores();
        let format = Arc::new(Delta { root, runtime });
        Ok(LakeSchema::discover(
            qualified,
            format,
            declared,
            self.refresh_secs,
            self.writable,
        )
        .await)
    }
}

/// Delta logs on S3 are read and committed through deltalake's default log store
/// over the object store Quiver registered for the bucket (commits rely on the
/// store's conditional put, which S3 has). deltalake knows only `file://` and
/// `memory://` by itself; its S3 log store lives in another crate.
#[derive(Debug, Default)]
struct OnObjectStore;

impl deltalake_core::logstore::LogStoreFactory for OnObjectStore {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake_core::logstore::StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn deltalake_core::logstore::LogStore>> {
        Ok(deltalake_core::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_s3_log_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let factories = deltalake_core::logstore::logstore_factories();
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                factories.insert(url, Arc::new(OnObjectStore));
            }
        }
    });
}

/// Reads Delta logs.
#[derive(Debug)]
struct Delta {
    root: Option<Url>,
    runtime: Arc<RuntimeEnv>,
}

#[async_trait]
impl TableFormat for Delta {
    fn runtime(&self) -> &RuntimeEnv {
        &self.runtime
    }

    fn name(&self) -> &'static str {
        "delta"
    }

    async fn list(&self) -> Option<Result<BTreeMap<String, Url>, String>> {
        let root = self.root.as_ref()?;
        Some(super::folders_holding(&self.runtime, root, "_delta_log").await)
    }

    fn create(
        &self,
        name: &str,
        schema: datafusion::arrow::datatypes::SchemaRef,
        lake: std::sync::Weak<LakeSchema>,
    ) -> Result<Arc<dyn TableProvider>, String> {
        let root = self
            .root
            .as_ref()
            .ok_or("the source has no location for new tables")?;
        let url = root.join(&format!("{name}/")).map_err(|e| e.to_string())?;
        let (_, store) = super::store_for(&self.runtime, &url)?;
        Ok(Arc::new(super::writes::DeltaCreate {
            name: name.to_string(),
            url,
            store,
            schema,
            lake,
        }))
    }

    async fn load(
        &self,
        name: &str,
        url: &Url,
        at: Option<&At>,
    ) -> Result<(Arc<dyn TableProvider>, Option<Snapshot>), String> {
        let (_, store) = super::store_for(&self.runtime, url)?;
        let mut builder = DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| e.to_string())?
            .with_storage_backend(store, url.clone());
        builder = match at {
            None => builder,
            Some(At::Version(v)) => builder.with_version(
                (*v).try_into()
                    .map_err(|_| format!("there is no version {v}"))?,
            ),
            Some(At::Time(t)) => builder.with_timestamp(*t),
        };
        let table = builder.load().await.map_err(|e| e.to_string())?;
        let snapshot = table.snapshot().ok().map(|state| {
            let version = state.version();
            let files = state.log_data();
            Snapshot {
                version: version.try_into().unwrap_or(i64::MAX),
                files: files.num_files() as u64,
                bytes: files.iter().map(|f| f.size().max(0) as u64).sum(),
                committed_ms: state.version_timestamp(version),
            }
        });
        let provider = table
            .table_provider()
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let provider: Arc<dyn TableProvider> =
            match super::delta_scan::plain_files(name, &table, provider.schema(), url) {
                Ok(files) => Arc::new(files),
                Err(why) => {
                    tracing::debug!(table = name, %why, "deltalake's own scan reads this snapshot");
                    Arc::new(provider)
                }
            };
        Ok((provider, snapshot))
    }
}
