//! File tables (Parquet, CSV, NDJSON, Arrow IPC) on local disk or an object store.
//!
//! A folder is one table: every file in it (recursively) with the table's
//! extension, with hive-style `key=value` folders turned into partition columns.
//! Tables are resolved lazily on first use and cached, so a table whose folder is
//! missing or whose files are corrupt gives a clear error for that table only.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat as DfFileFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionConfig;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::config::{CsvOptions, FileFormat, FilesSource};

/// How to read one table.
#[derive(Debug, Clone)]
struct TableSpec {
    url: ListingTableUrl,
    format: FileFormat,
    csv: CsvOptions,
}

impl TableSpec {
    fn file_extension(&self) -> String {
        match (self.format, &self.csv.extension) {
            (FileFormat::Csv, Some(ext)) => ext.clone(),
            (format, _) => format.extension().to_string(),
        }
    }

    fn listing_options(&self) -> ListingOptions {
        let format: Arc<dyn DfFileFormat> = match self.format {
            FileFormat::Parquet => Arc::new(ParquetFormat::default()),
            FileFormat::Csv => Arc::new(
                CsvFormat::default()
                    .with_has_header(self.csv.header)
                    .with_delimiter(self.csv.delimiter as u8),
            ),
            FileFormat::Json => Arc::new(JsonFormat::default()),
            FileFormat::Arrow => Arc::new(ArrowFormat),
        };
        // File groups follow the session's target_partitions at scan time.
        ListingOptions::new(format).with_file_extension(self.file_extension())
    }
}

/// The schema of one `files` source.
pub struct FilesSchema {
    qualified: String,
    /// Tables discovered under the root and declared ones; discovered again after
    /// a write creates or drops one.
    tables: parking_lot::RwLock<BTreeMap<String, TableSpec>>,
    source: FilesSource,
    root: Option<ListingTableUrl>,
    /// When the root was last listed again for a name it did not know.
    listed: Mutex<Option<std::time::Instant>>,
    resolved: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    runtime: Arc<RuntimeEnv>,
    config: SessionConfig,
}

impl std::fmt::Debug for FilesSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesSchema")
            .field("schema", &self.qualified)
            .field("root", &self.root)
            .finish()
    }
}

impl FilesSchema {
    /// Builds the schema: discovers the tables under `location` and adds the declared ones.
    /// Returns the schema and warnings (e.g. a missing root folder) for the caller to log.
    pub async fn discover(
        qualified: String,
        source: &FilesSource,
        runtime: Arc<RuntimeEnv>,
        config: SessionConfig,
    ) -> Result<(Self, Vec<String>)> {
        let mut tables = BTreeMap::new();
        let mut warnings = vec![];
        let root = source
            .location
            .as_deref()
            .map(|l| ListingTableUrl::parse(folder_url(l)))
            .transpose()?;
        if let (Some(location), Some(root)) = (&source.location, &root) {
            match discover_tables(&runtime, root, source).await {
                Ok(found) => tables.extend(found),
                Err(e) => warnings.push(format!("schema {qualified}: cannot list {location}: {e}")),
            }
            if tables.is_empty() && source.tables.is_empty() {
                warnings.push(format!(
                    "schema {qualified}: no tables found under {location}"
                ));
            }
        }
        declared_tables(source, &mut tables)?;
        let schema = Self {
            qualified,
            tables: parking_lot::RwLock::new(tables),
            source: source.clone(),
            root,
            listed: Mutex::new(None),
            resolved: Mutex::new(HashMap::new()),
            runtime,
            config,
        };
        Ok((schema, warnings))
    }

    /// `catalog.schema`.
    pub fn name(&self) -> &str {
        &self.qualified
    }

    /// The folder tables are discovered in (`location`), as a URL ending in `/`.
    pub fn root(&self) -> Option<&ListingTableUrl> {
        self.root.as_ref()
    }

    /// Whether writes may go under the root (`writable = true`).
    pub fn is_writable(&self) -> bool {
        self.source.writable && self.root.is_some()
    }

    /// The format new tables are written in.
    pub fn default_format(&self) -> FileFormat {
        self.source.format
    }

    /// The folder or file of a table.
    pub fn table_url(&self, name: &str) -> Option<ListingTableUrl> {
        self.tables.read().get(name).map(|t| t.url.clone())
    }

    /// Whether a table is one of the root's folders (not a declared table or a single file).
    pub fn is_discovered_folder(&self, name: &str) -> bool {
        let declared = self.source.tables.iter().any(|t| t.name == name);
        !declared && self.table_url(name).is_some_and(|u| u.is_collection())
    }

    /// Lists the root again (after a write created or dropped a table) and forgets
    /// what was resolved, so schemas and partitions are read afresh.
    pub async fn rediscover(&self) -> Result<()> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        let mut found = discover_tables(&self.runtime, root, &self.source).await?;
        declared_tables(&self.source, &mut found)?;
        {
            let mut listed = self.listed.lock();
            *listed = Some(std::time::Instant::now());
        }
        *self.tables.write() = found;
        self.resolved.lock().clear();
        Ok(())
    }

    fn state(&self) -> SessionState {
        SessionStateBuilder::new()
            .with_config(self.config.clone())
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .build()
    }

    /// Lists the root again for a name it did not know, at most every two seconds
    /// (another coordinator, or a person, may have added a table).
    async fn rediscover_for(&self, name: &str) -> Result<Option<TableSpec>> {
        let recent = self
            .listed
            .lock()
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(2));
        if self.root.is_none() || recent {
            return Ok(None);
        }
        self.rediscover().await?;
        Ok(self.tables.read().get(name).cloned())
    }

    async fn resolve(&self, name: &str, spec: &TableSpec) -> Result<Arc<dyn TableProvider>> {
        let state = self.state();
        let store = self.runtime.object_store(&spec.url)?;
        let ext = spec.file_extension();
        let first = spec
            .url
            .list_all_files(&state, store.as_ref(), &ext)
            .await?
            .next()
            .await;
        match first {
            Some(Err(e)) => return Err(e),
            Some(Ok(_)) => {}
            None => {
                return Err(DataFusionError::Plan(missing_files_message(
                    &spec.url, &ext,
                )))
            }
        }
        let config = ListingTableConfig::new(spec.url.clone())
            .with_listing_options(spec.listing_options())
            .infer_partitions_from_path(&state)
            .await?
            .infer_schema(&state)
            .await?;
        tracing::debug!(table = %format!("{}.{name}", self.qualified), url = %spec.url, "resolved file table");
        Ok(Arc::new(ListingTable::try_new(config)?))
    }
}

fn missing_files_message(url: &ListingTableUrl, ext: &str) -> String {
    if url.scheme() == "file" {
        let path = format!("/{}", url.prefix());
        if !Path::new(&path).exists() {
            return format!("data folder '{path}' does not exist");
        }
    }
    format!("no '{ext}' files under {}", url.as_str())
}

#[async_trait]
impl SchemaProvider for FilesSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.read().keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let known = self.tables.read().get(name).cloned();
        let spec = match known {
            Some(s) => s,
            None => match self.rediscover_for(name).await {
                Ok(Some(s)) => s,
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::debug!(schema = %self.qualified, error = %e, "listing the root again failed");
                    return Ok(None);
                }
            },
        };
        let spec = &spec;
        if let Some(table) = self.resolved.lock().get(name) {
            return Ok(Some(table.clone()));
        }
        let table = self.resolve(name, spec).await.map_err(|e| {
            DataFusionError::Plan(format!(
                "table {}.{name} ({}) is unavailable: {e}",
                self.qualified, spec.url
            ))
        })?;
        self.resolved.lock().insert(name.to_string(), table.clone());
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.read().contains_key(name)
    }
}

/// Adds the tables declared one by one in the config.
fn declared_tables(source: &FilesSource, tables: &mut BTreeMap<String, TableSpec>) -> Result<()> {
    for table in &source.tables {
        let location = match &source.location {
            Some(base) if !is_absolute(&table.location) => join_location(base, &table.location),
            _ => table.location.clone(),
        };
        let spec = TableSpec {
            url: ListingTableUrl::parse(&location)?,
            format: table.format.unwrap_or(source.format),
            csv: table.csv.clone().unwrap_or_else(|| source.csv.clone()),
        };
        tables.insert(table.name.clone(), spec);
    }
    Ok(())
}

/// Lists the direct children of `root`: folders and files of the source's format become tables.
async fn discover_tables(
    runtime: &RuntimeEnv,
    root: &ListingTableUrl,
    source: &FilesSource,
) -> Result<BTreeMap<String, TableSpec>> {
    let store: Arc<dyn ObjectStore> = runtime.object_store(root)?;
    let prefix = root.prefix();
    let listing = store
        .list_with_delimiter(Some(prefix))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let spec_for = |path: &ObjectPath, folder: bool| -> Result<TableSpec> {
        let mut url = format!("{}{}", root.object_store().as_str(), path.as_ref());
        if folder {
            url.push('/');
        }
        Ok(TableSpec {
            url: ListingTableUrl::parse(url)?,
            format: source.format,
            csv: source.csv.clone(),
        })
    };
    let mut tables = BTreeMap::new();
    for dir in &listing.common_prefixes {
        if let Some(name) = dir.filename().filter(|n| !n.starts_with(['.', '_'])) {
            tables.insert(name.to_string(), spec_for(dir, true)?);
        }
    }
    let probe = TableSpec {
        url: root.clone(),
        format: source.format,
        csv: source.csv.clone(),
    };
    let ext = probe.file_extension();
    for object in &listing.objects {
        if let Some(stem) = object
            .location
            .filename()
            .and_then(|f| f.strip_suffix(ext.as_str()))
        {
            if !stem.is_empty() && !stem.starts_with(['.', '_']) {
                tables.insert(stem.to_string(), spec_for(&object.location, false)?);
            }
        }
    }
    Ok(tables)
}

fn is_absolute(location: &str) -> bool {
    Path::new(location).is_absolute() || url::Url::parse(location).is_ok()
}

fn join_location(base: &str, rel: &str) -> String {
    format!("{}{}", folder_url(base), rel.trim_start_matches("./"))
}

/// A folder location always ends with `/` so DataFusion lists it as a collection.
fn folder_url(location: &str) -> String {
    if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    }
}
