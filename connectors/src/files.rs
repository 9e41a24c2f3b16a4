//! File tables (Parquet, CSV, NDJSON, Arrow IPC) on local disk or an object store.
//!
//! A folder is one table: every file in it (recursively) with the table's
//! extension, with hive-style `key=value` folders turned into partition columns.
//! Tables are resolved lazily on first use and cached, so a table whose folder is
//! missing or whose files are corrupt gives a clear error for that table only.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat as DfFileFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
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
    tables: BTreeMap<String, TableSpec>,
    resolved: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    runtime: Arc<RuntimeEnv>,
    config: SessionConfig,
}

impl std::fmt::Debug for FilesSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesSchema").field("schema", &self.qualified).field("tables", &self.tables.keys()).finish()
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
        if let Some(location) = &source.location {
            let root = ListingTableUrl::parse(folder_url(location))?;
            match discover_tables(&runtime, &root, source).await {
                Ok(found) => tables.extend(found),
                Err(e) => warnings.push(format!("schema {qualified}: cannot list {location}: {e}")),
            }
            if tables.is_empty() && source.tables.is_empty() {
                warnings.push(format!("schema {qualified}: no tables found under {location}"));
            }
        }
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
        Ok((Self { qualified, tables, resolved: Mutex::new(HashMap::new()), runtime, config }, warnings))
    }

    fn state(&self) -> SessionState {
        SessionStateBuilder::new()
            .with_config(self.config.clone())
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .build()
    }

    async fn resolve(&self, name: &str, spec: &TableSpec) -> Result<Arc<dyn TableProvider>> {
        let state = self.state();
        let store = self.runtime.object_store(&spec.url)?;
        let ext = spec.file_extension();
        let first = spec.url.list_all_files(&state, store.as_ref(), &ext).await?.next().await;
        match first {
            Some(Err(e)) => return Err(e),
            Some(Ok(_)) => {}
            None => return Err(DataFusionError::Plan(missing_files_message(&spec.url, &ext))),
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
        self.tables.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(spec) = self.tables.get(name) else { return Ok(None) };
        if let Some(table) = self.resolved.lock().map_err(poisoned)?.get(name) {
            return Ok(Some(table.clone()));
        }
        let table = self.resolve(name, spec).await.map_err(|e| {
            DataFusionError::Plan(format!("table {}.{name} ({}) is unavailable: {e}", self.qualified, spec.url))
        })?;
        self.resolved.lock().map_err(poisoned)?.insert(name.to_string(), table.clone());
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }
}

fn poisoned<T>(_: T) -> DataFusionError {
    DataFusionError::Internal("table cache lock poisoned".into())
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
        Ok(TableSpec { url: ListingTableUrl::parse(url)?, format: source.format, csv: source.csv.clone() })
    };
    let mut tables = BTreeMap::new();
    for dir in &listing.common_prefixes {
        if let Some(name) = dir.filename().filter(|n| !n.starts_with(['.', '_'])) {
            tables.insert(name.to_string(), spec_for(dir, true)?);
        }
    }
    let probe = TableSpec { url: root.clone(), format: source.format, csv: source.csv.clone() };
    let ext = probe.file_extension();
    for object in &listing.objects {
        if let Some(stem) = object.location.filename().and_then(|f| f.strip_suffix(ext.as_str())) {
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
