//! The metadata store: views and accelerations (with the state of their copies)
//! that outlive the coordinator. SQLite by default ([`sqlite`]); PostgreSQL
//! ([`postgres`]) when several coordinators share one catalog.
//!
//! Both run the same versioned migrations ([`MIGRATIONS`]), recorded in
//! `quiver_schema_migrations`; a store written by a newer Quiver is refused.
//! Every change bumps `quiver_changes.version`, which coordinators sharing a store
//! poll to pick up each other's changes.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::config::AccelerateSpec;

/// The schema, one step per version; never edit a released step, add one.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE quiver_views (
        name TEXT PRIMARY KEY,
        sql TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    CREATE TABLE quiver_accelerations (
        dataset TEXT PRIMARY KEY,
        origin TEXT NOT NULL,
        spec TEXT NOT NULL,
        copy TEXT,
        last_refresh TEXT,
        updated_ms BIGINT NOT NULL
    );
    CREATE TABLE quiver_changes (id INTEGER PRIMARY KEY, version BIGINT NOT NULL);
    INSERT INTO quiver_changes (id, version) VALUES (1, 0);",
    ),
    (
        2,
        "CREATE TABLE quiver_namespaces (
        name TEXT PRIMARY KEY,
        created_ms BIGINT NOT NULL
    );",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store ({store}): {message}")]
    Backend {
        store: &'static str,
        message: String,
    },
    #[error("metadata store: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A view created with `CREATE VIEW`.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredView {
    /// `catalog.schema.name`.
    pub name: String,
    /// The query, as the parser printed it.
    pub sql: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// An accelerated dataset: how, and the copy it has now.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAcceleration {
    /// `catalog.schema.name` of the table or view.
    pub dataset: String,
    /// `config` (read-only from SQL) or `sql`.
    pub origin: String,
    pub spec: AccelerateSpec,
    pub copy: Option<CopyState>,
    pub last_refresh: Option<RefreshRecord>,
}

/// The copy queries read: folders of Parquet files, published together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopyState {
    /// Folder URLs (`file:///…/`, `s3://…/`); a full refresh writes one, each append one more.
    pub segments: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    pub files: u64,
    /// The highest `time_column` value in the copy (append mode), as text.
    pub high_water: Option<String>,
    /// When the refresh that made this copy started (what the copy is as fresh as).
    pub as_of_ms: i64,
    /// A copy kept live from a change stream (`mode = "changes"`): its parts and
    /// how far it has applied the stream. `segments` lists the same folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangesState>,
    /// The copy holds exactly the source's rows where this predicate holds: the
    /// acceleration's `filter` with `now()` and `current_date` fixed to the refresh
    /// that made the copy, as SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// The state of a live copy, published with it in one store update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangesState {
    pub slot: String,
    pub publication: String,
    /// Whether Quiver made the publication (and drops it with the slot).
    pub publication_created: bool,
    /// The folders of the base copy (the initial copy, or the last compaction).
    pub base: Vec<String>,
    /// The folder of the change set: one row per key changed since the base.
    pub change_set: Option<String>,
    pub key: Vec<String>,
    /// The table's columns when the base was taken: another shape means a new copy.
    pub columns: Vec<String>,
    /// Every change up to here is in the copy; the stream resumes after it.
    pub applied_lsn: u64,
    /// The copy answers queries once `applied_lsn` reaches this (the server's
    /// position when the initial copy ended).
    pub consistent_from: u64,
    /// Rows of the base and of the change set.
    pub base_rows: u64,
    pub change_rows: u64,
    /// Row changes applied since the copy was made.
    pub changes_applied: u64,
    /// Commit time of the last transaction applied, ms since 1970.
    pub last_commit_ms: i64,
}

/// The outcome of the last refresh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub started_ms: i64,
    pub ended_ms: i64,
    /// `ok` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
    /// Rows the refresh fetched.
    pub rows: u64,
}

#[async_trait]
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    /// The change counter: it moves whenever anything here changes.
    async fn version(&self) -> Result<i64>;
    async fn views(&self) -> Result<Vec<StoredView>>;
    /// Stores a view; with `replace = false` an existing one is an error.
    async fn put_view(&self, view: &StoredView, replace: bool) -> Result<()>;
    /// Removes a view; false when there was none.
    async fn drop_view(&self, name: &str) -> Result<bool>;
    /// Schemas made with `CREATE SCHEMA` (`catalog.schema`), for views.
    async fn namespaces(&self) -> Result<Vec<String>>;
    /// Records a namespace; false if it was there already.
    async fn put_namespace(&self, name: &str) -> Result<bool>;
    async fn drop_namespace(&self, name: &str) -> Result<bool>;
    async fn accelerations(&self) -> Result<Vec<StoredAcceleration>>;
    /// Inserts or replaces one acceleration with its state.
    async fn put_acceleration(&self, acceleration: &StoredAcceleration) -> Result<()>;
    async fn drop_acceleration(&self, dataset: &str) -> Result<bool>;
}

/// The columns of an acceleration as the stores keep them (JSON text for the nested parts).
pub(crate) struct AccelerationRow {
    pub dataset: String,
    pub origin: String,
    pub spec: String,
    pub copy: Option<String>,
    pub last_refresh: Option<String>,
}

impl AccelerationRow {
    pub fn encode(a: &StoredAcceleration) -> Result<Self> {
        let json = |v: &dyn erased::Json| {
            v.to_json()
                .map_err(|e| StoreError::Invalid(format!("cannot encode {}: {e}", a.dataset)))
        };
        Ok(Self {
            dataset: a.dataset.clone(),
            origin: a.origin.clone(),
            spec: json(&a.spec)?,
            copy: a.copy.as_ref().map(|c| json(c)).transpose()?,
            last_refresh: a.last_refresh.as_ref().map(|r| json(r)).transpose()?,
        })
    }

    pub fn decode(self) -> Result<StoredAcceleration> {
        let bad = |what: &str, e: serde_json::Error| {
            StoreError::Invalid(format!(
                "acceleration {}: unreadable {what}: {e}",
                self.dataset
            ))
        };
        let spec = serde_json::from_str(&self.spec).map_err(|e| bad("spec", e))?;
        let copy = self
            .copy
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| bad("copy", e))?;
        let last_refresh = self
            .last_refresh
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| bad("last refresh", e))?;
        Ok(StoredAcceleration {
            dataset: self.dataset,
            origin: self.origin,
            spec,
            copy,
            last_refresh,
        })
    }
}

mod erased {
    pub trait Json {
        fn to_json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Refuses a store whose schema is newer than this build knows.
fn check_version(store: &'static str, applied: i64) -> Result<()> {
    let known = MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
    if applied > known {
        return Err(StoreError::Backend {
            store,
            message: format!("its schema is at version {applied}, newer than this Quiver knows ({known}); upgrade Quiver"),
        });
    }
    Ok(())
}
