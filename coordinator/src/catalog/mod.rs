//! Virtual datasets: views, accelerated copies and the metadata store they live in.
//!
//! - [`store`]: where definitions and copy states outlive the coordinator (SQLite
//!   or PostgreSQL, versioned migrations).
//! - [`views`]: view definitions and how a view is planned (inlined, so pushdown
//!   and the distributed planner see through it).
//! - [`overlay`]: the catalog list every session reads: the sources' catalogs with
//!   views added and accelerated tables answered from their copies.
//! - [`acceleration`]: local Parquet copies of tables and views, their refreshes.
//! - [`namespaces`]: schemas made with `CREATE SCHEMA`, places for views.
//! - [`commands`]: the DDL for all of it (`CREATE VIEW`, `ALTER TABLE … SET
//!   (accelerated = true)`, `REFRESH ACCELERATION`, …), run like any query.
//!
//! [`Datasets`] ties them together: one per engine.

pub mod acceleration;
pub mod commands;
pub mod config;
pub mod namespaces;
pub mod overlay;
pub mod store;
pub mod system_tables;
pub mod views;

use parking_lot::RwLock;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use datafusion::catalog::CatalogProviderList;
use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};

pub use self::acceleration::scheduler::run_scheduler;
use self::acceleration::{Accelerated, Copies};
use self::store::{MetadataStore, StoreError};
use self::views::{ViewDef, ViewPlans};
use crate::config::QuiverConfig;

/// Where a definition came from: the config file (read-only from SQL) or SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Config,
    Sql,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Sql => "sql",
        }
    }
}

/// The views and accelerations of one engine, with the store behind them.
#[derive(Debug)]
pub struct Datasets {
    store: Arc<dyn MetadataStore>,
    /// Catalog and schema unqualified names resolve in.
    defaults: (String, String),
    views: RwLock<BTreeMap<String, ViewDef>>,
    /// Schemas made with `CREATE SCHEMA` (`catalog.schema`): places for views.
    namespaces: RwLock<BTreeSet<String>>,
    accelerations: RwLock<BTreeMap<String, Arc<Accelerated>>>,
    /// Moves whenever a definition or a copy changes: cached plans and results
    /// made before are not used again.
    generation: AtomicU64,
    /// The store's change counter last loaded (for stores shared by coordinators).
    store_version: AtomicI64,
    /// The sources' catalogs, under the overlay.
    inner: OnceLock<Arc<dyn CatalogProviderList>>,
    /// The engine's state, for planning view bodies and refreshes.
    base: OnceLock<SessionState>,
    plans: ViewPlans,
    copies: Copies,
    /// The results cache, told when a copy changes.
    cache: Arc<crate::cache::ResultsCache>,
    pub counters: DatasetCounters,
    /// The config's sources: where a live copy's change stream comes from.
    sources: Vec<quiver_connectors::SourceConfig>,
}

/// Refresh metrics.
#[derive(Debug, Default)]
pub struct DatasetCounters {
    pub refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
    pub refresh_millis: AtomicU64,
}

pub(crate) fn store_error(e: StoreError) -> DataFusionError {
    DataFusionError::Execution(e.to_string())
}

impl Datasets {
    /// Opens the metadata store the config names and loads views and accelerations
    /// (the config's own and those made with SQL).
    pub async fn open(
        config: &QuiverConfig,
        defaults: (String, String),
        cache: Arc<crate::cache::ResultsCache>,
    ) -> std::result::Result<Arc<Self>, String> {
        let data_dir = config.data_dir();
        let store: Arc<dyn MetadataStore> = match config.metadata.url.as_ref().map(|u| u.expose()) {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Arc::new(
                    store::postgres::PostgresStore::open(
                        config.metadata.url.as_ref().ok_or("unreachable")?,
                        config.metadata.tls_ca_file.as_deref(),
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                )
            }
            Some(url) => {
                let path = url.strip_prefix("sqlite://").ok_or_else(|| {
                    format!(
                        "[metadata] url must start with postgres:// or sqlite:// (got '{}')",
                        url.split(':').next().unwrap_or("")
                    )
                })?;
                Arc::new(
                    store::sqlite::SqliteStore::open(std::path::Path::new(path))
                        .map_err(|e| e.to_string())?,
                )
            }
            None => Arc::new(
                store::sqlite::SqliteStore::open(&data_dir.join("metadata.db"))
                    .map_err(|e| e.to_string())?,
            ),
        };
        let copies = Copies::new(config, &data_dir)?;
        let datasets = Arc::new(Self {
            store,
            defaults,
            views: RwLock::default(),
            namespaces: RwLock::default(),
            accelerations: RwLock::default(),
            generation: AtomicU64::new(1),
            store_version: AtomicI64::new(-1),
            inner: OnceLock::new(),
            base: OnceLock::new(),
            plans: ViewPlans::default(),
            copies,
            cache,
            counters: DatasetCounters::default(),
            sources: config.source.clone(),
        });
        datasets.load_config(config).await?;
        Ok(datasets)
    }

    /// Puts the config's views in memory and its accelerations in the store
    /// (keeping the state of copies made before a restart).
    async fn load_config(&self, config: &QuiverConfig) -> std::result::Result<(), String> {
        let mut config_views = BTreeMap::new();
        let mut specs = vec![];
        for v in &config.view {
            let name = self
                .qualify(&v.name)
                .map_err(|e| format!("[[view]] {}: {e}", v.name))?;
            // The config's text is checked when the view is first used: its sources may not be up yet.
            config_views.insert(
                name.clone(),
                ViewDef {
                    name: name.clone(),
                    sql: v.sql.clone(),
                    origin: Origin::Config,
                    created_ms: 0,
                },
            );
            if let Some(spec) = &v.accelerate {
                specs.push((name, spec.clone()));
            }
        }
        for t in &config.table {
            let name = self
                .qualify(&t.name)
                .map_err(|e| format!("[[table]] {}: {e}", t.name))?;
            if let Some(spec) = &t.accelerate {
                specs.push((name, spec.clone()));
            }
        }
        {
            let mut views = self.views.write();
            *views = config_views;
        }
        let stored = self
            .store
            .accelerations()
            .await
            .map_err(|e| e.to_string())?;
        for (name, spec) in specs {
            let previous = stored.iter().find(|a| a.dataset == name);
            if previous.is_some_and(|p| p.origin == Origin::Config.as_str() && p.spec == spec) {
                continue;
            }
            let keep = previous.filter(|p| spec.keeps_copy_of(&p.spec));
            let acceleration = store::StoredAcceleration {
                dataset: name,
                origin: Origin::Config.as_str().into(),
                spec,
                copy: keep.and_then(|p| p.copy.clone()),
                last_refresh: keep.and_then(|p| p.last_refresh.clone()),
            };
            self.store
                .put_acceleration(&acceleration)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Reads views and accelerations from the store when it changed since the last read.
    pub async fn reload(&self) -> Result<bool> {
        let version = self.store.version().await.map_err(store_error)?;
        if self.store_version.swap(version, Ordering::SeqCst) == version {
            return Ok(false);
        }
        let stored_views = self.store.views().await.map_err(store_error)?;
        let namespaces = self.store.namespaces().await.map_err(store_error)?;
        let namespaces_before = self.namespaces.read().len();
        let namespaces_changed = namespaces.len() != namespaces_before;
        {
            let mut n = self.namespaces.write();
            *n = namespaces.into_iter().collect();
        }
        let stored = self.store.accelerations().await.map_err(store_error)?;
        let before: Vec<(String, String)> =
            self.views().into_iter().map(|v| (v.name, v.sql)).collect();
        {
            let mut views = self.views.write();
            views.retain(|_, v| v.origin == Origin::Config);
            for v in stored_views {
                if views
                    .get(&v.name)
                    .is_some_and(|c| c.origin == Origin::Config)
                {
                    tracing::warn!(view = %v.name, "a view made with SQL has the name of one in the config; the config's is used");
                    continue;
                }
                views.insert(
                    v.name.clone(),
                    ViewDef {
                        name: v.name,
                        sql: v.sql,
                        origin: Origin::Sql,
                        created_ms: v.created_ms,
                    },
                );
            }
        }
        let Some(state) = self.base.get() else {
            return Err(DataFusionError::Internal(
                "datasets are not attached".into(),
            ));
        };
        let current = self.accelerations();
        let mut changed = vec![];
        let mut next = BTreeMap::new();
        for a in stored {
            let entry = current.iter().find(|c| c.dataset == a.dataset).cloned();
            let fresh = entry.is_none();
            let entry = entry.unwrap_or_else(|| Arc::new(Accelerated::new(&a)));
            if entry.update_from(&a, state).await || fresh {
                changed.push(a.dataset.clone());
            }
            next.insert(a.dataset, entry);
        }
        changed.extend(
            current
                .iter()
                .filter(|c| !next.contains_key(&c.dataset))
                .map(|c| c.dataset.clone()),
        );
        {
            let mut accelerations = self.accelerations.write();
            *accelerations = next;
        }
        let after: Vec<(String, String)> =
            self.views().into_iter().map(|v| (v.name, v.sql)).collect();
        // The counter also moves for changes already applied here (this coordinator's own
        // refresh): cached plans and answers stay valid then.
        if before != after || !changed.is_empty() || namespaces_changed {
            self.changed(&changed);
        }
        Ok(true)
    }

    /// Something changed: plans and cached results made before are stale, and
    /// those that read `datasets` are dropped from the cache now.
    pub fn changed(&self, datasets: &[String]) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.plans.clear();
        for d in datasets {
            self.cache.invalidate_reading(d);
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Installs the catalogs under the overlay and the state views are planned in,
    /// then loads views and copies from the store; called once by the engine.
    pub async fn attach(
        &self,
        inner: Arc<dyn CatalogProviderList>,
        base: SessionState,
    ) -> Result<()> {
        let _ = self.inner.set(inner);
        let _ = self.base.set(base.clone());
        self.reload().await?;
        for acc in self.accelerations() {
            match acceleration::refresh::sweep(self, &acc, &base).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(dataset = %acc.dataset, folders = n, "removed what unfinished refreshes left")
                }
                Err(e) => {
                    tracing::warn!(dataset = %acc.dataset, error = %e, "cannot sweep the copies' folder")
                }
            }
        }
        Ok(())
    }

    /// The state the engine plans in (set by [`Self::attach`]).
    pub fn base_state(&self) -> Option<&SessionState> {
        self.base.get()
    }

    /// The catalogs with views and copies: what sessions read. With `bypass_copies`,
    /// accelerated datasets are read from their source (what a refresh reads).
    pub fn catalogs(self: &Arc<Self>, bypass_copies: bool) -> Result<Arc<dyn CatalogProviderList>> {
        let inner = self
            .inner
            .get()
            .ok_or_else(|| DataFusionError::Internal("datasets are not attached".into()))?;
        Ok(Arc::new(overlay::VirtualCatalogList::new(
            inner.clone(),
            self.clone(),
            bypass_copies,
        )))
    }

    /// The engine's state over [`Self::catalogs`], unrestricted (view bodies and
    /// refreshes are planned in it; users' rules apply to the plans they end up in).
    pub fn planning_state(self: &Arc<Self>, bypass_copies: bool) -> Result<SessionState> {
        let base = self
            .base
            .get()
            .ok_or_else(|| DataFusionError::Internal("datasets are not attached".into()))?;
        Ok(SessionStateBuilder::new_from_existing(base.clone())
            .with_catalog_list(self.catalogs(bypass_copies)?)
            .build())
    }

    /// `catalog.schema.name` for a name as written (`name`, `schema.name` or full).
    pub fn qualify(&self, name: &str) -> Result<String> {
        let reference = datafusion::common::TableReference::parse_str(name);
        if reference.table().is_empty() {
            return plan_err!("'{name}' is not a table name");
        }
        let r = reference.resolve(&self.defaults.0, &self.defaults.1);
        Ok(format!("{}.{}.{}", r.catalog, r.schema, r.table))
    }

    pub fn view(&self, name: &str) -> Option<ViewDef> {
        self.views.read().get(name).cloned()
    }

    /// Every view, by name.
    pub fn views(&self) -> Vec<ViewDef> {
        self.views.read().values().cloned().collect()
    }

    /// Whether `catalog.schema` was made with `CREATE SCHEMA`.
    pub fn is_namespace(&self, catalog: &str, schema: &str) -> bool {
        self.namespaces
            .read()
            .contains(&format!("{catalog}.{schema}"))
    }

    /// Views in `catalog.schema`.
    pub(crate) fn views_in(&self, catalog: &str, schema: &str) -> Vec<String> {
        let prefix = format!("{catalog}.{schema}.");
        self.views
            .read()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// Schemas of `catalog` that hold views.
    fn view_schemas(&self, catalog: &str) -> Vec<String> {
        let prefix = format!("{catalog}.");
        let mut out: Vec<String> = self
            .views
            .read()
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_once('.').map(|(s, _)| s.to_string()))
            .collect();
        {
            let n = self.namespaces.read();
            out.extend(
                n.iter()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(str::to_string),
            );
        }
        out.sort();
        out.dedup();
        out
    }

    pub fn acceleration(&self, dataset: &str) -> Option<Arc<Accelerated>> {
        self.accelerations.read().get(dataset).cloned()
    }

    pub fn accelerations(&self) -> Vec<Arc<Accelerated>> {
        self.accelerations.read().values().cloned().collect()
    }

    pub(crate) fn sources(&self) -> &[quiver_connectors::SourceConfig] {
        &self.sources
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    pub(crate) fn copies(&self) -> &Copies {
        &self.copies
    }

    pub(crate) fn plans(&self) -> &ViewPlans {
        &self.plans
    }

    /// Whether a source has a table named `catalog.schema.table`.
    pub(crate) async fn inner_table_exists(&self, name: &str) -> bool {
        let mut parts = name.splitn(3, '.');
        let (Some(c), Some(s), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let Some(schema) = self
            .inner
            .get()
            .and_then(|l| l.catalog(c))
            .and_then(|c| c.schema(s))
        else {
            return false;
        };
        matches!(schema.table(t).await, Ok(Some(_)))
    }

    pub(crate) fn inner_catalogs(&self) -> Option<&Arc<dyn CatalogProviderList>> {
        self.inner.get()
    }
}
