//! The plan node that runs pushed-down SQL in a database, one statement per
//! partition, and its wire form so workers can run those partitions.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::plan_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use datafusion_federation::sql::SQLExecutor;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quiver_proto::NodeCodec;

use crate::config::{SourceConfig, SourceKind};
use crate::join_keys::condition::{condition, key_set, JoinFilter};

/// Runs statement `i` in the database for partition `i`.
pub struct SourceScanExec {
    executor: Arc<dyn SQLExecutor>,
    statements: Vec<String>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// Dynamic filters of the hash joins this scan is the probe side of.
    join_filters: Vec<JoinFilter>,
    /// The conditions those filters added to the statements, for EXPLAIN ANALYZE.
    applied: Arc<Mutex<Vec<String>>>,
    /// Rows and bytes the statements return, as the database estimates them (for join order).
    size: Option<(Option<u64>, u64)>,
}

/// How long a scan waits for its join's build side before it runs unfiltered.
const BUILD_SIDE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

impl SourceScanExec {
    pub fn new(executor: Arc<dyn SQLExecutor>, statements: Vec<String>, schema: SchemaRef) -> Self {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(statements.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            executor,
            statements,
            schema,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
            join_filters: vec![],
            applied: Arc::default(),
            size: None,
        }
    }

    /// Lets DataFusion's join ordering see how big the result is likely to be.
    pub fn with_size_estimate(mut self, rows: Option<u64>, bytes: u64) -> Self {
        self.size = Some((rows, bytes));
        self
    }

    /// This scan, also filtered by a join's build-side keys (see `join_keys.rs`).
    pub(crate) fn with_join_filter(&self, filter: JoinFilter) -> Self {
        let mut scan = Self::new(
            self.executor.clone(),
            self.statements.clone(),
            self.schema.clone(),
        );
        scan.join_filters = self.join_filters.clone();
        scan.size = self.size;
        if !scan
            .join_filters
            .iter()
            .any(|f| Arc::ptr_eq(&f.filter, &filter.filter))
        {
            scan.join_filters.push(filter);
        }
        scan
    }

    /// This scan with its join filters, which must be complete, written into its
    /// statements (a plan that travels to workers carries statements, not filters).
    pub(crate) fn baked(&self) -> Result<Self> {
        let statements = self
            .statements
            .iter()
            .map(|sql| {
                restricted(
                    sql,
                    &self.join_filters,
                    &self.schema,
                    self.executor.as_ref(),
                    0,
                )
                .map(|(sql, _)| sql)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut scan = Self::new(self.executor.clone(), statements, self.schema.clone());
        scan.size = self.size;
        Ok(scan)
    }

    /// The source (config name) the statements run in.
    pub fn source(&self) -> &str {
        self.executor.name()
    }

    pub fn statements(&self) -> &[String] {
        &self.statements
    }
}

impl fmt::Debug for SourceScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceScanExec")
            .field("source", &self.source())
            .field("statements", &self.statements)
            .finish()
    }
}

impl DisplayAs for SourceScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SourceScanExec: source={}", self.source())?;
        match self.statements.as_slice() {
            [one] => write!(f, " sql={one}")?,
            many => {
                write!(f, " partitions={}", many.len())?;
                many.iter()
                    .enumerate()
                    .try_for_each(|(i, s)| write!(f, " sql[{i}]={s}"))?
            }
        }
        if !self.join_filters.is_empty() {
            write!(f, " join_keys=")?;
            match self.applied.lock().first() {
                // A key set can be a million keys long: show its start.
                Some(condition) if condition.len() > 300 => {
                    let cut = (0..=300)
                        .rev()
                        .find(|i| condition.is_char_boundary(*i))
                        .unwrap_or(0);
                    write!(f, "[{}…]", &condition[..cut])?
                }
                Some(condition) => write!(f, "[{condition}]")?,
                None => write!(f, "pending")?,
            }
        }
        Ok(())
    }
}

impl ExecutionPlan for SourceScanExec {
    fn name(&self) -> &str {
        "SourceScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let sql = self.statements.get(partition).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "source scan has {} partitions, not {partition}",
                self.statements.len()
            ))
        })?;
        // A join computes its filter only where this setting is on; where it is
        // off (a worker running one partition of a join), waiting would never end.
        let optimizer = &context.session_config().options().optimizer;
        let computed = optimizer.enable_join_dynamic_filter_pushdown;
        // Keys the dynamic filter lists itself; more come from the build side's key set.
        let listed_max = optimizer.hash_join_inlist_pushdown_max_distinct_values;
        let rows = if self.join_filters.is_empty() || !computed {
            self.executor.execute(sql, self.schema.clone(), &[])?
        } else {
            let (executor, schema, filters) = (
                self.executor.clone(),
                self.schema.clone(),
                self.join_filters.clone(),
            );
            let (sql, applied) = (sql.clone(), self.applied.clone());
            let filtered = async move {
                let (sql, added) =
                    with_join_keys(&sql, &filters, &schema, executor.as_ref(), listed_max).await?;
                if let Some(condition) = added {
                    applied.lock().push(condition);
                }
                executor.execute(&sql, schema, &[])
            };
            let stream = futures::stream::once(filtered).try_flatten();
            Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let counted = rows.map(move |batch| {
            if let Ok(b) = &batch {
                baseline.record_output(b.num_rows());
            }
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            counted,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        use datafusion::common::stats::Precision;
        let mut stats = Statistics::new_unknown(&self.schema);
        if let Some((rows, bytes)) = self.size {
            let parts = if partition.is_some() {
                self.statements.len().max(1) as u64
            } else {
                1
            };
            let share =
                |n: u64| Precision::Inexact(usize::try_from(n / parts).unwrap_or(usize::MAX));
            if let Some(rows) = rows {
                stats.num_rows = share(rows);
            }
            stats.total_byte_size = share(bytes);
        }
        Ok(Arc::new(stats))
    }

    /// The statements carry everything but the join filters, which the joins
    /// look for here to know that someone consumes them.
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for j in &self.join_filters {
            let expr: Arc<dyn datafusion::physical_plan::PhysicalExpr> = j.filter.clone();
            if f(&expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }
}

/// `sql` restricted by the join filters once their build sides are collected,
/// and the condition that was added, if any.
async fn with_join_keys(
    sql: &str,
    filters: &[JoinFilter],
    schema: &Schema,
    executor: &dyn SQLExecutor,
    listed_max: usize,
) -> Result<(String, Option<String>)> {
    let mut ready = vec![];
    for filter in filters {
        if tokio::time::timeout(BUILD_SIDE_WAIT, filter.filter.wait_complete())
            .await
            .is_err()
        {
            tracing::warn!(
                source = executor.name(),
                "a join's build side took too long; reading without its keys"
            );
            continue;
        }
        ready.push(filter.clone());
    }
    restricted(sql, &ready, schema, executor, listed_max)
}

/// `sql` restricted by `filters`, which are complete, and the condition added, if any.
fn restricted(
    sql: &str,
    filters: &[JoinFilter],
    schema: &Schema,
    executor: &dyn SQLExecutor,
    listed_max: usize,
) -> Result<(String, Option<String>)> {
    let dialect = executor.dialect();
    let named = output_names_match(sql, schema);
    let mut conditions = vec![];
    for filter in filters {
        // Only columns the statement's result names as the schema does can be named outside it.
        let columns = filter
            .columns
            .iter()
            .map(|c| c.filter(|i| named.get(*i).copied().unwrap_or(false)))
            .collect();
        let usable = JoinFilter {
            columns,
            ..filter.clone()
        };
        if let Some(c) = condition(&usable, schema, dialect.as_ref())? {
            conditions.push(c);
        }
        if let Some(c) = key_set(&usable, schema, dialect.as_ref(), listed_max) {
            conditions.push(c);
        }
    }
    if conditions.is_empty() {
        return Ok((sql.to_string(), None));
    }
    let condition = conditions.join(" AND ");
    let alias = match dialect.identifier_quote_style("quiver_join_keys") {
        Some(q) => format!("{q}quiver_join_keys{q}"),
        None => "quiver_join_keys".to_string(),
    };
    Ok((
        format!("SELECT * FROM ({sql}) AS {alias} WHERE {condition}"),
        Some(condition),
    ))
}

/// For each schema column, whether the statement's select list names it the
/// same (a plain column, or an alias), so `outer.name` reaches it.
fn output_names_match(sql: &str, schema: &Schema) -> Vec<bool> {
    use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, SelectItem, SetExpr, Statement};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    let none = vec![false; schema.fields().len()];
    let Ok(statements) =
        datafusion::sql::sqlparser::parser::Parser::parse_sql(&GenericDialect {}, sql)
    else {
        return none;
    };
    let [Statement::Query(query)] = statements.as_slice() else {
        return none;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return none;
    };
    if select.projection.len() != schema.fields().len() {
        return none;
    }
    select
        .projection
        .iter()
        .zip(schema.fields())
        .map(|(item, field)| {
            let name = match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
                SelectItem::UnnamedExpr(SqlExpr::Identifier(i)) => Some(i.value.clone()),
                SelectItem::UnnamedExpr(SqlExpr::CompoundIdentifier(parts)) => {
                    parts.last().map(|p| p.value.clone())
                }
                _ => None,
            };
            name.is_some_and(|n| &n == field.name())
        })
        .collect()
}

#[derive(Clone, PartialEq, Message)]
struct SourceScanNode {
    #[prost(string, tag = "1")]
    source: String,
    #[prost(string, repeated, tag = "2")]
    statements: Vec<String>,
    /// datafusion-proto's `Schema` message.
    #[prost(bytes = "vec", tag = "3")]
    schema: Vec<u8>,
}

/// Ships [`SourceScanExec`] to workers. A worker connects to the source named in
/// the node with the settings of its own copy of the config (the same file the
/// coordinator reads), so no credentials travel in plans.
pub struct SourceScanCodec {
    sources: Vec<SourceConfig>,
    /// One executor (one connection pool) per source, made on first use.
    executors: Mutex<HashMap<String, Arc<dyn SQLExecutor>>>,
}

impl SourceScanCodec {
    pub fn new(sources: Vec<SourceConfig>) -> Self {
        Self {
            sources,
            executors: Mutex::new(HashMap::new()),
        }
    }

    fn executor(&self, name: &str) -> Result<Arc<dyn SQLExecutor>> {
        let mut executors = self.executors.lock();
        if let Some(e) = executors.get(name) {
            return Ok(e.clone());
        }
        let config = self
            .sources
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                DataFusionError::Plan(format!("this worker's config has no source named '{name}'"))
            })?;
        let unusable = |e: crate::ConnectorError| DataFusionError::External(Box::new(e));
        let executor: Arc<dyn SQLExecutor> = match &config.kind {
            SourceKind::Postgres(pg) => {
                Arc::new(crate::postgres::executor(name, pg).map_err(unusable)?.0)
            }
            SourceKind::Mysql(my) => {
                Arc::new(crate::mysql::executor(name, my).map_err(unusable)?.0)
            }
            SourceKind::Sqlite(sqlite) => {
                Arc::new(crate::sqlite::executor(name, sqlite).map_err(unusable)?)
            }
            SourceKind::FlightSql(flight) => {
                Arc::new(crate::flight_sql::executor(name, flight).map_err(unusable)?)
            }
            SourceKind::Files(_) | SourceKind::Delta(_) | SourceKind::Iceberg(_) => {
                return plan_err!("source '{name}' holds files, not a database");
            }
        };
        executors.insert(name.to_string(), executor.clone());
        Ok(executor)
    }
}

impl NodeCodec for SourceScanCodec {
    fn kind(&self) -> &'static str {
        "source_scan"
    }

    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> Option<Result<Vec<u8>>> {
        let scan = node.as_ref().downcast_ref::<SourceScanExec>()?;
        let schema = datafusion_proto::protobuf::Schema::try_from(scan.schema.as_ref());
        Some(
            schema
                .map_err(|e| DataFusionError::Internal(e.to_string()))
                .map(|schema| {
                    SourceScanNode {
                        source: scan.source().to_string(),
                        statements: scan.statements.clone(),
                        schema: schema.encode_to_vec(),
                    }
                    .encode_to_vec()
                }),
        )
    }

    fn decode(
        &self,
        payload: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let malformed =
            |e: &dyn fmt::Display| DataFusionError::Internal(format!("malformed source scan: {e}"));
        let node = SourceScanNode::decode(payload).map_err(|e| malformed(&e))?;
        let schema = datafusion_proto::protobuf::Schema::decode(node.schema.as_slice())
            .map_err(|e| malformed(&e))?;
        let schema = Schema::try_from(&schema).map_err(|e| malformed(&e))?;
        Ok(Arc::new(SourceScanExec::new(
            self.executor(&node.source)?,
            node.statements,
            Arc::new(schema),
        )))
    }
}
