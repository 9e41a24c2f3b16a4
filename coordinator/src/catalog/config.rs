//! The virtual-dataset parts of the config file: where metadata lives, views and
//! accelerations declared in TOML, and the results cache.

use std::path::{Path, PathBuf};

use quiver_connectors::env::EnvString;
use serde::Deserialize;

use crate::config::byte_size::ByteSize;

/// `[metadata]`: the store of views and accelerations.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// `postgres://…` to share one catalog between coordinators, or `sqlite:///path`;
    /// absent: SQLite at `<server.data_dir>/metadata.db`.
    #[serde(default)]
    pub url: Option<EnvString>,
    /// PEM file of the CAs for a PostgreSQL store over TLS (as for sources).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// How often another coordinator's changes in a shared store are picked up.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: f64,
}

fn default_poll_secs() -> f64 {
    2.0
}

/// `[acceleration]`: where accelerated copies are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccelerationConfig {
    /// Whether this coordinator runs scheduled refreshes (with a shared store,
    /// let one coordinator do it); `REFRESH ACCELERATION` works either way.
    #[serde(default = "yes")]
    pub scheduled: bool,
    /// A folder every worker can read (`s3://bucket/prefix` under a files source's
    /// bucket, or a shared volume); absent: `<server.data_dir>/accelerations`.
    #[serde(default)]
    pub location: Option<String>,
    /// Rows per Parquet file of a copy: more files spread a copy over more workers.
    #[serde(default)]
    pub rows_per_file: Option<usize>,
}

impl Default for AccelerationConfig {
    fn default() -> Self {
        Self {
            scheduled: true,
            location: None,
            rows_per_file: None,
        }
    }
}

/// How one dataset is accelerated: `accelerate = { refresh_secs = 300, mode = "full" }`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccelerateSpec {
    /// Refresh every this many seconds; 0 = only on `REFRESH ACCELERATION`.
    #[serde(default)]
    pub refresh_secs: u64,
    #[serde(default)]
    pub mode: RefreshMode,
    /// With `mode = "append"`: rows whose value here is above the copy's highest are fetched.
    #[serde(default)]
    pub time_column: Option<String>,
    /// Columns the copy is sorted by (so Parquet statistics prune well).
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// With `mode = "changes"`: the replication slot to read (made if missing;
    /// default `quiver_<dataset>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// With `mode = "changes"`: the publication that names the table (made if
    /// missing; default the slot's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,
    /// The copy holds only the rows where this SQL predicate holds (`region = 'EU'`,
    /// `order_date >= current_date - interval '90 days'`, resolved at each refresh); a
    /// query is answered from it only when its own filters imply it
    /// (`acceleration/subset.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RefreshMode {
    /// Rebuild the whole copy.
    #[default]
    Full,
    /// Fetch only rows newer than the copy's high-water mark of `time_column`.
    Append,
    /// Keep the copy current from a PostgreSQL table's logical replication stream
    /// (`acceleration/changes/`).
    Changes,
}

impl RefreshMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshMode::Full => "full",
            RefreshMode::Append => "append",
            RefreshMode::Changes => "changes",
        }
    }
}

impl AccelerateSpec {
    /// Whether a copy made under `previous` is still a valid copy under this spec
    /// (the same mode and high-water column; refresh interval and sort may change).
    pub fn keeps_copy_of(&self, previous: &AccelerateSpec) -> bool {
        self.mode == previous.mode
            && self.time_column == previous.time_column
            && self.slot == previous.slot
            && self.publication == previous.publication
            && self.filter == previous.filter
    }

    pub fn validate(&self, dataset: &str) -> Result<(), String> {
        if self.mode == RefreshMode::Append && self.time_column.is_none() {
            return Err(format!(
                "acceleration of {dataset}: mode = \"append\" needs time_column"
            ));
        }
        if self.mode != RefreshMode::Changes && (self.slot.is_some() || self.publication.is_some())
        {
            return Err(format!(
                "acceleration of {dataset}: slot and publication go with mode = \"changes\""
            ));
        }
        if self.mode == RefreshMode::Changes && self.filter.is_some() {
            return Err(format!(
                "acceleration of {dataset}: a live copy (mode = \"changes\") holds the whole table; a filter goes with mode = \"full\" or \"append\""
            ));
        }
        if self.filter.as_deref().is_some_and(|f| f.trim().is_empty()) {
            return Err(format!("acceleration of {dataset}: the filter is empty"));
        }
        if self.mode == RefreshMode::Changes && self.refresh_secs > 0 {
            return Err(format!(
                "acceleration of {dataset}: mode = \"changes\" keeps the copy current from the change stream; refresh_secs does not apply"
            ));
        }
        Ok(())
    }
}

/// `[[view]]`: a view declared in the config (read-only: SQL cannot drop or replace it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// `catalog.schema.name`, `schema.name` or `name` (in the default schema).
    pub name: String,
    pub sql: String,
    #[serde(default)]
    pub accelerate: Option<AccelerateSpec>,
}

/// `[[table]]`: settings of one source table, for now its acceleration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    #[serde(default)]
    pub accelerate: Option<AccelerateSpec>,
}

/// `[cache]`: results of repeated read-only statements, in memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Off by default: an answer over a source that is not accelerated can be up to
    /// `ttl_secs` old, which a federation user should choose knowingly.
    #[serde(default)]
    pub enabled: bool,
    /// Memory all cached results may take together.
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: ByteSize,
    /// A result larger than this is not cached.
    #[serde(default = "default_entry_bytes")]
    pub max_entry_bytes: ByteSize,
    /// An entry older than this is not served.
    #[serde(default = "default_ttl")]
    pub ttl_secs: f64,
}

fn yes() -> bool {
    true
}
fn default_cache_bytes() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_entry_bytes() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_ttl() -> f64 {
    300.0
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_bytes: default_cache_bytes(),
            max_entry_bytes: default_entry_bytes(),
            ttl_secs: default_ttl(),
        }
    }
}

/// A relative path in the config is relative to the config file's folder.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}
