//! The session's query planner: DataFusion's physical planner with federation's
//! extension planner (subplans that run inside one database), after the join trees
//! are put in order from statistics ([`super::join_order`]). `EXPLAIN` shows the
//! reordered logical plan and the estimates behind it, and which copies of
//! subsets answered (`plan_notes`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Explain, LogicalPlan, PlanType, StringifiedPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_federation::FederatedPlanner;

use super::join_order;
use crate::config::JoinOrder;

#[derive(Debug)]
pub(crate) struct QuiverQueryPlanner {
    join_order: JoinOrder,
}

impl QuiverQueryPlanner {
    pub fn new(join_order: JoinOrder) -> Self {
        Self { join_order }
    }
}

fn physical_planner() -> DefaultPhysicalPlanner {
    DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(FederatedPlanner::new())])
}

#[async_trait]
impl QueryPlanner for QuiverQueryPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planner = physical_planner();
        let state = session.as_any().downcast_ref::<SessionState>();
        // Which copies of subsets were read, and why (`subset_scans`), for `EXPLAIN`.
        let notes = super::plan_notes::PlanNotes::of(session.config_options());
        let (JoinOrder::Statistics, Some(state)) = (self.join_order, state) else {
            let plan = match plan {
                LogicalPlan::Explain(e) => LogicalPlan::Explain(noted(e.clone(), notes)),
                other => other.clone(),
            };
            return planner.create_physical_plan(&plan, session).await;
        };
        let reorder = |plan: &LogicalPlan| {
            let planner = &planner;
            let plan = plan.clone();
            async move {
                // A tree that cannot be rebuilt keeps the order it was written in.
                match join_order::reorder(&plan, planner, state).await {
                    Ok(reordered) => reordered,
                    Err(e) => {
                        tracing::warn!("join order kept as written: {e}");
                        join_order::Reordered {
                            plan,
                            notes: Vec::new(),
                        }
                    }
                }
            }
        };
        let plan = match plan {
            LogicalPlan::Explain(e) => {
                LogicalPlan::Explain(explained(noted(e.clone(), notes), reorder(&e.plan).await))
            }
            LogicalPlan::Analyze(a) => {
                let mut a = a.clone();
                a.input = Arc::new(reorder(&a.input).await.plan);
                LogicalPlan::Analyze(a)
            }
            other => reorder(other).await.plan,
        };
        planner.create_physical_plan(&plan, session).await
    }
}

/// `EXPLAIN` with the planner rules' notes in a row of their own.
fn noted(mut e: Explain, notes: Vec<String>) -> Explain {
    if !notes.is_empty() {
        e.stringified_plans.push(StringifiedPlan::new(
            PlanType::FinalLogicalPlan,
            format!("accelerations:\n{}", notes.join("\n")),
        ));
    }
    e
}

/// `EXPLAIN` of the reordered plan. DataFusion prints the logical plan from
/// `e.plan` when it plans the `EXPLAIN`; the estimates that chose the order go in a
/// row of the same type just before it, since only that type and the physical
/// plan's show without `VERBOSE`.
fn explained(mut e: Explain, reordered: join_order::Reordered) -> Explain {
    if !reordered.notes.is_empty() {
        e.stringified_plans.push(StringifiedPlan::new(
            PlanType::FinalLogicalPlan,
            reordered.notes.join("\n"),
        ));
    }
    e.plan = Arc::new(reordered.plan);
    e
}
