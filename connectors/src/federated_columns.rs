//! Only the columns a query uses leave a database, also inside cross-source joins.
//!
//! datafusion-federation replaces a subplan over one database with a `Federated`
//! leaf before DataFusion prunes columns. When the whole query lives in one
//! database the query's own projection is inside that leaf; when a database
//! table is one side of a join with files, the leaf is a bare table scan and its
//! statement would select every column. DataFusion's projection pruning later puts
//! a projection of just the needed columns on top of the leaf, since it cannot
//! look inside it. This rule, run after that pruning, moves such a projection into
//! the leaf, so it becomes part of the statement the database runs.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion_federation::FederatedPlanNode;

/// Moves a column-only projection over a `Federated` leaf into the leaf.
#[derive(Debug, Default)]
pub struct ProjectIntoSource;

impl OptimizerRule for ProjectIntoSource {
    fn name(&self) -> &str {
        "quiver_project_into_source"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Projection(projection) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let LogicalPlan::Extension(Extension { node }) = projection.input.as_ref() else {
            return Ok(Transformed::no(plan));
        };
        let Some(federated) = node.as_any().downcast_ref::<FederatedPlanNode>() else {
            return Ok(Transformed::no(plan));
        };
        // Plain (possibly renamed) columns only: expressions stay where the
        // optimizer put them, as the unparser may not speak every function.
        let plain = projection.expr.iter().all(|e| match e {
            Expr::Column(_) => true,
            Expr::Alias(a) => matches!(a.expr.as_ref(), Expr::Column(_)),
            _ => false,
        });
        if !plain || projection.expr.len() >= federated.plan.schema().fields().len() {
            return Ok(Transformed::no(plan));
        }
        let inner = match &federated.plan {
            // A projection on a projection would be unparsed as a derived table that
            // the outer column names no longer reach: keep one projection, of the
            // inner expressions the outer one picks.
            LogicalPlan::Projection(under) => {
                let picked: Option<Vec<Expr>> = projection
                    .expr
                    .iter()
                    .map(|e| pick(e, under, federated.plan.schema()))
                    .collect();
                let Some(picked) = picked else {
                    return Ok(Transformed::no(plan));
                };
                Projection::try_new_with_schema(
                    picked,
                    under.input.clone(),
                    projection.schema.clone(),
                )?
            }
            other => Projection::try_new_with_schema(
                projection.expr.clone(),
                Arc::new(other.clone()),
                projection.schema.clone(),
            )?,
        };
        let leaf =
            FederatedPlanNode::new(LogicalPlan::Projection(inner), federated.planner.clone());
        Ok(Transformed::yes(LogicalPlan::Extension(Extension {
            node: Arc::new(leaf),
        })))
    }
}

/// The expression of `under` that the outer column `outer` reads, named as `outer` names it.
fn pick(outer: &Expr, under: &Projection, schema: &datafusion::common::DFSchema) -> Option<Expr> {
    let (column, alias) = match outer {
        Expr::Column(c) => (c, None),
        Expr::Alias(a) => match a.expr.as_ref() {
            Expr::Column(c) => (c, Some(a.name.clone())),
            _ => return None,
        },
        _ => return None,
    };
    let index = schema.index_of_column(column).ok()?;
    let inner = under.expr.get(index)?.clone();
    // Keep the output name (and qualifier) the rest of the plan expects.
    let (qualifier, field) = schema.qualified_field(index);
    let name = alias.unwrap_or_else(|| field.name().clone());
    Some(match inner {
        Expr::Column(c) if c.name == name && alias_free(qualifier, &c) => Expr::Column(c),
        other => other.unalias().alias_qualified(
            if outer_is_alias(outer) {
                None
            } else {
                qualifier.cloned()
            },
            name,
        ),
    })
}

fn outer_is_alias(e: &Expr) -> bool {
    matches!(e, Expr::Alias(_))
}

fn alias_free(
    qualifier: Option<&datafusion::common::TableReference>,
    c: &datafusion::common::Column,
) -> bool {
    qualifier == c.relation.as_ref()
}
