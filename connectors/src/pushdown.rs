//! How a subplan over one database becomes the SQL statements it runs.
//!
//! datafusion-federation finds the largest subplan whose tables all live in one
//! database and unparses it. Quiver plugs its own planner into that step so the
//! result is a [`SourceScanExec`]: a plain, serializable node holding the final
//! SQL. A plain scan of a large table is split there into range partitions (see
//! [`Partitioner`]), each a statement of its own that a different worker can run.

use parking_lot::Mutex;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::optimizer::optimizer::Optimizer;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::{
    EmptyRecordBatchStream, ExecutionPlan, PhysicalExpr, SendableRecordBatchStream,
};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, ObjectName, Query, Select, SetExpr, TableFactor,
};
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::sql::{
    AstAnalyzer, LogicalOptimizer, SQLExecutor, SQLFederationProvider, VirtualExecutionPlan,
};
use datafusion_federation::{FederatedPlanNode, FederationPlanner};

use crate::source_scan::SourceScanExec;

/// Splits one statement that scans a single large table into statements over
/// disjoint ranges of it whose union is the whole result.
#[async_trait]
pub trait Partitioner: Send + Sync {
    /// The statements to run instead of `sql`; one statement means "do not split".
    async fn split(&self, sql: &str) -> Result<Vec<String>>;

    /// Rows (if the database has counted them) and bytes of the table `sql` reads,
    /// as the database estimates them; `None` when unknown.
    async fn table_size(&self, _sql: &str) -> Option<(Option<u64>, u64)> {
        None
    }

    /// Rows and bytes the database expects `sql` to return, its filters and joins
    /// applied (its planner's estimate); `None` when it cannot say.
    async fn result_size(&self, _sql: &str) -> Option<(u64, u64)> {
        None
    }
}

/// The federation provider of one database: datafusion-federation's SQL provider
/// with Quiver's planner in place of its own.
pub fn provider(
    executor: Arc<dyn SQLExecutor>,
    partitioner: Option<Arc<dyn Partitioner>>,
) -> Arc<SQLFederationProvider> {
    let planner = Arc::new(SourcePlanner {
        executor: executor.clone(),
        partitioner,
    });
    let rule = FederateSubplan { planner };
    Arc::new(SQLFederationProvider {
        optimizer: Arc::new(Optimizer::with_rules(vec![Arc::new(rule)])),
        executor,
    })
}

/// Marks a subplan that lives in one database as federated, with our planner attached.
#[derive(Debug)]
struct FederateSubplan {
    planner: Arc<SourcePlanner>,
}

impl OptimizerRule for FederateSubplan {
    fn name(&self) -> &str {
        "quiver_federate_subplan"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if let LogicalPlan::Extension(Extension { node }) = &plan {
            if node.name() == "Federated" {
                return Ok(Transformed::no(plan));
            }
        }
        let node = FederatedPlanNode::new(plan, self.planner.clone());
        Ok(Transformed::yes(LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        })))
    }
}

struct SourcePlanner {
    executor: Arc<dyn SQLExecutor>,
    partitioner: Option<Arc<dyn Partitioner>>,
}

impl std::fmt::Debug for SourcePlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourcePlanner")
            .field("source", &self.executor.name())
            .finish()
    }
}

#[async_trait]
impl FederationPlanner for SourcePlanner {
    async fn plan_federation(
        &self,
        node: &FederatedPlanNode,
        _session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = node.plan();
        let sql = final_sql(plan, &self.executor)?;
        let single_table = is_single_table_scan(plan);
        // The database's estimate of the statement's result; failing that, the
        // size of the one table it reads, a fifth under a filter (as DataFusion
        // assumes for filters it cannot estimate). The table is asked only then.
        let size = match &self.partitioner {
            Some(p) => match p.result_size(&sql).await {
                Some((rows, bytes)) => Some((Some(rows), bytes)),
                None if single_table => {
                    let filtered = plan.exists(|n| Ok(matches!(n, LogicalPlan::Filter(_))))?;
                    let keep = |n: u64| if filtered { n / 5 } else { n };
                    p.table_size(&sql)
                        .await
                        .map(|(rows, bytes)| (rows.map(keep), keep(bytes)))
                }
                None => None,
            },
            None => None,
        };
        let statements = match &self.partitioner {
            Some(p) if single_table => p.split(&sql).await?,
            _ => vec![sql],
        };
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let mut scan = SourceScanExec::new(self.executor.clone(), statements, schema);
        if let Some((rows, bytes)) = size {
            scan = scan.with_size_estimate(rows, bytes);
        }
        Ok(Arc::new(scan))
    }
}

/// The statement datafusion-federation would send for `plan`: its own pipeline
/// (table renaming, the tables' plan repairs, the unparser, the executor's AST
/// repairs) run against an executor that records the SQL instead of running it.
fn final_sql(plan: &LogicalPlan, executor: &Arc<dyn SQLExecutor>) -> Result<String> {
    let recorder = Arc::new(Recorder {
        inner: executor.clone(),
        sql: Mutex::new(None),
    });
    let schema = plan.schema().as_arrow().clone();
    let virtual_plan = VirtualExecutionPlan::new(
        plan.clone(),
        recorder.clone(),
        Statistics::new_unknown(&schema),
    );
    // Unparses synchronously; the stream it returns is empty.
    drop(virtual_plan.execute(0, Arc::new(TaskContext::default()))?);
    let sql = recorder.sql.lock().take();
    sql.ok_or_else(|| {
        DataFusionError::Internal(format!(
            "no SQL was produced for source '{}'",
            executor.name()
        ))
    })
}

/// Only projections and filters over exactly one table (no limit, aggregate, join,
/// sort or subquery): the rows of disjoint ranges of the table then union to the
/// rows of the whole statement.
fn is_single_table_scan(plan: &LogicalPlan) -> bool {
    let (mut scans, mut plain) = (0, true);
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                scans += 1;
                plain &= scan.fetch.is_none();
            }
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
            }
            _ => plain = false,
        }
        Ok(if plain {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    plain && scans == 1
}

/// Passes everything through to the real executor but keeps the SQL it is asked to run.
struct Recorder {
    inner: Arc<dyn SQLExecutor>,
    sql: Mutex<Option<String>>,
}

#[async_trait]
impl SQLExecutor for Recorder {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn compute_context(&self) -> Option<String> {
        self.inner.compute_context()
    }
    fn dialect(&self) -> Arc<dyn Dialect> {
        self.inner.dialect()
    }
    fn logical_optimizer(&self) -> Option<LogicalOptimizer> {
        self.inner.logical_optimizer()
    }
    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        self.inner.ast_analyzer()
    }
    fn execute(
        &self,
        query: &str,
        schema: datafusion::arrow::datatypes::SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<SendableRecordBatchStream> {
        {
            let mut sql = self.sql.lock();
            *sql = Some(query.to_string());
        }
        Ok(Box::pin(EmptyRecordBatchStream::new(schema)))
    }
    async fn table_names(&self) -> Result<Vec<String>> {
        self.inner.table_names().await
    }
    async fn get_table_schema(
        &self,
        table: &str,
    ) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        self.inner.get_table_schema(table).await
    }
}

/// The SELECT of `query` that reads one plain table (possibly under derived
/// tables that only project and filter), where a range predicate can be added.
pub(crate) fn table_select(query: &mut Query) -> Option<&mut Select> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return None;
    }
    if matches!(
        select.from[0].relation,
        TableFactor::Table { args: None, .. }
    ) {
        return Some(select.as_mut());
    }
    match &mut select.from[0].relation {
        TableFactor::Derived {
            subquery,
            lateral: false,
            ..
        } => table_select(subquery),
        _ => None,
    }
}

/// The table a [`table_select`] reads and the name its columns are qualified with.
pub(crate) fn table_and_qualifier(select: &Select) -> Option<(ObjectName, String)> {
    match &select.from.first()?.relation {
        TableFactor::Table { name, alias, .. } => {
            let qualifier = alias
                .as_ref()
                .map(|a| a.name.to_string())
                .unwrap_or_else(|| name.to_string());
            Some((name.clone(), qualifier))
        }
        _ => None,
    }
}

/// `WHERE existing` becomes `WHERE (existing) AND predicate`.
pub(crate) fn and_where(select: &mut Select, predicate: SqlExpr) {
    select.selection = Some(match select.selection.take() {
        Some(existing) => SqlExpr::BinaryOp {
            left: Box::new(match existing {
                nested @ SqlExpr::Nested(_) => nested,
                other => SqlExpr::Nested(Box::new(other)),
            }),
            op: BinaryOperator::And,
            right: Box::new(predicate),
        },
        None => predicate,
    });
}

/// One statement per range of a split scan: `query` with `column >= from AND
/// column < to` (each bound written by `literal`, a missing one left out) ANDed
/// into the WHERE of its table select, parsed in `dialect`.
pub(crate) fn range_statements<T>(
    query: &Query,
    dialect: &dyn datafusion::sql::sqlparser::dialect::Dialect,
    column: &str,
    ranges: &[(Option<T>, Option<T>)],
    literal: impl Fn(&T) -> String,
) -> Result<Vec<String>> {
    let mut statements = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        let mut bounds = vec![];
        if let Some(from) = from {
            bounds.push(format!("{column} >= {}", literal(from)));
        }
        if let Some(to) = to {
            bounds.push(format!("{column} < {}", literal(to)));
        }
        let mut part = query.clone();
        if let (Some(select), false) = (table_select(&mut part), bounds.is_empty()) {
            let predicate = datafusion::sql::sqlparser::parser::Parser::new(dialect)
                .try_with_sql(&bounds.join(" AND "))?
                .parse_expr()?;
            and_where(select, predicate);
        }
        statements
            .push(datafusion::sql::sqlparser::ast::Statement::Query(Box::new(part)).to_string());
    }
    Ok(statements)
}
