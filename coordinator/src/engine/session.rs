//! A query's own session: parsing, planning with the user's access rules (writes,
//! view and acceleration commands, the rest), binding parameters and execution,
//! waiting for a worker when the pool is at zero. The steps are listed in
//! [`super::statement`].

use std::sync::Arc;

use datafusion::common::ParamValues;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};

use quiver_worker::status::from_datafusion;

use super::statement::{prepare, Planned, StatementKind};
use crate::pool::WorkerPool;
use crate::security::access::UserAccess;

/// A query's own session; its id is the query id in logs and on workers.
pub struct QuerySession {
    pub id: String,
    pub(super) ctx: SessionContext,
    pub(super) access: Arc<UserAccess>,
    pub(super) max_statement_bytes: usize,
    pub(super) datasets: Arc<crate::catalog::Datasets>,
    pub(super) writes: Arc<crate::writes::Writes>,
    pub(super) pool: Arc<WorkerPool>,
}

/// A statement that runs: its batches and, when the pool was at zero, how long it
/// waited for workers to start and how many.
pub struct Executed {
    pub batches: SendableRecordBatchStream,
    pub worker_wait: Option<(std::time::Duration, usize)>,
}

/// How a Flight SQL client's result comes ([`QuerySession::execute_for_flight`]).
pub enum Outcome {
    Batches(Executed),
    Relayed(crate::distributed::relay::Relay),
}

/// The parser's recursion limit, said so a person understands it.
fn nesting_error(e: DataFusionError, limit: usize) -> DataFusionError {
    use datafusion::sql::sqlparser::parser::ParserError;
    match e {
        DataFusionError::SQL(e, _) if matches!(*e, ParserError::RecursionLimitExceeded) => {
            DataFusionError::Plan(format!(
                "the statement is nested too deeply: more than {limit} levels of parentheses, subqueries or function calls \
                 (datafusion.sql_parser.recursion_limit)"
            ))
        }
        other => other,
    }
}

impl QuerySession {
    /// Prepares, parses and plans a statement text (steps 1 to 3 of
    /// [`super::statement`]).
    pub async fn plan(&self, sql: &str) -> Planned {
        match self.parse(sql) {
            Ok(statement) => self.plan_statement(statement).await,
            Err(e) => Planned::failed(from_datafusion(&e)),
        }
    }

    /// Prepares ([`prepare`]) and parses one statement in the server's dialect.
    pub fn parse(&self, sql: &str) -> Result<datafusion::sql::parser::Statement> {
        let sql = prepare(sql, self.max_statement_bytes)?;
        let state = self.ctx.state();
        let parser = &state.config().options().sql_parser;
        let (dialect, limit) = (parser.dialect, parser.recursion_limit.get());
        state
            .sql_to_statement(&sql, &dialect)
            .map_err(|e| nesting_error(e, limit))
    }

    /// Plans a parsed statement with the user's access rules applied: `?`
    /// parameters become `$1..$n`; writes go to `crate::writes` (writable sources
    /// only); view and acceleration commands to `crate::catalog::commands`; other
    /// DDL, DML and session-changing statements are refused, since sessions share
    /// one catalog.
    pub async fn plan_statement(&self, statement: datafusion::sql::parser::Statement) -> Planned {
        let mut objects = vec![];
        let (kind, plan) = self.plan_into(statement, &mut objects).await;
        Planned::new(kind, objects, plan)
    }

    /// Plans `statement`; `objects` gets the tables it reads as soon as they are
    /// known, so a denied statement still names them.
    async fn plan_into(
        &self,
        mut statement: datafusion::sql::parser::Statement,
        objects: &mut Vec<String>,
    ) -> (StatementKind, Result<LogicalPlan>) {
        if let datafusion::sql::parser::Statement::Statement(s) = &mut statement {
            let state = self.ctx.state();
            if let Some(temp) = crate::writes::temporary::schema_of(&state) {
                crate::writes::temporary::qualify(s, temp.as_ref());
            }
            if let Some(plan) = crate::writes::temporary::plan(s, &state, &self.access).await {
                if let Ok(plan) = &plan {
                    *objects = crate::security::enforce::tables_read(plan, &state);
                }
                return (StatementKind::Write, plan);
            }
            let on_view = crate::catalog::commands::view_rename(s, &self.datasets)
                .or_else(|| crate::catalog::commands::view_drop(s, &self.datasets));
            if let Some(command) = on_view {
                return (StatementKind::Command, self.plan_command(command, objects));
            }
            if let Some(command) = crate::catalog::commands::recognize(s) {
                let plan = command.and_then(|c| self.plan_command(c, objects));
                return (StatementKind::Command, plan);
            }
            if let Err(e) = crate::placeholders::number_question_marks(s) {
                return (StatementKind::Query, Err(e));
            }
            crate::pg_spelling::rewrite(s);
        }
        let explained = match &statement {
            datafusion::sql::parser::Statement::Explain(e)
                if crate::writes::statements::is_write(&e.statement) =>
            {
                Some((e.options.verbose, e.options.analyze))
            }
            _ => None,
        };
        if explained.is_some() || crate::writes::statements::is_write(&statement) {
            // EXPLAIN of a write plans the write but runs nothing: a query.
            let kind = match explained {
                None => StatementKind::Write,
                Some(_) => StatementKind::Query,
            };
            return (kind, self.plan_write(statement, explained, objects).await);
        }
        (
            StatementKind::Query,
            self.plan_query(statement, objects).await,
        )
    }

    async fn plan_query(
        &self,
        mut statement: datafusion::sql::parser::Statement,
        objects: &mut Vec<String>,
    ) -> Result<LogicalPlan> {
        crate::balance::balance_statement(&mut statement)?;
        let state = self.ctx.state();
        let plan = state.statement_to_plan(statement).await?;
        let plan = crate::balance::balance_plan(plan)?.data;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        *objects = crate::security::enforce::tables_read(&plan, &state);
        crate::security::enforce::enforce(plan, &self.access, &state)
    }

    async fn plan_write(
        &self,
        statement: datafusion::sql::parser::Statement,
        explained: Option<(bool, bool)>,
        objects: &mut Vec<String>,
    ) -> Result<LogicalPlan> {
        let state = self.ctx.state();
        let creates = parking_lot::Mutex::new(None);
        let cx = self.write_context(&state, &creates);
        let statement = match statement {
            datafusion::sql::parser::Statement::Explain(e) => *e.statement,
            other => other,
        };
        let plan = crate::writes::statements::plan(&cx, statement).await;
        // The folder a CTAS creates rides with this statement's session to its commit.
        if let Some(url) = creates.into_inner() {
            self.ctx
                .state_ref()
                .write()
                .config_mut()
                .options_mut()
                .extensions
                .insert(crate::writes::CreateTarget { url });
        }
        let plan = match (plan, explained) {
            (Ok(p), Some((verbose, analyze))) => {
                datafusion::logical_expr::LogicalPlanBuilder::from(p)
                    .explain(verbose, analyze)
                    .and_then(|b| b.build())
            }
            (p, _) => p,
        };
        if let Ok(plan) = &plan {
            *objects = crate::security::enforce::tables_read(plan, &state);
        }
        plan
    }

    /// What a write of this session is planned with; `creates` receives the folder
    /// a `CREATE TABLE … AS` makes.
    fn write_context<'a>(
        &'a self,
        state: &'a datafusion::execution::SessionState,
        creates: &'a parking_lot::Mutex<Option<String>>,
    ) -> crate::writes::statements::WriteContext<'a> {
        crate::writes::statements::WriteContext {
            writes: &self.writes,
            access: &self.access,
            state,
            creates,
        }
    }

    /// A statement about views or accelerations: administrators only (when users
    /// log in), except `SHOW CREATE VIEW`.
    fn plan_command(
        &self,
        command: crate::catalog::commands::Command,
        objects: &mut Vec<String>,
    ) -> Result<LogicalPlan> {
        let (plan, target) = crate::catalog::commands::plan(&self.datasets, command.clone())?;
        *objects = vec![target.clone()];
        if command.changes_things() && !self.access.is_admin() {
            let who = self.access.user().unwrap_or("anonymous");
            return Err(DataFusionError::External(Box::new(tonic::Status::permission_denied(format!(
                "access denied: changing views and accelerations ({target}) is for administrators (a role in access.admin_roles); user '{who}' has none"
            )))));
        }
        Ok(plan)
    }

    /// Plans a bulk ingest of `data` (Flight SQL `CommandStatementIngest`).
    pub async fn plan_ingest(
        &self,
        request: &crate::writes::ingest::IngestRequest,
        data: SendableRecordBatchStream,
    ) -> Planned {
        let state = self.ctx.state();
        let creates = parking_lot::Mutex::new(None);
        let cx = self.write_context(&state, &creates);
        let plan = crate::writes::ingest::plan(&cx, request, data).await;
        Planned::new(StatementKind::Write, vec![], plan)
    }

    /// The datasets generation now (part of a results-cache key).
    pub fn generation(&self) -> u64 {
        self.datasets.generation()
    }

    /// Binds positional parameters (`$1`, `$2`, ...).
    pub fn bind(&self, plan: LogicalPlan, params: ParamValues) -> Result<LogicalPlan> {
        plan.with_param_values(params)
    }

    /// Plans physically (fragments are assigned to workers here) and starts streaming.
    /// A plan that needs a worker while the pool has scaled to zero waits for one.
    /// The stream is in the types the logical plan announced ([`crate::result_schema`]).
    pub async fn execute(&self, plan: LogicalPlan) -> Result<Executed> {
        let announced = plan.schema().as_arrow().clone();
        let (batches, worker_wait) = self.execute_unconformed(plan).await?;
        Ok(Executed {
            batches: crate::result_schema::conform(batches, &announced),
            worker_wait,
        })
    }

    /// [`Self::execute`] for a Flight SQL client: when the result can be relayed as
    /// the workers' own Flight messages (`crate::distributed::relay`), starts that
    /// instead. The plan is planned physically once either way.
    pub async fn execute_for_flight(&self, plan: LogicalPlan, views: bool) -> Result<Outcome> {
        let announced = plan.schema().as_arrow().clone();
        let state = self.ctx.state();
        let physical = match DataFrame::new(state.clone(), plan.clone())
            .create_physical_plan()
            .await
        {
            Ok(p) => p,
            // A pool at zero (or a planning error, reported by the usual path).
            Err(_) => return self.execute(plan).await.map(Outcome::Batches),
        };
        if let Some(relay) =
            crate::distributed::relay::relay(&physical, &announced, &self.id, views)
        {
            crate::observe::counters::Counters::add(&self.pool.counters().relayed_results, 1);
            return Ok(Outcome::Relayed(relay));
        }
        let task = Arc::new(datafusion::execution::TaskContext::from(&state));
        let batches = datafusion::physical_plan::execute_stream(physical, task)?;
        Ok(Outcome::Batches(Executed {
            batches: crate::result_schema::conform(batches, &announced),
            worker_wait: None,
        }))
    }

    async fn execute_unconformed(
        &self,
        plan: LogicalPlan,
    ) -> Result<(
        SendableRecordBatchStream,
        Option<(std::time::Duration, usize)>,
    )> {
        use crate::distributed::wake;
        let first = DataFrame::new(self.ctx.state(), plan.clone())
            .execute_stream()
            .await;
        match first {
            Err(e) if wake::needs_workers(&e) && self.pool.scales_from_zero() => {
                // One worker per two partitions the query is spread over.
                let partitions = self
                    .ctx
                    .state()
                    .config()
                    .options()
                    .execution
                    .target_partitions;
                let (waited, started) = self
                    .pool
                    .wake(partitions.div_ceil(2))
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                tracing::info!(query = %self.id, waited_ms = waited.as_millis() as u64, started, "waited for workers");
                let analyze = matches!(plan, LogicalPlan::Analyze(_));
                let stream = DataFrame::new(self.ctx.state(), plan)
                    .execute_stream()
                    .await?;
                let stream = match analyze {
                    true => wake::annotate_analyze(stream, waited, started).await?,
                    false => stream,
                };
                Ok((stream, Some((waited, started))))
            }
            other => other.map(|stream| (stream, None)),
        }
    }

    /// Plans physically (fragments are assigned to workers) without running anything.
    pub async fn physical_plan(
        &self,
        plan: LogicalPlan,
    ) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        DataFrame::new(self.ctx.state(), plan)
            .create_physical_plan()
            .await
    }
}
