//! Delta Lake tables (`kind = "delta"`), read through the `deltalake` crate.
//!
//! `location` is a folder (local or `s3://`) whose sub-folders holding a
//! `_delta_log/` are tables; `[[source.table]]` entries name single tables
//! anywhere. Each query reads one snapshot of the log, so a writer committing
//! meanwhile is never seen half-done. The log is read again when the snapshot is
//! older than `refresh_secs` (0: every query), so new commits show up without a
//! restart, and `location` is listed again every few seconds for new tables.
//! `table@v3` reads version 3 and `table@2026-12-01T10:00:00Z` the version current
//! at that time (quoted: `lake."events@v3"`). The scan is deltalake's: partition
//! and file-statistics pruning from the log, deletion vectors, column mapping and
//! schema evolution; its Parquet reads are plain DataFusion scans, which the
//! distributed planner splits across workers like any file scan (workers never
//! read the log).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use deltalake_core::DeltaTableBuilder;
use futures::TryStreamExt;
use serde::Deserialize;
use url::Url;

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
}

/// One `[[source.table]]` of a Delta source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaTableConfig {
    pub name: String,
    pub location: String,
}

fn refresh() -> u64 {
    10
}

/// A table's location as a folder URL (local paths become `file://`).
pub fn folder_url(location: &str) -> std::result::Result<Url, String> {
    let url = match Url::parse(location) {
        Ok(u) if u.scheme().len() > 1 => u,
        _ => {
            let path = std::path::Path::new(location);
            Url::from_directory_path(path)
                .map_err(|_| format!("'{location}' is not an absolute path or a URL"))?
        }
    };
    let mut s = url.to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    Url::parse(&s).map_err(|e| e.to_string())
}

/// The schema of one Delta source.
#[derive(Debug)]
pub struct DeltaSchema {
    qualified: String,
    refresh: Duration,
    runtime: Arc<RuntimeEnv>,
    /// Table name → its folder (listed under `location`, or declared).
    tables: Arc<RwLock<BTreeMap<String, Url>>>,
    /// Loaded providers and when their snapshot was read.
    loaded: tokio::sync::Mutex<BTreeMap<String, (Arc<dyn TableProvider>, Instant)>>,
    /// What the current snapshot of each table read so far holds.
    seen: RwLock<BTreeMap<String, Snapshot>>,
    /// Tables whose log could not be read, with why.
    broken: RwLock<BTreeMap<String, String>>,
}

/// A table's current snapshot, for `system.snapshots`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: u64,
    pub files: u64,
    pub bytes: u64,
    /// When that version was committed (ms since the epoch), if the log says.
    pub committed_ms: Option<i64>,
}

impl DeltaSchema {
    /// Finds the tables of `source`; a folder that cannot be listed is a warning.
    pub async fn discover(
        qualified: String,
        source: &DeltaSource,
        runtime: Arc<RuntimeEnv>,
    ) -> std::result::Result<(Self, Vec<String>), ConnectorError> {
        let mut warnings = vec![];
        let mut tables = BTreeMap::new();
        let error = |message: String| ConnectorError::Source {
            source_name: qualified.clone(),
            message,
        };
        if let Some(location) = &source.location {
            let root = folder_url(location).map_err(error)?;
            match list_tables(&runtime, &root).await {
                Ok(found) => tables.extend(found),
                Err(e) => warnings.push(format!("schema {qualified}: cannot list {root}: {e}")),
            }
            if tables.is_empty() {
                warnings.push(format!(
                    "schema {qualified}: no Delta tables (folders with a _delta_log/) under {root}"
                ));
            }
        }
        let mut declared = BTreeMap::new();
        for t in &source.tables {
            declared.insert(t.name.clone(), folder_url(&t.location).map_err(error)?);
        }
        tables.extend(declared.clone());
        let tables = Arc::new(RwLock::new(tables));
        if let Some(location) = &source.location {
            let root = folder_url(location).map_err(error)?;
            let every = Duration::from_secs(source.refresh_secs.max(LIST_EVERY_SECS));
            relist_forever(
                Arc::downgrade(&tables),
                declared,
                runtime.clone(),
                root,
                every,
                qualified.clone(),
            );
        }
        Ok((
            Self {
                qualified,
                refresh: Duration::from_secs(source.refresh_secs),
                runtime,
                tables,
                loaded: tokio::sync::Mutex::default(),
                seen: RwLock::default(),
                broken: RwLock::default(),
            },
            warnings,
        ))
    }

    /// The snapshot provider of `name` at `url`: as of now, or as of `at`.
    async fn load(&self, name: &str, url: &Url, at: Option<&At>) -> Result<Arc<dyn TableProvider>> {
        let store_url = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
        let store = self.runtime.object_store(&store_url)?;
        let mut builder = DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| self.error(name, e))?
            .with_storage_backend(store, url.clone());
        builder = match at {
            None => builder,
            Some(At::Version(v)) => builder.with_version(*v),
            Some(At::Time(t)) => builder.with_timestamp(*t),
        };
        let table = builder.load().await.map_err(|e| self.error(name, e))?;
        if at.is_none() {
            if let Ok(state) = table.snapshot() {
                let version = state.version();
                let files = state.log_data();
                let seen = Snapshot {
                    version,
                    files: files.num_files() as u64,
                    bytes: files.iter().map(|f| f.size().max(0) as u64).sum(),
                    committed_ms: state.version_timestamp(version),
                };
                if let Ok(mut s) = self.seen.write() {
                    s.insert(name.to_string(), seen);
                }
            }
        }
        let provider = table
            .table_provider()
            .build()
            .await
            .map_err(|e| self.error(name, e))?;
        Ok(Arc::new(provider))
    }

    /// `catalog.schema` of this source.
    pub fn qualified(&self) -> &str {
        &self.qualified
    }

    /// Every table with its current snapshot, or why it cannot be read (its log
    /// is read when its snapshot is older than `refresh_secs`).
    pub async fn snapshots(&self) -> Vec<(String, std::result::Result<Snapshot, String>)> {
        let mut out = vec![];
        for name in self.table_names() {
            let read = self.table(&name).await.map(|_| ());
            let seen = self.seen.read().ok().and_then(|s| s.get(&name).cloned());
            let broken = self.broken.read().ok().and_then(|b| b.get(&name).cloned());
            out.push((
                name,
                match (read, broken, seen) {
                    (Err(e), _, _) => Err(e.to_string()),
                    (Ok(()), Some(e), _) => Err(e),
                    (Ok(()), None, Some(s)) => Ok(s),
                    (Ok(()), None, None) => Err("no snapshot read".into()),
                },
            ));
        }
        out
    }

    fn error(&self, name: &str, e: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::External(format!("Delta table {}.{name}: {e}", self.qualified).into())
    }
}

/// A table whose log or metadata cannot be read: no columns, and every scan fails
/// with the error that names it.
#[derive(Debug)]
struct Unreadable {
    error: String,
}

#[async_trait]
impl TableProvider for Unreadable {
    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        Arc::new(datafusion::arrow::datatypes::Schema::empty())
    }

    fn table_type(&self) -> datafusion::logical_expr::TableType {
        datafusion::logical_expr::TableType::Base
    }

    async fn scan(
        &self,
        _: &dyn datafusion::catalog::Session,
        _: Option<&Vec<usize>>,
        _: &[datafusion::logical_expr::Expr],
        _: Option<usize>,
    ) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        Err(DataFusionError::External(self.error.clone().into()))
    }
}

/// Time travel: `table@v3` is the table as of version 3, `table@2026-12-01T10:00:00Z`
/// (or `@2026-12-01`) as of that time, the last version committed by then.
#[derive(Debug, Clone, Copy, PartialEq)]
enum At {
    Version(u64),
    Time(chrono::DateTime<chrono::Utc>),
}

impl At {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        if let Some(v) = text.strip_prefix('v').and_then(|v| v.parse::<u64>().ok()) {
            return Ok(Self::Version(v));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
            return Ok(Self::Time(t.with_timezone(&chrono::Utc)));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            if let Some(t) = d.and_hms_opt(0, 0, 0) {
                return Ok(Self::Time(t.and_utc()));
            }
        }
        Err(format!(
            "'@{text}' is neither a version (@v3) nor a time (@2026-12-01T10:00:00Z or @2026-12-01)"
        ))
    }
}

/// Tables created or removed under `location` are seen within this many seconds
/// (or `refresh_secs`, if longer).
const LIST_EVERY_SECS: u64 = 5;

/// Lists `root` again every `every` while the schema lives, so tables created
/// (or removed) while the server runs come (or go) without a restart.
fn relist_forever(
    tables: std::sync::Weak<RwLock<BTreeMap<String, Url>>>,
    declared: BTreeMap<String, Url>,
    runtime: Arc<RuntimeEnv>,
    root: Url,
    every: Duration,
    qualified: String,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if tables.strong_count() == 0 {
                return;
            }
            let found = match list_tables(&runtime, &root).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(schema = %qualified, error = %e, "cannot list the Delta tables again");
                    continue;
                }
            };
            let Some(current) = tables.upgrade() else {
                return;
            };
            let mut listed = found;
            listed.extend(declared.clone());
            if let Ok(mut t) = current.write() {
                *t = listed;
            };
        }
    });
}

/// The sub-folders of `root` that hold a `_delta_log/`.
async fn list_tables(
    runtime: &RuntimeEnv,
    root: &Url,
) -> std::result::Result<BTreeMap<String, Url>, String> {
    let store_url =
        ObjectStoreUrl::parse(&root[..url::Position::BeforePath]).map_err(|e| e.to_string())?;
    let store = runtime
        .object_store(&store_url)
        .map_err(|e| e.to_string())?;
    let prefix = object_store::path::Path::from_url_path(root.path()).map_err(|e| e.to_string())?;
    let listed = store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| e.to_string())?;
    let mut found = BTreeMap::new();
    for folder in listed.common_prefixes {
        let Some(name) = folder.filename().map(str::to_string) else {
            continue;
        };
        let log = folder.clone().join("_delta_log");
        let has_log = store
            .list(Some(&log))
            .try_next()
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        if has_log {
            let url = root.join(&format!("{name}/")).map_err(|e| e.to_string())?;
            found.insert(name, url);
        }
    }
    Ok(found)
}

#[async_trait]
impl SchemaProvider for DeltaSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables
            .read()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let (base, at) = match name.split_once('@') {
            Some((base, at)) => (base, Some(At::parse(at).map_err(|e| self.error(base, e))?)),
            None => (name, None),
        };
        let url = self.tables.read().ok().and_then(|t| t.get(base).cloned());
        let Some(url) = url else {
            return Ok(None);
        };
        let mut loaded = self.loaded.lock().await;
        if let Some((provider, read)) = loaded.get(name) {
            // An older version never changes; the current one is read again when stale.
            if at.is_some() || !self.refresh.is_zero() && read.elapsed() < self.refresh {
                return Ok(Some(provider.clone()));
            }
        }
        let provider = match self.load(base, &url, at.as_ref()).await {
            Ok(p) => {
                if let Ok(mut b) = self.broken.write() {
                    b.remove(name);
                }
                p
            }
            // A table whose log cannot be read fails the queries that read it, and
            // only those: listings (information_schema, psql's \d) still work.
            Err(e) if at.is_none() => {
                if let Ok(mut b) = self.broken.write() {
                    b.insert(name.to_string(), e.to_string());
                }
                Arc::new(Unreadable {
                    error: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        };
        loaded.insert(name.to_string(), (provider.clone(), Instant::now()));
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        let base = name.split_once('@').map_or(name, |(b, _)| b);
        self.tables.read().is_ok_and(|t| t.contains_key(base))
    }
}
