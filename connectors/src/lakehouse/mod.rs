//! Lakehouse tables: Delta Lake (`kind = "delta"`) and Apache Iceberg
//! (`kind = "iceberg"`).
//!
//! Both formats share how a source behaves, which lives here: tables are found
//! under `location` (or in a catalog) and listed again every few seconds; each
//! query reads one snapshot, read again when older than `refresh_secs` (0: every
//! query); `table@v3` / `table@2026-12-01T10:00:00Z` travel in time; a table whose
//! log or metadata cannot be read fails alone and says why in `system.snapshots`.
//! What differs (reading a Delta log, reading Iceberg metadata and manifests) is a
//! [`TableFormat`]. Either way the data files are read by DataFusion's Parquet
//! scan, which the distributed planner splits across workers like any file scan:
//! only the coordinator reads logs and manifests.

pub mod delta;
mod delta_scan;
pub mod delta_write;
pub mod iceberg;
mod statistics;
mod writes;

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use url::Url;

pub use delta::DeltaSource;
pub use iceberg::IcebergSource;
pub(crate) use statistics::column_statistics;

/// A table's current snapshot, for `system.snapshots`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Delta: the table version. Iceberg: the snapshot id.
    pub version: i64,
    pub files: u64,
    pub bytes: u64,
    /// When it was committed (ms since the epoch), if the metadata says.
    pub committed_ms: Option<i64>,
}

/// What a table format reads; the schema around it is shared.
#[async_trait]
pub(crate) trait TableFormat: Send + Sync + std::fmt::Debug + 'static {
    /// `"delta"` or `"iceberg"`, as `system.snapshots` shows it.
    fn name(&self) -> &'static str;
    /// The tables the source's location or catalog holds now: name → handle
    /// (the table folder, or its metadata file). `None` when there is nothing to list.
    async fn list(&self) -> Option<std::result::Result<BTreeMap<String, Url>, String>>;
    /// The table `name` as of now or as of `at`, with what its snapshot holds.
    async fn load(
        &self,
        name: &str,
        handle: &Url,
        at: Option<&At>,
    ) -> std::result::Result<(Arc<dyn TableProvider>, Option<Snapshot>), String>;
    /// Where its object stores are registered.
    fn runtime(&self) -> &RuntimeEnv;
    /// A provider whose `insert_into` creates the table `name` (CREATE TABLE … AS).
    fn create(
        &self,
        name: &str,
        _schema: datafusion::arrow::datatypes::SchemaRef,
        _lake: std::sync::Weak<LakeSchema>,
    ) -> std::result::Result<Arc<dyn TableProvider>, String> {
        Err(format!(
            "{} tables cannot be created by Quiver ({name})",
            self.name()
        ))
    }
}

/// The schema of one Delta or Iceberg source.
/// A table's provider and when its snapshot was read.
type Loaded = (Arc<dyn TableProvider>, Instant);

#[derive(Debug)]
pub struct LakeSchema {
    qualified: String,
    refresh: Duration,
    format: Arc<dyn TableFormat>,
    /// Table name → its handle (listed, or declared).
    tables: Arc<RwLock<BTreeMap<String, Url>>>,
    /// Loaded providers and when their snapshot was read.
    loaded: tokio::sync::Mutex<BTreeMap<String, Loaded>>,
    /// What the current snapshot of each table read so far holds.
    seen: RwLock<BTreeMap<String, Snapshot>>,
    /// Tables whose log or metadata could not be read, with why.
    broken: RwLock<BTreeMap<String, String>>,
    /// Told `catalog.schema.table` when a table's current snapshot changes.
    watchers: RwLock<Vec<Watcher>>,
    /// `writable = true`: INSERT and CREATE TABLE … AS commit to its tables.
    writable: bool,
    me: std::sync::Weak<LakeSchema>,
}

/// Someone told of new snapshots (the results cache).
#[derive(Clone)]
struct Watcher(Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

impl LakeSchema {
    /// Lists the tables of `format` (a failed listing is a warning) and, while the
    /// schema lives, keeps listing them and reading the snapshots of the tables
    /// queried so far, so watchers hear of new commits.
    pub(crate) async fn discover(
        qualified: String,
        format: Arc<dyn TableFormat>,
        declared: BTreeMap<String, Url>,
        refresh_secs: u64,
        writable: bool,
    ) -> (Arc<Self>, Vec<String>) {
        let mut warnings = vec![];
        let mut tables = BTreeMap::new();
        let listed = format.list().await;
        match &listed {
            Some(Ok(found)) => {
                tables.extend(found.clone());
                if found.is_empty() {
                    warnings.push(format!(
                        "schema {qualified}: no {} tables found",
                        format.name()
                    ));
                }
            }
            Some(Err(e)) => warnings.push(format!("schema {qualified}: cannot list tables: {e}")),
            None => {}
        }
        tables.extend(declared.clone());
        let lists = listed.is_some();
        let schema = Arc::new_cyclic(|me| Self {
            writable,
            me: me.clone(),
            qualified,
            refresh: Duration::from_secs(refresh_secs),
            format,
            tables: Arc::new(RwLock::new(tables)),
            loaded: tokio::sync::Mutex::default(),
            seen: RwLock::default(),
            broken: RwLock::default(),
            watchers: RwLock::default(),
        });
        let every = Duration::from_secs(refresh_secs.max(LIST_EVERY_SECS));
        watch_forever(Arc::downgrade(&schema), declared, lists, every);
        (schema, warnings)
    }

    /// Calls `f` with `catalog.schema.table` whenever a table's current snapshot
    /// changes (seen by a query or by the background poll).
    pub fn on_new_snapshot(&self, f: Arc<dyn Fn(&str) + Send + Sync>) {
        {
            let mut w = self.watchers.write();
            w.push(Watcher(f));
        }
    }

    /// `refresh_secs = 0`: every query reads the latest commit.
    pub fn always_fresh(&self) -> bool {
        self.refresh.is_zero()
    }

    pub(crate) fn runtime(&self) -> &RuntimeEnv {
        self.format.runtime()
    }

    /// Whether statements may write to this source's tables.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The provider `CREATE TABLE name AS …` inserts into, creating the table.
    pub fn new_table(
        &self,
        name: &str,
        schema: datafusion::arrow::datatypes::SchemaRef,
    ) -> std::result::Result<Arc<dyn TableProvider>, String> {
        self.format.create(name, schema, self.me.clone())
    }

    /// A table created by a statement: listed at once.
    pub(crate) fn add_table(&self, name: &str, url: Url) {
        {
            let mut t = self.tables.write();
            t.insert(name.to_string(), url);
        }
    }

    /// A statement committed to `table`: the next query reads its new snapshot.
    pub(crate) async fn written(&self, table: &str) {
        self.loaded.lock().await.remove(table);
        let _ = self.table(table).await;
    }

    fn changed(&self, table: &str) {
        let watchers = self.watchers.read().clone();
        let name = format!("{}.{table}", self.qualified);
        for w in watchers {
            (w.0)(&name);
        }
    }

    /// `catalog.schema` of this source.
    pub fn qualified(&self) -> &str {
        &self.qualified
    }

    /// `"delta"` or `"iceberg"`.
    pub fn format(&self) -> &'static str {
        self.format.name()
    }

    /// Every table with its current snapshot, or why it cannot be read (its
    /// metadata is read when its snapshot is older than `refresh_secs`).
    pub async fn snapshots(&self) -> Vec<(String, std::result::Result<Snapshot, String>)> {
        let mut out = vec![];
        for name in self.table_names() {
            let read = self.table(&name).await.map(|_| ());
            let seen = self.seen.read().get(&name).cloned();
            let broken = self.broken.read().get(&name).cloned();
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
        let format = match self.format.name() {
            "delta" => "Delta",
            _ => "Iceberg",
        };
        DataFusionError::External(format!("{format} table {}.{name}: {e}", self.qualified).into())
    }
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.read().keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let (base, at) = match name.split_once('@') {
            Some((base, at)) => (base, Some(At::parse(at).map_err(|e| self.error(base, e))?)),
            None => (name, None),
        };
        let handle = self.tables.read().get(base).cloned();
        let Some(handle) = handle else {
            return Ok(None);
        };
        let mut loaded = self.loaded.lock().await;
        if let Some((provider, read)) = loaded.get(name) {
            // An older version never changes; the current one is read again when stale.
            if at.is_some() || !self.refresh.is_zero() && read.elapsed() < self.refresh {
                return Ok(Some(provider.clone()));
            }
        }
        let provider = match self.format.load(base, &handle, at.as_ref()).await {
            Ok((provider, snapshot)) => {
                {
                    let mut b = self.broken.write();
                    b.remove(name);
                }
                if let (None, Some(snapshot)) = (at, snapshot) {
                    let before = self.seen.write().insert(name.to_string(), snapshot.clone());
                    if before.is_some_and(|b| b.version != snapshot.version) {
                        self.changed(name);
                    }
                }
                provider
            }
            // A table whose metadata cannot be read fails the queries that read it,
            // and only those: listings (information_schema, psql's \d) still work.
            Err(e) if at.is_none() => {
                let e = self.error(base, e).to_string();
                {
                    let mut b = self.broken.write();
                    b.insert(name.to_string(), e.clone());
                }
                Arc::new(Unreadable { error: e })
            }
            Err(e) => return Err(self.error(base, e)),
        };
        let provider: Arc<dyn TableProvider> = if self.writable && at.is_none() {
            Arc::new(writes::AfterWrite {
                inner: provider,
                lake: self.me.clone(),
                table: name.to_string(),
                handle: handle.clone(),
            })
        } else {
            provider
        };
        loaded.insert(name.to_string(), (provider.clone(), Instant::now()));
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        let base = name.split_once('@').map_or(name, |(b, _)| b);
        self.tables.read().contains_key(base)
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

/// Time travel: `table@v3` is the table as of version 3 (Delta) or snapshot id 3
/// (Iceberg); `table@2026-12-01T10:00:00Z` (or `@2026-12-01`) is the table as of
/// that time, the last version committed by then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum At {
    Version(i64),
    Time(chrono::DateTime<chrono::Utc>),
}

impl At {
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        if let Some(v) = text.strip_prefix('v').and_then(|v| v.parse::<i64>().ok()) {
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

/// A location as a folder URL (local paths become `file://`), ending in `/`.
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

/// The object store that holds `url`, as registered on `runtime`.
pub(crate) fn store_for(
    runtime: &RuntimeEnv,
    url: &Url,
) -> std::result::Result<(ObjectStoreUrl, Arc<dyn object_store::ObjectStore>), String> {
    let store_url =
        ObjectStoreUrl::parse(&url[..url::Position::BeforePath]).map_err(|e| e.to_string())?;
    let store = runtime
        .object_store(&store_url)
        .map_err(|e| e.to_string())?;
    Ok((store_url, store))
}

/// The sub-folders of `root` that hold `marker` (`_delta_log`, `metadata`).
pub(crate) async fn folders_holding(
    runtime: &RuntimeEnv,
    root: &Url,
    marker: &str,
) -> std::result::Result<BTreeMap<String, Url>, String> {
    use futures::TryStreamExt;
    let (_, store) = store_for(runtime, root)?;
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
        let inside = folder.clone().join(marker);
        let holds = store
            .list(Some(&inside))
            .try_next()
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        if holds {
            let url = root.join(&format!("{name}/")).map_err(|e| e.to_string())?;
            found.insert(name, url);
        }
    }
    Ok(found)
}

/// Tables created or removed under `location` are seen within this many seconds
/// (or `refresh_secs`, if longer).
const LIST_EVERY_SECS: u64 = 5;

/// While the schema lives: lists its tables again every `every` (when it lists
/// at all), so tables created or removed while the server runs come or go
/// without a restart; and reads again the snapshots of tables queried so far, so
/// a new commit reaches the watchers (the results cache) even when no query plans.
fn watch_forever(
    schema: std::sync::Weak<LakeSchema>,
    declared: BTreeMap<String, Url>,
    lists: bool,
    every: Duration,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(current) = schema.upgrade() else {
                return;
            };
            if lists {
                match current.format.list().await {
                    Some(Ok(found)) => {
                        let mut listed = found;
                        listed.extend(declared.clone());
                        {
                            let mut t = current.tables.write();
                            *t = listed;
                        };
                    }
                    Some(Err(e)) => {
                        tracing::warn!(schema = %current.qualified, error = %e, "cannot list the tables again");
                    }
                    None => {}
                }
            }
            let queried: Vec<String> = current.seen.read().keys().cloned().collect();
            for name in queried {
                // Reads the snapshot again only when older than refresh_secs.
                let _ = current.table(&name).await;
            }
        }
    });
}

/// The query's filters on a table as one physical predicate, for pruning files
/// and row groups (none when there are none, or one cannot be planned).
pub(crate) fn physical_filter(
    state: &dyn datafusion::catalog::Session,
    filters: &[datafusion::logical_expr::Expr],
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
    let expr = datafusion::logical_expr::utils::conjunction(filters.iter().cloned())?;
    let df_schema = datafusion::common::DFSchema::try_from(schema.as_ref().clone()).ok()?;
    state.create_physical_expr(expr, &df_schema).ok()
}

/// A file to scan at `location`, of `size` bytes: the log or the manifests know
/// both, so nothing is listed or asked of the store.
pub(crate) fn scan_file(
    location: object_store::path::Path,
    size: u64,
) -> datafusion::datasource::listing::PartitionedFile {
    datafusion::datasource::listing::PartitionedFile::new_from_meta(object_store::ObjectMeta {
        location,
        last_modified: chrono::DateTime::<chrono::Utc>::default(),
        size,
        e_tag: None,
        version: None,
    })
}

/// Spreads files over at most `n` groups of about equal bytes (largest first,
/// each into the group with the fewest bytes so far).
pub(crate) fn file_groups(
    mut files: Vec<datafusion::datasource::listing::PartitionedFile>,
    n: usize,
) -> Vec<datafusion::datasource::physical_plan::FileGroup> {
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups = vec![(0u64, vec![]); n.min(files.len()).max(1)];
    for file in files {
        if let Some(smallest) = groups.iter_mut().min_by_key(|g| g.0) {
            smallest.0 += file.object_meta.size;
            smallest.1.push(file);
        }
    }
    groups
        .into_iter()
        .filter(|g| !g.1.is_empty())
        .map(|g| datafusion::datasource::physical_plan::FileGroup::new(g.1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_travel_suffixes_parse_or_say_what_they_take() {
        assert_eq!(At::parse("v3"), Ok(At::Version(3)));
        assert!(matches!(At::parse("2026-12-01"), Ok(At::Time(_))));
        assert!(matches!(At::parse("2026-12-01T10:00:00Z"), Ok(At::Time(_))));
        let e = At::parse("yesterday").unwrap_err();
        assert!(e.contains("neither a version"), "{e}");
    }

    #[test]
    fn files_spread_by_size_with_their_partition_values() {
        use datafusion::common::ScalarValue;
        let file = |size, day: &str| {
            let mut f = scan_file(
                object_store::path::Path::from(format!("t/day={day}/{size}.parquet")),
                size,
            );
            f.partition_values = vec![ScalarValue::from(day)];
            f
        };
        let groups = file_groups(vec![file(50, "c"), file(100, "a"), file(60, "b")], 2);
        let sizes: Vec<u64> = groups
            .iter()
            .map(|g| g.files().iter().map(|f| f.object_meta.size).sum())
            .collect();
        assert_eq!(sizes, [100, 110]);
        assert_eq!(
            groups[0].files()[0].partition_values,
            vec![ScalarValue::from("a")]
        );
    }
}
