//! A query's own session: parsing (size and nesting checks), planning with the
//! user's access rules (writes, view and acceleration commands, the rest),
//! binding parameters and execution, waiting for a worker when the pool is at zero.

use std::sync::Arc;

use datafusion::common::ParamValues;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};

use crate::pool::WorkerPool;
use crate::security::access::UserAccess;

/// A query's own session; its id is the query id in logs and on workers.
pub struct QuerySession {
    pub id: String,
    pub(super) ctx: SessionContext,
    pub(super) access: Arc<UserAccess>,
    pub(super) max_statement_bytes: usize,
    /// The tables the last statement planned reads, denied or not.
    pub(super) objects: std::sync::Mutex<Vec<String>>,
    pub(super) datasets: Arc<crate::catalog::Datasets>,
    /// The last statement planned changes datasets (never cached).
    pub(super) command: std::sync::atomic::AtomicBool,
    pub(super) writes: Arc<crate::writes::Writes>,
    /// The last statement planned writes (never cached; its count is `rows_written`).
    pub(super) write: std::sync::atomic::AtomicBool,
    pub(super) pool: Arc<WorkerPool>,
    /// How long the last execution waited for workers to start, and how many.
    pub(super) worker_wait: std::sync::Mutex<Option<(std::time::Duration, usize)>>,
}

/// The parser's recursion limit, said so a person understands it.
fn nesting_error(
    e: datafusion::error::DataFusionError,
    limit: usize,
) -> datafusion::error::DataFusionError {
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
    /// Parses and plans a statement and applies the user's access rules; see
    /// [`Self::plan_statement`].
    pub async fn plan(&self, sql: &str) -> Result<LogicalPlan> {
        let statement = self.parse(sql)?;
        self.plan_statement(statement).await
    }

    /// Parses one statement in the server's dialect. A statement over
    /// `server.max_statement_bytes` is refused before it is parsed.
    pub fn parse(&self, sql: &str) -> Result<datafusion::sql::parser::Statement> {
        self.check_size(sql)?;
        let state = self.ctx.state();
        let parser = &state.config().options().sql_parser;
        let (dialect, limit) = (parser.dialect, parser.recursion_limit.get());
        crate::balance::check_nesting(sql)?;
        let rewritten = match crate::catalog::commands::rewrite_refresh(sql) {
            Some(r) => Some(r),
            None => crate::writes::syntax::rewrite_copy_options(sql)
                .map_err(datafusion::error::DataFusionError::Plan)?,
        };
        let sql = rewritten.as_deref().unwrap_or(sql);
        state
            .sql_to_statement(sql, &dialect)
            .map_err(|e| nesting_error(e, limit))
    }

    /// Refuses a statement text over `server.max_statement_bytes`.
    fn check_size(&self, sql: &str) -> Result<()> {
        if sql.len() > self.max_statement_bytes {
            return Err(datafusion::error::DataFusionError::Plan(format!(
                "the statement is {} bytes, over the limit of {} bytes (server.max_statement_bytes)",
                sql.len(),
                self.max_statement_bytes
            )));
        }
        Ok(())
    }

    /// Plans a parsed statement and applies the user's access rules: `?` parameters
    /// become `$1..$n`; writes go to `crate::writes` (writable sources only); other
    /// DDL, DML and session-changing statements are refused, since sessions share one catalog. The tables it reads are kept for
    /// [`Self::objects`], also when it is denied.
    pub async fn plan_statement(
        &self,
        mut statement: datafusion::sql::parser::Statement,
    ) -> Result<LogicalPlan> {
        self.command
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.write
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let datafusion::sql::parser::Statement::Statement(s) = &mut statement {
            let state = self.ctx.state();
            if let Some(temp) = crate::writes::temporary::schema_of(&state) {
                crate::writes::temporary::qualify(s, temp.as_ref());
            }
            if let Some(plan) = crate::writes::temporary::plan(s, &state, &self.access).await {
                self.write.store(true, std::sync::atomic::Ordering::Relaxed);
                if let (Ok(plan), Ok(mut o)) = (&plan, self.objects.lock()) {
                    *o = crate::security::enforce::tables_read(plan, &state);
                }
                return plan;
            }
            let on_view = crate::catalog::commands::view_rename(s, &self.datasets)
                .or_else(|| crate::catalog::commands::view_drop(s, &self.datasets));
            if let Some(command) = on_view {
                return self.plan_command(command);
            }
            if let Some(command) = crate::catalog::commands::recognize(s) {
                return self.plan_command(command?);
            }
            crate::placeholders::number_question_marks(s)?;
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
            self.write
                .store(explained.is_none(), std::sync::atomic::Ordering::Relaxed);
            let state = self.ctx.state();
            let creates = std::sync::Mutex::new(None);
            let cx = crate::writes::statements::WriteContext {
                writes: &self.writes,
                access: &self.access,
                state: &state,
                creates: &creates,
            };
            let statement = match statement {
                datafusion::sql::parser::Statement::Explain(e) => *e.statement,
                other => other,
            };
            let plan = crate::writes::statements::plan(&cx, statement).await;
            // The folder a CTAS creates rides with this statement's session to its commit.
            if let Some(url) = creates.into_inner().ok().flatten() {
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
            if let (Ok(plan), Ok(mut o)) = (&plan, self.objects.lock()) {
                *o = crate::security::enforce::tables_read(plan, &state);
            }
            return plan;
        }
        crate::balance::balance_statement(&mut statement)?;
        let state = self.ctx.state();
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

    /// A statement about views or accelerations: administrators only (when users
    /// log in), except `SHOW CREATE VIEW`.
    fn plan_command(&self, command: crate::catalog::commands::Command) -> Result<LogicalPlan> {
        let (plan, target) = crate::catalog::commands::plan(&self.datasets, command.clone())?;
        if let Ok(mut o) = self.objects.lock() {
            *o = vec![target.clone()];
        }
        self.command
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if command.changes_things() && !self.access.is_admin() {
            let who = self.access.user().unwrap_or("anonymous");
            return Err(datafusion::error::DataFusionError::External(Box::new(tonic::Status::permission_denied(format!(
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
    ) -> Result<LogicalPlan> {
        self.write.store(true, std::sync::atomic::Ordering::Relaxed);
        let state = self.ctx.state();
        let creates = std::sync::Mutex::new(None);
        let cx = crate::writes::statements::WriteContext {
            writes: &self.writes,
            access: &self.access,
            state: &state,
            creates: &creates,
        };
        crate::writes::ingest::plan(&cx, request, data).await
    }

    /// Whether the last statement planned writes (its one row is the count written).
    pub fn is_write(&self) -> bool {
        self.write.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the last statement planned was a view or acceleration command.
    pub fn is_command(&self) -> bool {
        self.command.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The datasets generation now (part of a results-cache key).
    pub fn generation(&self) -> u64 {
        self.datasets.generation()
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
    /// A plan that needs a worker while the pool has scaled to zero waits for one.
    /// The stream is in the types the logical plan announced ([`crate::result_schema`]).
    pub async fn execute(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        let announced = plan.schema().as_arrow().clone();
        Ok(crate::result_schema::conform(
            self.execute_unconformed(plan).await?,
            &announced,
        ))
    }

    async fn execute_unconformed(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
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
                if let Ok(mut w) = self.worker_wait.lock() {
                    *w = Some((waited, started));
                }
                tracing::info!(query = %self.id, waited_ms = waited.as_millis() as u64, started, "waited for workers");
                let analyze = matches!(plan, LogicalPlan::Analyze(_));
                let stream = DataFrame::new(self.ctx.state(), plan)
                    .execute_stream()
                    .await?;
                match analyze {
                    true => wake::annotate_analyze(stream, waited, started).await,
                    false => Ok(stream),
                }
            }
            other => other,
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

    /// How long the last [`Self::execute`] waited for workers to start, and how many it started.
    pub fn worker_wait(&self) -> Option<(std::time::Duration, usize)> {
        self.worker_wait.lock().ok().and_then(|w| *w)
    }
}
