//! Accelerations of a subset (`filter = '…'`): the copy holds only the source's
//! rows where a predicate holds, so it may answer a query only when the query's
//! own filters imply that predicate ([`super::containment`]).
//!
//! - **Refresh**: the acceleration's `filter` is read against the dataset's
//!   columns, `now()` and `current_date` are fixed to the refresh's start (a
//!   window such as `d >= current_date - interval '90 days'` becomes a date), and
//!   the copy is written under that predicate, which is recorded with it.
//! - **Planning**: the schema hands out a [`SubsetOrSource`] for the dataset; a
//!   planner rule (`engine/subset_scans.rs`), run once the filters are pushed to
//!   the scans, replaces it by the copy or the source, and says why in `EXPLAIN`.
//!   Anything that scans a [`SubsetOrSource`] the rule did not see reads the source.

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{plan_err, Constraints, DFSchema, Result, Statistics, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableType};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::catalog::store::now_ms;
use crate::catalog::Datasets;

/// A copy of a subset: the copy's files, and the predicate every row of the source
/// it holds satisfies (and every row of the source satisfying it is held).
#[derive(Debug)]
pub struct CopyOfSubset {
    pub table: Arc<dyn TableProvider>,
    /// The predicate over bare column names, types resolved against the copy.
    pub covers: Expr,
    /// The same predicate as recorded (SQL), for messages.
    pub text: String,
}

impl CopyOfSubset {
    pub fn new(state: &SessionState, table: Arc<dyn TableProvider>, text: &str) -> Result<Self> {
        let schema = DFSchema::try_from(table.schema().as_ref().clone())?;
        let parsed = state.create_logical_expr(text, &schema)?;
        let covers = simplified(parsed, Arc::new(schema), None)?;
        Ok(Self {
            table,
            covers,
            text: text.to_string(),
        })
    }
}

/// The acceleration's `filter` for a refresh that starts at `started_ms`: parsed
/// against `df`'s columns, typed, with the time fixed. Returns it and its SQL.
pub fn resolve_filter(df: &DataFrame, filter: &str, started_ms: i64) -> Result<(Expr, String)> {
    let parsed = df.parse_sql_expr(filter).map_err(|e| {
        datafusion::error::DataFusionError::Plan(format!(
            "the acceleration's filter '{filter}' cannot be read: {e}"
        ))
    })?;
    let schema = Arc::new(df.schema().clone());
    // Bare column names: federation renames the table a qualified name points at.
    let parsed = super::containment::unqualified(&parsed);
    let resolved = simplified(parsed, schema.clone(), Some(started_ms))?;
    let kind = resolved.get_type(schema.as_ref())?;
    if kind != DataType::Boolean {
        return plan_err!("the acceleration's filter '{filter}' is a {kind}, not a condition");
    }
    let text = super::containment::shown(&resolved);
    Ok((resolved, text))
}

/// Refuses a filter that cannot be read against `dataset`'s columns, before the
/// acceleration is recorded.
pub async fn check(datasets: &Arc<Datasets>, dataset: &str, filter: &str) -> Result<()> {
    let ctx = SessionContext::new_with_state(datasets.planning_state(true)?);
    let df = ctx.table(TableReference::parse_str(dataset)).await?;
    resolve_filter(&df, filter, now_ms()).map(|_| ())
}

/// `e` type-checked against `schema` and folded (with `now()` at `at_ms`, when given).
fn simplified(e: Expr, schema: Arc<DFSchema>, at_ms: Option<i64>) -> Result<Expr> {
    let at = at_ms
        .and_then(datafusion::arrow::temporal_conversions::timestamp_ms_to_datetime)
        .map(|t| t.and_utc());
    let context = datafusion::logical_expr::simplify::SimplifyContext::builder()
        .with_schema(schema.clone())
        .with_query_execution_start_time(at)
        .build();
    let simplifier = ExprSimplifier::new(context);
    let coerced = simplifier.coerce(e, &schema)?;
    simplifier.simplify(coerced)
}

/// What the schema hands out for a dataset with a copy of a subset, until the
/// planner rule picks one of the two. It plans as the source.
#[derive(Debug)]
pub struct SubsetOrSource {
    pub dataset: String,
    /// A [`CopyOfSubset`].
    pub copy: Arc<dyn TableProvider>,
    pub source: Arc<dyn TableProvider>,
}

impl SubsetOrSource {
    /// The copy and its predicate.
    pub fn subset(&self) -> Option<&CopyOfSubset> {
        (self.copy.as_ref() as &dyn Any).downcast_ref()
    }

    /// `provider` as a [`SubsetOrSource`], if it is one.
    pub fn of(provider: &dyn TableProvider) -> Option<&Self> {
        (provider as &dyn Any).downcast_ref()
    }
}

/// Whether `provider` is a [`CopyOfSubset`].
pub fn is_copy_of_subset(provider: &dyn TableProvider) -> bool {
    (provider as &dyn Any).is::<CopyOfSubset>()
}

#[async_trait]
impl TableProvider for SubsetOrSource {
    fn schema(&self) -> SchemaRef {
        self.source.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.source.constraints()
    }

    fn table_type(&self) -> TableType {
        self.source.table_type()
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.source.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.source.statistics()
    }

    /// Read only when the planner rule did not choose: the source is always right.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.source.scan(state, projection, filters, limit).await
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.source.insert_into(state, input, op).await
    }
}

/// A copy of a subset as a table: the copy's own scan, with its predicate beside it.
#[async_trait]
impl TableProvider for CopyOfSubset {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.table.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.table.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.table.scan(state, projection, filters, limit).await
    }
}
