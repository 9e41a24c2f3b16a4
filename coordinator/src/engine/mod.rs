//! The query engine: one DataFusion session state over the virtual schema, with
//! the distribution rule installed; a fresh session (id = query id) per query.

use std::sync::Arc;

use datafusion::catalog::MemoryCatalogProvider;
use datafusion::error::Result;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::prelude::{SessionConfig, SessionContext};
use quiver_connectors::config::DEFAULT_CATALOG;
use quiver_connectors::remote_schema::RemoteSchema;
use quiver_proto::QuiverCodec;

use crate::admission::Admission;
use crate::config::QuiverConfig;
use crate::distributed::{DistributeFragments, Scheduler, SchedulerSettings};
use crate::pool::WorkerPool;
use crate::security::access::{AccessPolicy, UserAccess};
use crate::security::audit::AuditLog;
use crate::security::authn::User;
use crate::security::catalog_view::CatalogView;

mod federation;
mod join_order;
mod plan_notes;
mod query_planner;
mod session;
pub mod statement;
mod subset_scans;
pub use session::{Executed, Outcome, QuerySession};
pub use statement::Planned;

pub struct QueryEngine {
    base: SessionState,
    /// SQL-database schemas, for REFRESH.
    remote: Vec<Arc<RemoteSchema>>,
    pool: Arc<WorkerPool>,
    queries: Arc<crate::observe::queries::QueryLog>,
    /// `server.target_partitions`; absent = 2 per healthy worker at planning time,
    /// so a pool that grows spreads the next query wider.
    fixed_partitions: Option<usize>,
    /// `server.query_timeout_secs`.
    query_timeout: Option<std::time::Duration>,
    /// `[access]`: who may read what.
    policy: AccessPolicy,
    admission: Arc<Admission>,
    max_statement_bytes: usize,
    /// Stage tasks and fragments run, for `system.fragments` and the console.
    fragments: Arc<crate::observe::fragments::FragmentLog>,
    /// Each source's `catalog.schema` and kind (`files`, `postgres`, `mysql`), for the console.
    sources: Vec<(String, &'static str)>,
    /// Views and accelerated copies.
    datasets: Arc<crate::catalog::Datasets>,
    cache: Arc<crate::cache::ResultsCache>,
    /// Where writes may go.
    writes: Arc<crate::writes::Writes>,
    /// `workers.client_endpoints`.
    client_endpoints: bool,
}

impl QueryEngine {
    /// Registers the configured sources and returns the engine and any warnings about them.
    pub async fn new(
        config: &QuiverConfig,
        pool: Arc<WorkerPool>,
        codec: QuiverCodec,
    ) -> std::result::Result<(Self, Vec<String>), quiver_connectors::ConnectorError> {
        let first = config.source.first();
        let catalog = config
            .server
            .default_catalog
            .clone()
            .or_else(|| first.map(|s| s.catalog_name().to_string()))
            .unwrap_or_else(|| DEFAULT_CATALOG.to_string());
        let schema = config
            .server
            .default_schema
            .clone()
            .or_else(|| first.map(|s| s.schema_name().to_string()))
            .unwrap_or_else(|| "public".to_string());
        let partitions = config
            .server
            .target_partitions
            .unwrap_or_else(|| (pool.all().len() * 2).max(2));
        let mut session_config = SessionConfig::new()
            .with_default_catalog_and_schema(&catalog, &schema)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_target_partitions(partitions);
        if config.workers.exchanges {
            // DataFusion's 1 MiB is for threads sharing memory. Across workers, a build
            // side that every task reads whole costs less than a shuffle of the probe
            // side: at SF1, q3 and q5 shuffled all the lineitem rows they read to
            // join them with a few MB of orders.
            let bytes =
                usize::try_from(config.workers.broadcast_join_max_bytes.0).unwrap_or(usize::MAX);
            let optimizer = &mut session_config.options_mut().optimizer;
            optimizer.hash_join_single_partition_threshold = bytes;
            // Used when a side's size is unknown but its rows are not: 64 bytes a row.
            optimizer.hash_join_single_partition_threshold_rows = bytes / 64;
        }
        quiver_connectors::join_keys::configure(
            session_config.options_mut(),
            config.workers.join_keys_max,
        );
        // Joins' dynamic filters stay on: where the plan runs whole (on the
        // coordinator, or a one-partition fragment) they filter probe-side scans and
        // databases; workers turn them off for stage tasks they cannot rewrite into a
        // plan of one partition (worker/src/partition_exec.rs).
        let fragments = Arc::new(crate::observe::fragments::FragmentLog::default());
        let scheduler = config.workers.exchanges.then(|| {
            let settings = SchedulerSettings {
                max_fragments_per_worker: config.workers.max_fragments_per_worker,
                task_attempts: config.workers.task_attempts.max(1),
                query_memory_limit: Some(config.workers.query_memory_limit.0),
                exchange_mode: config.workers.exchange_mode,
                dynamic_filter_values: config
                    .workers
                    .dynamic_filters
                    .then_some(config.workers.join_keys_max),
            };
            Arc::new(Scheduler::new(
                pool.clone(),
                codec.clone(),
                settings,
                fragments.clone(),
            ))
        });
        let writes = Arc::new(crate::writes::Writes::default());
        // Listings of file tables are cached, but not forever: files others add show
        // within seconds (Quiver's own writes clear the cache when they commit).
        let caches = datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
            .with_list_files_cache_ttl(Some(std::time::Duration::from_secs(10)));
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_analyzer_rules(analyzer_rules())
            .with_optimizer_rules(optimizer_rules())
            .with_query_planner(Arc::new(query_planner::QuiverQueryPlanner::new(
                config.server.join_order,
            )))
            .with_physical_optimizer_rule(Arc::new(crate::writes::StageWrites::new(writes.clone())))
            .with_physical_optimizer_rule(Arc::new(DistributeFragments::new(
                pool.clone(),
                codec,
                scheduler,
                config.workers.single_stage_max_bytes.0,
                config.workers.join_key_array_max,
            )))
            .build();
        let mut state = state;
        quiver_worker::functions::register(&mut state)?;
        let ctx = SessionContext::new_with_state(state);
        quiver_connectors::register_object_stores(&ctx.runtime_env(), &config.source)?;
        let registered = quiver_connectors::register_sources(&ctx, &config.source).await?;
        writes.set(
            registered.files.clone(),
            registered.remote.clone(),
            registered.lakehouse.clone(),
        );
        writes.sweep(&ctx.runtime_env()).await;
        let default_catalog = match ctx.catalog(&catalog) {
            Some(c) => c,
            None => {
                let c = Arc::new(MemoryCatalogProvider::new());
                ctx.register_catalog(&catalog, c.clone());
                c
            }
        };
        if default_catalog
            .schema(crate::reserved::SYSTEM_SCHEMA)
            .is_some()
        {
            return Err(quiver_connectors::ConnectorError::Source {
                source_name: crate::reserved::SYSTEM_SCHEMA.into(),
                message: format!(
                    "the schema name {catalog}.system is reserved for Quiver's system tables"
                ),
            });
        }
        let audit = match &config.server.audit_log {
            Some(path) => Arc::new(AuditLog::open(path).map_err(|e| {
                quiver_connectors::ConnectorError::Source {
                    source_name: "server.audit_log".into(),
                    message: format!("cannot open {}: {e}", path.display()),
                }
            })?),
            None => Arc::new(AuditLog::disabled()),
        };
        let queries = Arc::new(crate::observe::queries::QueryLog::new(
            audit,
            fragments.clone(),
        ));
        let cache = Arc::new(crate::cache::ResultsCache::new(&config.cache));
        let datasets = crate::catalog::Datasets::open(
            config,
            (catalog.clone(), schema.clone()),
            cache.clone(),
        )
        .await
        .map_err(|message| quiver_connectors::ConnectorError::Source {
            source_name: "metadata".into(),
            message,
        })?;
        // A new Delta or Iceberg commit drops the cached answers that read the table.
        for lake in &registered.lakehouse {
            let cache = cache.clone();
            lake.on_new_snapshot(Arc::new(move |table: &str| cache.invalidate_reading(table)));
        }
        let system = crate::observe::system::SystemSchema::new(
            pool.clone(),
            queries.clone(),
            fragments.clone(),
            datasets.clone(),
            registered.lakehouse.clone(),
        );
        default_catalog.register_schema(crate::reserved::SYSTEM_SCHEMA, Arc::new(system))?;
        let inner = ctx.state().catalog_list().clone();
        let overlay = Arc::new(crate::catalog::overlay::VirtualCatalogList::new(
            inner.clone(),
            datasets.clone(),
            false,
        ));
        let base = SessionStateBuilder::new_from_existing(ctx.state())
            .with_catalog_list(overlay)
            .build();
        datasets.attach(inner, base.clone()).await.map_err(|e| {
            quiver_connectors::ConnectorError::Source {
                source_name: "metadata".into(),
                message: e.to_string(),
            }
        })?;
        let poll = std::time::Duration::from_secs_f64(config.metadata.poll_secs.max(0.1));
        tokio::spawn(crate::catalog::run_scheduler(
            datasets.clone(),
            poll,
            config.acceleration.scheduled,
        ));
        let fixed_partitions = config.server.target_partitions;
        let positive = |t: f64| {
            Some(t)
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(std::time::Duration::from_secs_f64)
        };
        let server = &config.server;
        let limits = crate::admission::Limits {
            max_running: Some(server.max_running_queries).filter(|n| *n > 0),
            max_running_per_user: Some(server.max_running_queries_per_user).filter(|n| *n > 0),
            max_queued: server.max_queued_queries,
            queue_timeout: positive(server.queue_timeout_secs).unwrap_or_default(),
        };
        let engine = Self {
            base,
            datasets,
            cache,
            writes,
            remote: registered.remote,
            pool,
            queries,
            fixed_partitions,
            query_timeout: positive(server.query_timeout_secs),
            policy: AccessPolicy::new(config.access.clone()),
            admission: Admission::new(limits),
            max_statement_bytes: usize::try_from(server.max_statement_bytes.0)
                .unwrap_or(usize::MAX),
            fragments,
            client_endpoints: config.workers.client_endpoints,
            sources: config
                .source
                .iter()
                .map(|s| {
                    let name = format!("{}.{}", s.catalog_name(), s.schema_name());
                    (name, s.kind.name())
                })
                .collect(),
        };
        Ok((engine, registered.warnings))
    }

    /// Whether a statement reads a lakehouse table whose source reads every commit
    /// at once (`refresh_secs = 0`): such answers are never cached.
    pub fn reads_live_tables(&self, objects: &[String]) -> bool {
        objects.iter().any(|o| {
            o.rsplit_once('.')
                .and_then(|(schema, _)| self.writes.lake_schema(schema))
                .is_some_and(|l| l.always_fresh())
        })
    }

    /// Whether Flight SQL results that need no merge are handed to clients as
    /// endpoints on the workers (`workers.client_endpoints`).
    pub fn client_endpoints(&self) -> bool {
        self.client_endpoints
    }

    /// The rights of `user` (None: the server has no authentication, so all rights).
    pub fn access(&self, user: Option<&User>) -> Arc<UserAccess> {
        self.policy
            .for_user(user.map(|u| (u.name.as_str(), u.roles.as_slice())))
    }

    /// A new session for one query of the user `access` is for: it sees only the
    /// catalogs, schemas and tables that user may read.
    pub fn session(&self, access: Arc<UserAccess>) -> QuerySession {
        self.session_with_id(access, None)
    }

    /// [`Self::session`] with the id a client chose, unless a query has it already.
    pub fn session_with_id(&self, access: Arc<UserAccess>, id: Option<String>) -> QuerySession {
        let id = id
            .filter(|i| !self.queries.contains(i))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let state = self.state_for(access.clone());
        crate::observe::counters::Counters::add(&self.pool.counters().queries, 1);
        self.new_session(access, state, id)
    }

    /// A new session for one query whose catalogs come from `state` (a front end's
    /// own view, e.g. the PostgreSQL port's, with `pg_catalog`) rather than the engine's.
    pub fn session_on(&self, access: Arc<UserAccess>, state: &SessionState) -> QuerySession {
        crate::observe::counters::Counters::add(&self.pool.counters().queries, 1);
        self.planning_session_on(access, state)
    }

    /// [`Self::session_on`] for planning only (a PostgreSQL Describe): not counted
    /// as a query in the metrics.
    pub fn planning_session_on(
        &self,
        access: Arc<UserAccess>,
        state: &SessionState,
    ) -> QuerySession {
        let state = SessionStateBuilder::new_from_existing(state.clone());
        self.new_session(access, state, uuid::Uuid::new_v4().to_string())
    }

    /// A query's session named `id`, spread over 2 partitions per healthy worker
    /// unless `server.target_partitions` fixes them.
    fn new_session(
        &self,
        access: Arc<UserAccess>,
        state: SessionStateBuilder,
        id: String,
    ) -> QuerySession {
        let partitions = self
            .fixed_partitions
            .unwrap_or_else(|| (self.pool.healthy().len() * 2).max(2));
        let mut state = state.with_session_id(id.clone()).build();
        state.config_mut().options_mut().execution.target_partitions = partitions;
        plan_notes::PlanNotes::install(state.config_mut().options_mut());
        QuerySession {
            id,
            ctx: SessionContext::new_with_state(state),
            access,
            max_statement_bytes: self.max_statement_bytes,
            datasets: self.datasets.clone(),
            writes: self.writes.clone(),
            pool: self.pool.clone(),
        }
    }

    /// The shared state over `catalogs`, for a front end that adds to it (see [`Self::session_on`]).
    pub fn state_builder(
        &self,
        catalogs: Arc<dyn datafusion::catalog::CatalogProviderList>,
    ) -> SessionStateBuilder {
        SessionStateBuilder::new_from_existing(self.base.clone()).with_catalog_list(catalogs)
    }

    /// The catalogs as `access` sees them.
    pub fn catalogs_for(
        &self,
        access: Arc<UserAccess>,
    ) -> Arc<dyn datafusion::catalog::CatalogProviderList> {
        Arc::new(CatalogView::new(self.base.catalog_list().clone(), access))
    }

    /// The catalog and schema unqualified names resolve in.
    pub fn defaults(&self) -> (String, String) {
        let o = self.base.config().options();
        (
            o.catalog.default_catalog.clone(),
            o.catalog.default_schema.clone(),
        )
    }

    /// Step 1 of a statement's path ([`statement::prepare`]) with this server's
    /// size limit, for a door that parses the text itself (PostgreSQL).
    pub fn prepare<'s>(&self, sql: &'s str) -> Result<std::borrow::Cow<'s, str>> {
        statement::prepare(sql, self.max_statement_bytes)
    }

    /// Where queries wait for a place to run.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Rediscovers the tables of every SQL-database schema, or of the one named
    /// (`catalog.schema` or just `schema`). Returns each schema with its table count.
    pub async fn refresh(&self, only: Option<&str>) -> Result<Vec<(String, usize)>> {
        let mut out = vec![];
        for schema in &self.remote {
            let name = schema.name();
            let matches = only.is_none_or(|o| o == name || name.rsplit('.').next() == Some(o));
            if matches {
                out.push((name.to_string(), schema.refresh().await?));
            }
        }
        if let (Some(o), true) = (only, out.is_empty()) {
            return Err(datafusion::error::DataFusionError::Plan(format!(
                "no database schema named '{o}' to refresh"
            )));
        }
        Ok(out)
    }

    /// Primary keys of database tables named `table` (in the given catalog and schema,
    /// if any): (catalog, schema, table, key columns in order).
    pub fn primary_keys(
        &self,
        catalog: Option<&str>,
        schema: Option<&str>,
        table: &str,
    ) -> Vec<(String, String, String, Vec<String>)> {
        let mut out = vec![];
        for remote in &self.remote {
            let Some((c, s)) = remote.name().split_once('.') else {
                continue;
            };
            if catalog.is_some_and(|x| x != c) || schema.is_some_and(|x| x != s) {
                continue;
            }
            for (t, key) in remote.primary_keys(Some(table)) {
                out.push((c.to_string(), s.to_string(), t, key));
            }
        }
        out
    }

    /// Queries running and recently run (`system.queries`).
    pub fn queries(&self) -> &Arc<crate::observe::queries::QueryLog> {
        &self.queries
    }

    /// How long a query may run before it is cancelled.
    pub fn query_timeout(&self) -> Option<std::time::Duration> {
        self.query_timeout
    }

    /// The kind of source behind `catalog.schema`, if one is.
    pub fn source_kind(&self, schema: &str) -> Option<&'static str> {
        self.sources
            .iter()
            .find(|(s, _)| s == schema)
            .map(|(_, k)| *k)
    }

    /// Stage tasks and fragments run (`system.fragments`).
    pub fn fragments(&self) -> &Arc<crate::observe::fragments::FragmentLog> {
        &self.fragments
    }

    /// Views and accelerations.
    pub fn datasets(&self) -> &Arc<crate::catalog::Datasets> {
        &self.datasets
    }

    /// The results cache.
    pub fn cache(&self) -> &Arc<crate::cache::ResultsCache> {
        &self.cache
    }

    pub fn pool(&self) -> &Arc<WorkerPool> {
        &self.pool
    }

    /// The catalogs as `access` sees them, for metadata calls.
    pub fn metadata_context(&self, access: Arc<UserAccess>) -> SessionContext {
        SessionContext::new_with_state(self.state_for(access).build())
    }

    /// The shared state with the catalogs as `access` sees them.
    fn state_for(&self, access: Arc<UserAccess>) -> SessionStateBuilder {
        self.state_builder(self.catalogs_for(access))
    }
}

/// DataFusion's logical rules with federation inserted right after filter pushdown:
/// subplans that live in one SQL source become one statement there, by then with
/// comma joins turned into equi-joins and each source's own filters attached. At
/// datafusion-federation's default place (before pushdown) a join across sources
/// sends each side unfiltered, and tables of one database that are joined through
/// a subquery reach it as a cross join. The unparser needs two repairs at this
/// place; see `quiver_connectors::sql_fixups`. A write is never federated itself,
/// only what it reads ([`federation`]).
fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Optimizer::new().rules;
    let at = rules
        .iter()
        .position(|r| r.name() == "push_down_filter")
        .map(|i| i + 1)
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(federation::FederateReads::default()));
    // Copies of subsets are chosen once filters reach the scans, before federation.
    rules.insert(at, Arc::new(subset_scans::SubsetScans));
    // After DataFusion's column pruning, which cannot see into federated leaves.
    let at = rules
        .iter()
        .position(|r| r.name() == "optimize_projections")
        .map(|i| i + 1)
        .unwrap_or(rules.len());
    rules.insert(
        at,
        Arc::new(quiver_connectors::federated_columns::ProjectIntoSource),
    );
    rules.push(Arc::new(crate::pg_spelling::LikeEscapes));
    rules
}

/// DataFusion's analyzer rules, after PostgreSQL's boolean literals
/// ([`crate::pg_booleans`]), which must come before type coercion.
fn analyzer_rules() -> Vec<Arc<dyn datafusion::optimizer::AnalyzerRule + Send + Sync>> {
    let mut rules: Vec<Arc<dyn datafusion::optimizer::AnalyzerRule + Send + Sync>> =
        vec![Arc::new(crate::pg_booleans::BooleanLiterals)];
    rules.extend(datafusion::optimizer::Analyzer::new().rules);
    rules
}
