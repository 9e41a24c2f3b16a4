//! Federation (datafusion-federation's rule) for queries, not for the writes around them.
//!
//! The rule sends the largest subplan that lives in one SQL source to it as one
//! statement, and at the root that is the whole plan. A `COPY … TO`, `CREATE TABLE
//! … AS` or `INSERT` whose rows all come from one database is such a plan, but the
//! write itself is Quiver's, not SQL for the source (the unparser refuses it:
//! "Unsupported plan: Copy"). So for a write the rule runs on what it reads. An
//! `INSERT` puts a projection casting each column to the table's type over the
//! query's own projection; unparsed, the pair becomes a derived table without an
//! alias that PostgreSQL refuses, so the outer one stays with DataFusion.
//!
//! A `VALUES` list is turned into a scan of an in-memory table first: the rule
//! counts a list as belonging to any source, pulls it into the database's
//! subplan, and DataFusion's unparser cannot write it ("Unsupported operator:
//! Values"), so `(VALUES …) v JOIN pg.orders` failed.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::{provider_as_source, MemTable};
use datafusion::error::Result;
use datafusion::logical_expr::{col, Expr, LogicalPlan, LogicalPlanBuilder, Values};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion_federation::FederationOptimizerRule;

#[derive(Debug, Default)]
pub(super) struct FederateReads(FederationOptimizerRule);

impl OptimizerRule for FederateReads {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let scanned = values_as_scans(plan)?;
        let (plan, converted) = (scanned.data, scanned.transformed);
        let federated = match plan {
            LogicalPlan::Copy(_) | LogicalPlan::Dml(_) => {
                plan.map_children(|input| self.below_projections(input, config))?
            }
            plan => self.0.rewrite(plan, config)?,
        };
        Ok(Transformed::new_transformed(
            federated.data,
            federated.transformed || converted,
        ))
    }
}

/// Name of the in-memory table a `VALUES` list becomes.
const VALUES_TABLE: &str = "quiver_values";

/// Every `VALUES` list of literals as a scan of an in-memory table, under a
/// projection that gives back the list's own (unqualified) column names.
fn values_as_scans(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    plan.transform_up(|node| {
        let LogicalPlan::Values(values) = &node else {
            return Ok(Transformed::no(node));
        };
        let Some(batch) = literal_batch(values)? else {
            return Ok(Transformed::no(node));
        };
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        let names: Vec<Expr> = values
            .schema
            .fields()
            .iter()
            .map(|f| col(Column::new(Some(VALUES_TABLE), f.name())).alias(f.name()))
            .collect();
        let scan =
            LogicalPlanBuilder::scan(VALUES_TABLE, provider_as_source(Arc::new(table)), None)?
                .project(names)?
                .build()?;
        Ok(Transformed::yes(scan))
    })
}

/// The rows of a `VALUES` list whose cells are all literals; `None` otherwise.
fn literal_batch(values: &Values) -> Result<Option<RecordBatch>> {
    let schema = Arc::new(values.schema.as_arrow().clone());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let mut cells: Vec<ScalarValue> = Vec::with_capacity(values.values.len());
        for row in &values.values {
            match row.get(i) {
                Some(Expr::Literal(v, _)) => cells.push(v.cast_to(field.data_type())?),
                _ => return Ok(None),
            }
        }
        columns.push(ScalarValue::iter_to_array(cells)?);
    }
    Ok(Some(RecordBatch::try_new(schema, columns)?))
}

impl FederateReads {
    fn below_projections(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match &plan {
            LogicalPlan::Projection(p)
                if matches!(p.input.as_ref(), LogicalPlan::Projection(_)) =>
            {
                plan.map_children(|input| self.below_projections(input, config))
            }
            _ => self.0.rewrite(plan, config),
        }
    }
}
