//! The query engine: one DataFusion session state over the virtual schema, with
//! the distribution rule installed; a fresh session (id = query id) per query.

use std::sync::Arc;

use datafusion::catalog::MemoryCatalogProvider;
use datafusion::common::ParamValues;
use datafusion::error::Result;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion_federation::{FederatedQueryPlanner, FederationOptimizerRule};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use quiver_connectors::config::DEFAULT_CATALOG;
use quiver_connectors::remote_schema::RemoteSchema;
use quiver_proto::QuiverCodec;

use crate::admission::Admission;
use crate::config::QuiverConfig;
use crate::security::access::{AccessPolicy, UserAccess};
use crate::security::audit::AuditLog;
use crate::security::authn::User;
use crate::security::catalog_view::CatalogView;
use crate::distributed::{DistributeFragments, Scheduler, SchedulerSettings};
use crate::pool::WorkerPool;

pub struct QueryEngine {
    base: SessionState,
    /// SQL-database schemas, for REFRESH.
    remote: Vec<Arc<RemoteSchema>>,
    pool: Arc<WorkerPool>,
    queries: Arc<crate::queries::QueryLog>,
    /// `server.target_partitions`; absent = 2 per healthy worker at planning time,
    /// so a pool that grows spreads the next query wider.
    fixed_partitions: Option<usize>,
    /// `server.query_timeout_secs`.
    query_timeout: Option<std::time::Duration>,
    /// `[access]`: who may read what.
    policy: AccessPolicy,
    admission: Arc<Admission>,
    max_statement_bytes: usize,
}

/// A query's own session; its id is the query id in logs and on workers.
pub struct QuerySession {
    pub id: String,
    ctx: SessionContext,
    access: Arc<UserAccess>,
    max_statement_bytes: usize,
    /// The tables the last statement planned reads, denied or not.
    objects: std::sync::Mutex<Vec<String>>,
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
        let partitions = config.server.target_partitions.unwrap_or_else(|| (pool.all().len() * 2).max(2));
        let mut session_config = SessionConfig::new()
            .with_default_catalog_and_schema(&catalog, &schema)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_target_partitions(partitions);
        if config.workers.exchanges {
            // A join's dynamic filter waits until every partition of the join has
            // built its side; a stage task runs only some of them, so it would wait forever.
            session_config.options_mut().optimizer.enable_join_dynamic_filter_pushdown = false;
        }
        let fragments = Arc::new(crate::fragments::FragmentLog::default());
        let scheduler = config.workers.exchanges.then(|| {
            let settings = SchedulerSettings {
                max_fragments_per_worker: config.workers.max_fragments_per_worker,
                task_attempts: config.workers.task_attempts.max(1),
                query_memory_limit: Some(config.workers.query_memory_limit.0),
            };
            Arc::new(Scheduler::new(pool.clone(), codec.clone(), settings, fragments.clone()))
        });
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_default_features()
            .with_optimizer_rules(optimizer_rules())
            .with_query_planner(Arc::new(FederatedQueryPlanner::new()))
            .with_physical_optimizer_rule(Arc::new(DistributeFragments::new(pool.clone(), codec, scheduler)))
            .build();
        let ctx = SessionContext::new_with_state(state);
        quiver_connectors::register_object_stores(&ctx.runtime_env(), &config.source)?;
        let registered = quiver_connectors::register_sources(&ctx, &config.source).await?;
        let default_catalog = match ctx.catalog(&catalog) {
            Some(c) => c,
            None => {
                let c = Arc::new(MemoryCatalogProvider::new());
                ctx.register_catalog(&catalog, c.clone());
                c
            }
        };
        if default_catalog.schema(crate::system::SCHEMA).is_some() {
            return Err(quiver_connectors::ConnectorError::Source {
                source_name: crate::system::SCHEMA.into(),
                message: format!("the schema name {catalog}.system is reserved for Quiver's system tables"),
            });
        }
        let audit = match &config.server.audit_log {
            Some(path) => Arc::new(AuditLog::open(path).map_err(|e| quiver_connectors::ConnectorError::Source {
                source_name: "server.audit_log".into(),
                message: format!("cannot open {}: {e}", path.display()),
            })?),
            None => Arc::new(AuditLog::disabled()),
        };
        let queries = Arc::new(crate::queries::QueryLog::new(audit));
        let system = crate::system::SystemSchema::new(pool.clone(), queries.clone(), fragments);
        default_catalog.register_schema(crate::system::SCHEMA, Arc::new(system))?;
        let fixed_partitions = config.server.target_partitions;
        let positive = |t: f64| Some(t).filter(|t| t.is_finite() && *t > 0.0).map(std::time::Duration::from_secs_f64);
        let server = &config.server;
        let limits = crate::admission::Limits {
            max_running: Some(server.max_running_queries).filter(|n| *n > 0),
            max_running_per_user: Some(server.max_running_queries_per_user).filter(|n| *n > 0),
            max_queued: server.max_queued_queries,
            queue_timeout: positive(server.queue_timeout_secs).unwrap_or_default(),
        };
        let engine = Self {
            base: ctx.state(),
            remote: registered.remote,
            pool,
            queries,
            fixed_partitions,
            query_timeout: positive(server.query_timeout_secs),
            policy: AccessPolicy::new(config.access.clone()),
            admission: Admission::new(limits),
            max_statement_bytes: usize::try_from(server.max_statement_bytes.0).unwrap_or(usize::MAX),
        };
        Ok((engine, registered.warnings))
    }

    /// The rights of `user` (None: the server has no authentication, so all rights).
    pub fn access(&self, user: Option<&User>) -> Arc<UserAccess> {
        self.policy.for_user(user.map(|u| (u.name.as_str(), u.roles.as_slice())))
    }

    /// A new session for one query of the user `access` is for: it sees only the
    /// catalogs, schemas and tables that user may read.
    pub fn session(&self, access: Arc<UserAccess>) -> QuerySession {
        crate::metrics::Counters::add(&self.pool.counters().queries, 1);
        let id = uuid::Uuid::new_v4().to_string();
        let partitions = self.fixed_partitions.unwrap_or_else(|| (self.pool.healthy().len() * 2).max(2));
        let mut state = self.state_for(access.clone()).with_session_id(id.clone()).build();
        state.config_mut().options_mut().execution.target_partitions = partitions;
        QuerySession {
            id,
            ctx: SessionContext::new_with_state(state),
            access,
            max_statement_bytes: self.max_statement_bytes,
            objects: std::sync::Mutex::default(),
        }
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
            return Err(datafusion::error::DataFusionError::Plan(format!("no database schema named '{o}' to refresh")));
        }
        Ok(out)
    }

    /// Primary keys of database tables named `table` (in the given catalog and schema,
    /// if any): (catalog, schema, table, key columns in order).
    pub fn primary_keys(&self, catalog: Option<&str>, schema: Option<&str>, table: &str) -> Vec<(String, String, String, Vec<String>)> {
        let mut out = vec![];
        for remote in &self.remote {
            let Some((c, s)) = remote.name().split_once('.') else { continue };
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
    pub fn queries(&self) -> &Arc<crate::queries::QueryLog> {
        &self.queries
    }

    /// How long a query may run before it is cancelled.
    pub fn query_timeout(&self) -> Option<std::time::Duration> {
        self.query_timeout
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
        let catalogs = Arc::new(CatalogView::new(self.base.catalog_list().clone(), access));
        SessionStateBuilder::new_from_existing(self.base.clone()).with_catalog_list(catalogs)
    }
}

/// DataFusion's logical rules with federation inserted right after filter pushdown:
/// subplans that live in one SQL source become one statement there, by then with
/// comma joins turned into equi-joins and each source's own filters attached. At
/// datafusion-federation's default place (before pushdown) a join across sources
/// sends each side unfiltered, and tables of one database that are joined through
/// a subquery reach it as a cross join. The unparser needs two repairs at this
/// place; see `quiver_connectors::sql_fixups`.
fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Optimizer::new().rules;
    let at = rules.iter().position(|r| r.name() == "push_down_filter").map(|i| i + 1).unwrap_or(rules.len());
    rules.insert(at, Arc::new(FederationOptimizerRule::new()));
    rules
}

/// The parser's recursion limit, said so a person understands it.
fn nesting_error(e: datafusion::error::DataFusionError, limit: usize) -> datafusion::error::DataFusionError {
    use datafusion::sql::sqlparser::parser::ParserError;
    match e {
        datafusion::error::DataFusionError::SQL(e, _) if matches!(*e, ParserError::RecursionLimitExceeded) => {
            datafusion::error::DataFusionError::Plan(format!(
                "the statement is nested too deeply: more than {limit} levels of parentheses, subqueries or function calls \
                 (datafusion.sql_parser.recursion_limit)"
            ))
        }
        other => other,
    }
}

impl QuerySession {
    /// Parses and plans a read-only statement (queries, EXPLAIN, SHOW) and applies
    /// the user's access rules. DDL, DML and session-changing statements are
    /// refused, since sessions share one catalog; so is a statement over
    /// `server.max_statement_bytes`, before it is parsed.
    /// The tables it reads are kept for [`Self::objects`], also when it is denied.
    pub async fn plan(&self, sql: &str) -> Result<LogicalPlan> {
        if sql.len() > self.max_statement_bytes {
            return Err(datafusion::error::DataFusionError::Plan(format!(
                "the statement is {} bytes, over the limit of {} bytes (server.max_statement_bytes)",
                sql.len(),
                self.max_statement_bytes
            )));
        }
        let state = self.ctx.state();
        let parser = &state.config().options().sql_parser;
        let (dialect, limit) = (parser.dialect, parser.recursion_limit.get());
        crate::balance::check_nesting(sql)?;
        let mut statement = state.sql_to_statement(sql, &dialect).map_err(|e| nesting_error(e, limit))?;
        crate::balance::balance_statement(&mut statement)?;
        let plan = state.statement_to_plan(statement).await?;
        let plan = crate::balance::balance_plan(plan)?.data;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        if let Ok(mut o) = self.objects.lock() {
            *o = crate::security::enforce::tables_read(&plan, &state);
        }
        crate::security::enforce::enforce(plan, &self.access, &state)
    }

    /// The tables the last statement planned reads (`catalog.schema.table`), also when it was denied.
    pub fn objects(&self) -> Vec<String> {
        self.objects.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Binds positional parameters (`$1`, `$2`, ...).
    pub fn bind(&self, plan: LogicalPlan, params: ParamValues) -> Result<LogicalPlan> {
        plan.with_param_values(params)
    }

    /// Plans physically (fragments are assigned to workers here) and starts streaming.
    pub async fn execute(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        DataFrame::new(self.ctx.state(), plan).execute_stream().await
    }
}
