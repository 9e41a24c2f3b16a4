//! Views: a name for a query, kept in the metadata store (or the config) rather
//! than in any source, so a view can join sources and live in any schema.
//!
//! A view resolves to DataFusion's `ViewTable`, which the SQL planner inlines
//! (`LogicalPlanBuilder::scan` replaces the scan with the view's plan under the
//! view's name). Filters then reach the sources' scans through it, federation
//! turns the parts in one database into one statement, and the distributed
//! planner cuts the whole. Access rules apply to the tables the view reads
//! (invoker's rights), since they are checked on the inlined plan.
//!
//! View bodies are planned in the engine's unrestricted state, resolving
//! unqualified names like queries do (the server's default schema). Plans are
//! kept until anything changes ([`super::Datasets::changed`]).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::plan_err;
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result};

use super::{Datasets, Origin};

/// A view's definition.
#[derive(Clone, Debug)]
pub struct ViewDef {
    /// `catalog.schema.name`.
    pub name: String,
    /// The query.
    pub sql: String,
    pub origin: Origin,
    pub created_ms: i64,
}

impl ViewDef {
    /// `CREATE VIEW … AS …`, as `SHOW CREATE VIEW` prints it.
    pub fn create_statement(&self) -> String {
        format!("CREATE VIEW {} AS {}", self.name, self.sql)
    }
}

/// Planned views, per (name, reads copies or sources).
#[derive(Debug, Default)]
pub struct ViewPlans {
    plans: Mutex<HashMap<(String, bool), Arc<dyn TableProvider>>>,
}

impl ViewPlans {
    pub fn clear(&self) {
        {
            let mut p = self.plans.lock();
            p.clear();
        }
    }

    fn get(&self, key: &(String, bool)) -> Option<Arc<dyn TableProvider>> {
        self.plans.lock().get(key).cloned()
    }

    fn put(
        &self,
        key: (String, bool),
        plan: Arc<dyn TableProvider>,
        generation: u64,
        datasets: &Datasets,
    ) {
        // A plan made while something changed may be stale: keep it only if nothing did.
        {
            let mut p = self.plans.lock();
            if datasets.generation() == generation {
                p.insert(key, plan);
            }
        }
    }
}

tokio::task_local! {
    /// The views being planned in this task, outermost first: a view met again is a cycle.
    static PLANNING: Vec<String>;
}

/// Views may nest this deep.
const MAX_DEPTH: usize = 32;

/// The provider of `view`: its plan, inlined where it is used.
pub async fn provider(
    datasets: &Arc<Datasets>,
    view: &ViewDef,
    bypass_copies: bool,
) -> Result<Arc<dyn TableProvider>> {
    let key = (view.name.clone(), bypass_copies);
    // Inside another view's planning the kept plans are not used, so a cycle through
    // a view planned earlier is still seen.
    let nested = PLANNING.try_with(|s| !s.is_empty()).unwrap_or(false);
    if let Some(p) = datasets.plans().get(&key).filter(|_| !nested) {
        return Ok(p);
    }
    let generation = datasets.generation();
    let plan = plan_body(datasets, &view.name, &view.sql, bypass_copies).await?;
    let provider: Arc<dyn TableProvider> =
        Arc::new(ViewTable::new(plan, Some(view.create_statement())));
    datasets
        .plans()
        .put(key, provider.clone(), generation, datasets);
    Ok(provider)
}

/// Plans `sql` as the body of the view `name`; errors name the view, and a view
/// that reaches itself is refused with the path that led back to it.
pub async fn plan_body(
    datasets: &Arc<Datasets>,
    name: &str,
    sql: &str,
    bypass_copies: bool,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let mut stack = PLANNING.try_with(|s| s.clone()).unwrap_or_default();
    if stack.iter().any(|v| v == name) {
        stack.push(name.to_string());
        return plan_err!(
            "views refer to each other in a cycle: {}",
            stack.join(" -> ")
        );
    }
    if stack.len() >= MAX_DEPTH {
        return plan_err!("views nest more than {MAX_DEPTH} levels deep at {name}");
    }
    stack.push(name.to_string());
    let state = datasets.planning_state(bypass_copies)?;
    let planned = PLANNING
        .scope(stack, async move { state.create_logical_plan(sql).await })
        .await;
    planned.map_err(|e| match e {
        DataFusionError::Plan(m) if m.starts_with("views refer to each other") => {
            DataFusionError::Plan(m)
        }
        e => DataFusionError::Plan(format!("view {name} cannot be used: {}", e.message())),
    })
}
