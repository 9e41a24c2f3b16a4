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

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::LogicalPlan;
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
        match plan {
            LogicalPlan::Copy(_) | LogicalPlan::Dml(_) => {
                plan.map_children(|input| self.below_projections(input, config))
            }
            plan => self.0.rewrite(plan, config),
        }
    }
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
