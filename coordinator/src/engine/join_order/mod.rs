//! Join order from statistics.
//!
//! DataFusion joins tables in the order the query names them, and only picks which
//! side of each join to build. A star query that names its two large tables first
//! therefore joins them first and applies the selective dimension filters last. Here
//! each tree of inner joins is flattened into its inputs and conditions
//! ([`graph`]), each input's rows and key distinct counts are estimated from the
//! statistics of its physical plan ([`estimate`]), and the tree is rebuilt greedily:
//! always the join of two parts with the fewest estimated rows next, so selective
//! dimensions meet the fact table before anything large does. A tree whose inputs'
//! sizes are not all known keeps its order.
//!
//! The estimates are shown by `EXPLAIN` under the logical plan.

mod estimate;
mod graph;

use std::collections::HashMap;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::{OptimizerContext, OptimizerRule};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use estimate::{join_rows, InputEstimate};
use graph::{reorderable, JoinGraph, Part};

/// Trees with fewer inputs have only one order; DataFusion picks the build side.
const MIN_INPUTS: usize = 3;

/// A plan with its join trees reordered, and what `EXPLAIN` says about it.
pub(crate) struct Reordered {
    pub plan: LogicalPlan,
    /// One paragraph per reordered tree: its inputs' estimates and the joins in order.
    pub notes: Vec<String>,
}

/// Reorders every tree of inner joins in `plan` with at least three inputs whose
/// sizes are all known. `planner` plans the inputs physically to read their
/// statistics (without physical optimizer rules: the distribution rule must not run).
pub(crate) async fn reorder(
    plan: &LogicalPlan,
    planner: &DefaultPhysicalPlanner,
    state: &SessionState,
) -> Result<Reordered> {
    let mut inputs = Vec::new();
    tree_inputs(plan, &mut inputs);
    if inputs.is_empty() {
        return Ok(Reordered {
            plan: plan.clone(),
            notes: Vec::new(),
        });
    }
    let state = &statistics_state(state);
    let mut estimates = HashMap::new();
    for input in inputs {
        if estimates.contains_key(&input) {
            continue;
        }
        // An input that cannot be estimated keeps its tree's order; the query's
        // own planning reports whatever is wrong with it.
        let estimate = match planner.create_physical_plan(&input, state).await {
            Ok(physical) => estimate_of(physical.as_ref()),
            Err(e) => {
                tracing::debug!("no estimate for a join input: {e}");
                None
            }
        };
        estimates.insert(input, estimate);
    }
    let mut notes = Vec::new();
    let plan = rebuild(plan.clone(), &estimates, &mut notes)?;
    let plan = if notes.is_empty() {
        plan
    } else {
        // The rebuilt trees carry every column between their joins; prune again.
        OptimizeProjections::new()
            .rewrite(plan, &OptimizerContext::new())?
            .data
    };
    Ok(Reordered { plan, notes })
}

/// The statistics of a physical plan as an estimate (not across an await: the
/// statistics walk's cache is not `Send`).
fn estimate_of(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> Option<InputEstimate> {
    let walk = datafusion::physical_plan::StatisticsContext::new();
    let stats = walk
        .compute(plan, &datafusion::physical_plan::StatisticsArgs::new())
        .ok()?;
    InputEstimate::from_statistics(&stats)
}

/// The inputs of every join tree that may be reordered, nested trees included.
fn tree_inputs(plan: &LogicalPlan, out: &mut Vec<LogicalPlan>) {
    if reorderable(plan) {
        let graph = JoinGraph::of(plan);
        if graph.inputs.len() >= MIN_INPUTS {
            out.extend(graph.inputs.iter().cloned());
        }
        for input in &graph.inputs {
            tree_inputs(input, out);
        }
    } else {
        for input in plan.inputs() {
            tree_inputs(input, out);
        }
    }
}

fn rebuild(
    plan: LogicalPlan,
    estimates: &HashMap<LogicalPlan, Option<InputEstimate>>,
    notes: &mut Vec<String>,
) -> Result<LogicalPlan> {
    plan.transform_down(|node| {
        if !reorderable(&node) {
            return Ok(Transformed::no(node));
        }
        let graph = JoinGraph::of(&node);
        let known: Option<Vec<InputEstimate>> = graph
            .inputs
            .iter()
            .map(|i| estimates.get(i).cloned().flatten())
            .collect();
        let (Some(known), true) = (known, graph.inputs.len() >= MIN_INPUTS) else {
            // Keep this tree's order; trees inside its inputs are visited next.
            return Ok(Transformed::no(node));
        };
        let mut graph = graph;
        graph.inputs = std::mem::take(&mut graph.inputs)
            .into_iter()
            .map(|i| rebuild(i, estimates, notes))
            .collect::<Result<_>>()?;
        let (ordered, note) = order(&graph, &known)?;
        notes.push(note);
        let plan = graph::finish(&graph, ordered, &node)?;
        Ok(Transformed::new(plan, true, TreeNodeRecursion::Jump))
    })
    .map(|t| t.data)
}

/// Greedy operator ordering: join the two connected parts whose join has the
/// fewest estimated rows, until one part is left. Parts with no condition between
/// them are joined last, smallest first.
fn order(graph: &JoinGraph, estimates: &[InputEstimate]) -> Result<(LogicalPlan, String)> {
    let mut parts: Vec<Part> = (0..graph.inputs.len())
        .map(|i| graph::input_part(graph, i, estimates[i].rows, label(&graph.inputs[i])))
        .collect::<Result<_>>()?;
    let mut note = String::from("join order from statistics (estimated rows):");
    for p in &parts {
        note.push_str(&format!("\n  {}: {}", p.label, p.rows.round()));
    }
    let mut step = 0;
    while parts.len() > 1 {
        let mut best: Option<(usize, usize, f64)> = None;
        for a in 0..parts.len() {
            for b in a + 1..parts.len() {
                let keys = key_distincts(graph, estimates, &parts[a], &parts[b]);
                if keys.is_empty() {
                    continue;
                }
                let rows = join_rows(parts[a].rows, parts[b].rows, &keys);
                let inputs = |x: usize, y: usize| parts[x].rows + parts[y].rows;
                let better = match best {
                    None => true,
                    Some((ba, bb, br)) => {
                        rows < br || (rows == br && inputs(a, b) < inputs(ba, bb))
                    }
                };
                if better {
                    best = Some((a, b, rows));
                }
            }
        }
        let (a, b, rows) = match best {
            Some(found) => found,
            None => {
                // No conditions left between parts: a cross join of the two smallest.
                let mut by_size: Vec<usize> = (0..parts.len()).collect();
                by_size.sort_by(|x, y| parts[*x].rows.total_cmp(&parts[*y].rows));
                let (a, b) = (by_size[0].min(by_size[1]), by_size[0].max(by_size[1]));
                (a, b, join_rows(parts[a].rows, parts[b].rows, &[]))
            }
        };
        // Remove the later index first so the earlier one stays valid.
        let second = parts.remove(b);
        let first = parts.remove(a);
        // The smaller part first: DataFusion builds its hash table from the left.
        let (small, large) = if first.rows <= second.rows {
            (first, second)
        } else {
            (second, first)
        };
        step += 1;
        note.push_str(&format!(
            "\n  {step}. {} ⋈ {} -> {}",
            small.label,
            large.label,
            rows.round()
        ));
        parts.push(graph::join_parts(
            graph,
            &small,
            &large,
            rows,
            format!("#{step}"),
        )?);
    }
    Ok((parts.remove(0).plan, note))
}

/// For each key between parts `a` and `b`: its distinct counts on either side.
fn key_distincts(
    graph: &JoinGraph,
    estimates: &[InputEstimate],
    a: &Part,
    b: &Part,
) -> Vec<(f64, f64)> {
    // A key's distinct count is its input's, bounded by that input's rows, not by
    // the rows of the part it is in now: the sales left after a join with a
    // filtered dimension still spread over all customers, so a second filtered
    // dimension shrinks them again (PostgreSQL's eqjoinsel bounds it the same way).
    let distinct = |(expr, input): (&Expr, usize)| {
        let index = match expr {
            Expr::Column(c) => graph.inputs[input].schema().index_of_column(c).ok(),
            _ => None,
        };
        estimates[input].distinct_of(index)
    };
    graph
        .keys_between(a, b)
        .into_iter()
        .map(|(in_a, in_b)| (distinct(in_a), distinct(in_b)))
        .collect()
}

/// A short name for an input in `EXPLAIN`: its alias or table.
fn label(plan: &LogicalPlan) -> String {
    let mut name = None;
    let _ = plan.apply(|node| {
        name = match node {
            LogicalPlan::SubqueryAlias(a) => Some(a.alias.to_string()),
            LogicalPlan::TableScan(s) => Some(s.table_name.to_string()),
            LogicalPlan::Extension(e) => e
                .node
                .as_any()
                .downcast_ref::<datafusion_federation::FederatedPlanNode>()
                .map(|f| label(f.plan())),
            _ => None,
        };
        Ok(if name.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    name.unwrap_or_else(|| {
        let node = plan.display().to_string();
        match node.char_indices().nth(60) {
            Some((end, _)) => format!("{}…", &node[..end]),
            None => node,
        }
    })
}

/// `state` without physical optimizer rules.
fn statistics_state(state: &SessionState) -> SessionState {
    datafusion::execution::session_state::SessionStateBuilder::new_from_existing(state.clone())
        .with_physical_optimizer_rules(Vec::new())
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use crate::config::JoinOrder;
    use crate::engine::query_planner::QuiverQueryPlanner;

    /// A table of `rows` rows whose columns are `i % modulo` for each `(name, modulo)`.
    fn table(rows: i64, columns: &[(&str, i64)]) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, _)| Field::new(*n, DataType::Int64, false))
                .collect::<Vec<_>>(),
        ));
        let arrays = columns
            .iter()
            .map(|(_, m)| Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i % m))) as _)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays).expect("batch");
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table"))
    }

    fn context(order: JoinOrder) -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_query_planner(Arc::new(QuiverQueryPlanner::new(order)))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_table(
            "sales",
            table(20_000, &[("item", 500), ("day", 1_000), ("qty", 7)]),
        )
        .expect("sales");
        ctx.register_table(
            "inventory",
            table(100_000, &[("item", 500), ("day", 1_000)]),
        )
        .expect("inventory");
        ctx.register_table("days", table(1_000, &[("id", 1_000), ("year", 10)]))
            .expect("days");
        ctx.register_table("items", table(500, &[("id", 500), ("kind", 50)]))
            .expect("items");
        ctx
    }

    /// The two large tables come first in the query; the filtered dimensions are
    /// joined with the sales before the inventory is.
    const STAR: &str =
        "SELECT count(*) AS n, sum(s.qty) AS q FROM sales s, inventory i, days d, items t
        WHERE s.item = i.item AND s.day = i.day AND s.day = d.id AND s.item = t.id
          AND d.year = 3 AND t.kind = 7";

    #[tokio::test]
    async fn selective_dimensions_are_joined_before_the_large_tables() {
        let ctx = context(JoinOrder::Statistics);
        let explain = ctx.sql(&format!("EXPLAIN {STAR}")).await.expect("plan");
        let text =
            arrow::util::pretty::pretty_format_batches(&explain.collect().await.expect("run"))
                .expect("format")
                .to_string();
        assert!(text.contains("join order from statistics"), "{text}");
        let steps: Vec<&str> = text.lines().filter(|l| l.contains(" ⋈ ")).collect();
        assert_eq!(steps.len(), 3, "{text}");
        assert!(steps[2].contains(" i "), "inventory last: {text}");
        assert!(
            !steps[0].contains(" i ") && !steps[1].contains(" i "),
            "{text}"
        );

        let reordered = ctx
            .sql(STAR)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let written = context(JoinOrder::Written)
            .sql(STAR)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&reordered)
                .expect("format")
                .to_string(),
            arrow::util::pretty::pretty_format_batches(&written)
                .expect("format")
                .to_string()
        );
    }

    #[tokio::test]
    async fn outer_joins_and_two_table_joins_keep_their_order() {
        let ctx = context(JoinOrder::Statistics);
        for sql in [
            "EXPLAIN SELECT count(*) FROM sales s JOIN inventory i ON s.item = i.item",
            "EXPLAIN SELECT count(*) FROM sales s LEFT JOIN inventory i ON s.item = i.item LEFT JOIN days d ON s.day = d.id",
        ] {
            let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
            let text = arrow::util::pretty::pretty_format_batches(&batches)
                .expect("format")
                .to_string();
            assert!(!text.contains("join order from statistics"), "{sql}: {text}");
        }
    }
}
