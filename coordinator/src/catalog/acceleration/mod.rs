//! Accelerated datasets: a table or view copied as Parquet to a folder every
//! worker reads, and answered from that copy (through the same distributed
//! planner as any file table) once it exists.
//!
//! A copy is a list of segment folders recorded in the metadata store. A full
//! refresh writes a new segment and publishes it alone; an append refresh writes
//! the rows above the high-water mark of `time_column` as one more segment.
//! Publishing is one store update, so readers see the old copy or the new one,
//! never part of one; a failed refresh deletes what it wrote and keeps the old
//! copy. Segments a refresh replaced are deleted at the next refresh (queries
//! planned on them finish first), and a crashed refresh's folder is swept at start.
//! See [`refresh`] for the write itself.

pub mod changes;
pub mod containment;
pub mod refresh;
pub mod scheduler;
pub mod subset;

use parking_lot::Mutex;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use object_store::{ObjectStore, ObjectStoreExt};

use super::config::{AccelerateSpec, RefreshMode};
use super::store::{now_ms, CopyState, RefreshRecord, StoredAcceleration};
use super::Origin;
use crate::config::QuiverConfig;

/// Where copies are written, and how.
#[derive(Debug)]
pub struct Copies {
    /// The folder URL, ending in `/`.
    root: url::Url,
    rows_per_file: usize,
}

impl Copies {
    pub fn new(
        config: &QuiverConfig,
        data_dir: &std::path::Path,
    ) -> std::result::Result<Self, String> {
        let root = match &config.acceleration.location {
            Some(l) if l.contains("://") => {
                url::Url::parse(l).map_err(|e| format!("[acceleration] location '{l}': {e}"))?
            }
            other => {
                let path = other
                    .as_ref()
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| data_dir.join("accelerations"));
                std::fs::create_dir_all(&path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                let path =
                    std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                url::Url::from_directory_path(&path)
                    .map_err(|_| format!("{} is not an absolute folder", path.display()))?
            }
        };
        let mut root = root;
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        Ok(Self {
            root,
            rows_per_file: config.acceleration.rows_per_file.unwrap_or(1 << 20).max(1),
        })
    }

    /// The store the copies are on (registered on the runtime: `file://`, or a files source's bucket).
    pub fn store(&self, state: &SessionState) -> Result<Arc<dyn ObjectStore>> {
        let url = datafusion::execution::object_store::ObjectStoreUrl::parse(
            &self.root[..url::Position::BeforePath],
        )?;
        state.runtime_env().object_store(url).map_err(|e| {
            DataFusionError::Plan(format!(
                "accelerated copies go to {}, but no object store is configured for it (add a files source on that bucket): {e}",
                self.root
            ))
        })
    }

    /// The folder of `dataset`'s segments.
    pub fn dataset_url(&self, dataset: &str) -> Result<url::Url> {
        let folder: String = dataset
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root
            .join(&format!("{folder}/"))
            .map_err(|e| DataFusionError::Internal(e.to_string()))
    }

    /// A new segment folder for `dataset`: named by time, so a sweep can tell old leftovers.
    pub fn new_segment(&self, dataset: &str) -> Result<url::Url> {
        let name = format!(
            "{}-{}/",
            now_ms(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        self.dataset_url(dataset)?
            .join(&name)
            .map_err(|e| DataFusionError::Internal(e.to_string()))
    }

    pub fn rows_per_file(&self) -> usize {
        self.rows_per_file
    }
}

/// The object-store path of a folder or file URL.
pub fn store_path(url: &url::Url) -> Result<object_store::path::Path> {
    object_store::path::Path::from_url_path(url.path())
        .map_err(|e| DataFusionError::Internal(format!("{url}: {e}")))
}

/// One accelerated dataset and its copy.
#[derive(Debug)]
pub struct Accelerated {
    pub dataset: String,
    state: Mutex<State>,
    /// Held while a refresh runs: refreshes of one dataset never overlap.
    refresh_lock: tokio::sync::Mutex<()>,
    /// The task that keeps a live copy (`mode = "changes"`) current, and what it reports.
    pub(crate) feed: changes::Feed,
}

#[derive(Debug)]
struct State {
    spec: AccelerateSpec,
    origin: Origin,
    copy: Option<CopyState>,
    /// The copy as a table, built when the copy was published.
    table: Option<Arc<dyn TableProvider>>,
    last: Option<RefreshRecord>,
    running_since_ms: Option<i64>,
    /// Segments replaced by the last refresh, deleted by the next.
    retired: Vec<String>,
}

/// What `system.accelerations` shows of one dataset.
#[derive(Clone, Debug)]
pub struct AccelerationInfo {
    pub dataset: String,
    pub origin: Origin,
    pub spec: AccelerateSpec,
    pub copy: Option<CopyState>,
    pub last: Option<RefreshRecord>,
    pub refreshing: bool,
    /// Queries read the copy (a live copy may exist and not answer yet).
    pub answering: bool,
    /// A live copy's feed.
    pub feed: Option<changes::FeedStatus>,
}

impl Accelerated {
    pub fn new(stored: &StoredAcceleration) -> Self {
        Self {
            dataset: stored.dataset.clone(),
            state: Mutex::new(State {
                spec: stored.spec.clone(),
                origin: if stored.origin == Origin::Config.as_str() {
                    Origin::Config
                } else {
                    Origin::Sql
                },
                copy: None,
                table: None,
                last: stored.last_refresh.clone(),
                running_since_ms: None,
                retired: vec![],
            }),
            refresh_lock: tokio::sync::Mutex::new(()),
            feed: changes::Feed::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock())
    }

    /// The copy queries read, or None (not built yet: queries read the source).
    pub fn current_table(&self) -> Option<Arc<dyn TableProvider>> {
        self.with(|s| s.table.clone())
    }

    /// Reads the acceleration's definition.
    pub fn with_spec<T>(&self, f: impl FnOnce(&AccelerateSpec) -> T) -> T {
        self.with(|s| f(&s.spec))
    }

    pub fn origin(&self) -> Origin {
        self.with(|s| s.origin)
    }

    pub fn info(&self) -> AccelerationInfo {
        self.with(|s| AccelerationInfo {
            dataset: self.dataset.clone(),
            origin: s.origin,
            spec: s.spec.clone(),
            copy: s.copy.clone(),
            last: s.last.clone(),
            refreshing: s.running_since_ms.is_some(),
            answering: s.table.is_some(),
            feed: (s.spec.mode == RefreshMode::Changes).then(|| self.feed.status()),
        })
    }

    /// Takes the stored definition and copy (another coordinator's refresh, or a
    /// restart); true when what queries read changed.
    pub async fn update_from(&self, stored: &StoredAcceleration, state: &SessionState) -> bool {
        let (same_copy, same_spec) = self.with(|s| {
            (
                s.copy.as_ref().map(|c| &c.segments) == stored.copy.as_ref().map(|c| &c.segments),
                s.spec == stored.spec,
            )
        });
        let table = match (&stored.copy, same_copy) {
            (_, true) => None,
            (None, false) => None,
            (Some(copy), false) => match table_of(state, copy).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(dataset = %stored.dataset, error = %e, "the accelerated copy cannot be read; queries read the source");
                    None
                }
            },
        };
        self.with(|s| {
            s.spec = stored.spec.clone();
            s.last = stored.last_refresh.clone();
            if !same_copy {
                s.copy = stored.copy.clone().filter(|_| table.is_some());
                s.table = table;
            }
        });
        !same_copy || !same_spec
    }

    /// Whether the scheduler should refresh now: no copy yet and never tried, or
    /// `refresh_secs` passed since the last refresh started.
    pub fn due(&self, now: i64) -> bool {
        self.with(|s| {
            // A live copy is kept current by its feed, not refreshed.
            if s.running_since_ms.is_some() || s.spec.mode == RefreshMode::Changes {
                return false;
            }
            match &s.last {
                None => s.copy.is_none(),
                Some(last) => {
                    s.spec.refresh_secs > 0
                        && now - last.started_ms >= (s.spec.refresh_secs as i64) * 1000
                }
            }
        })
    }

    pub fn segments(&self) -> Vec<String> {
        self.with(|s| {
            s.copy
                .as_ref()
                .map(|c| c.segments.clone())
                .unwrap_or_default()
        })
    }
}

/// A copy as a table: Parquet files of its segment folders, with statistics, so
/// scans are split across workers and pruned like any file table; a live copy
/// as its base and change set. None: a live copy not yet consistent.
pub async fn table_of(
    state: &SessionState,
    copy: &CopyState,
) -> Result<Option<Arc<dyn TableProvider>>> {
    match (&copy.changes, &copy.filter) {
        (Some(changes), _) => changes::table_of(state, changes).await,
        (None, None) => listing_table(state, &copy.segments, true).await.map(Some),
        // Read with the types it was written with, so it can stand in for the source.
        (None, Some(filter)) => {
            let table = listing_table(state, &copy.segments, false).await?;
            let subset = subset::CopyOfSubset::new(state, table, filter)?;
            Ok(Some(Arc::new(subset)))
        }
    }
}

/// The Parquet files of `segments` as one table; strings as views when `views`.
pub(super) async fn listing_table(
    state: &SessionState,
    segments: &[String],
    views: bool,
) -> Result<Arc<dyn TableProvider>> {
    let urls = segments
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<Result<Vec<_>>>()?;
    let format = ParquetFormat::default().with_force_view_types(views);
    let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(state)
        .await?;
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Deletes every object under `folder`.
pub async fn delete_folder(store: &Arc<dyn ObjectStore>, folder: &url::Url) -> Result<()> {
    use futures::TryStreamExt;
    let prefix = store_path(folder)?;
    let objects: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    for o in objects {
        store
            .delete(&o.location)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
    }
    // Local folders stay behind as empty directories otherwise.
    if folder.scheme() == "file" {
        if let Ok(path) = folder.to_file_path() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
    Ok(())
}
