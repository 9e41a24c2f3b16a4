//! Dynamic filters across stages: a partitioned hash join's build-side keys
//! filter the stage that produces its probe side, before that stage starts.
//!
//! Inside one task DataFusion's hash join already filters its probe-side scan
//! with the keys it collected. When both sides of the join are exchanges, the
//! probe side's scan runs in another stage, on other workers, and would shuffle
//! every row. So [`link`] finds such joins after the plan is cut; the build
//! stage's tasks then report a summary of their keys (bounds, and up to
//! `workers.join_keys_max` distinct values for a one-column key,
//! `quiver_worker::exchange::KeySummary`); the probe stage waits for the build
//! stage (at most [`SUMMARY_WAIT`]), and [`filtered`] puts the merged summary on
//! it as `key >= min AND key <= max AND key IN (…)`: pushed into Parquet scans
//! (row groups and pages pruned by their statistics), into database statements
//! (`quiver_connectors::join_keys::restrict`), and applied before the exchange
//! otherwise, so fewer rows are read and shuffled.
//!
//! Only where dropping probe rows without a match cannot change the answer: join
//! types that never emit unmatched probe rows (inner, left, left semi/anti/mark,
//! right semi), keys that are not null-equal, and both sides read straight from
//! the exchanges hashed on the join's keys. The join still checks every row, so a
//! filter that arrives late or not at all is only slower, never wrong.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{binary, in_list, lit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::ExecutionPlan;
use quiver_worker::exchange::{KeySummary, ShuffleOutput, ShuffleReadExec};

use super::stages::{StagePlan, StagedPlan};

/// How long a probe stage waits for its build stage's keys before it runs unfiltered.
pub const SUMMARY_WAIT: Duration = Duration::from_secs(60);

/// A build side estimated at more rows than this many times `join_keys_max` is not
/// linked: only its bounds would reach the probe stage, which then waits for
/// keys that seldom narrow anything (keys of a large side span their whole range).
const ROWS_PER_LISTED_KEY: usize = 4;

/// Marks each build stage whose keys can filter a probe stage, and that probe
/// stage. `values_max`: most distinct keys a summary lists (`join_keys_max`).
pub fn link(staged: &mut StagedPlan, values_max: usize) {
    let mut pairs = vec![];
    let mut visit = |plan: &Arc<dyn ExecutionPlan>| {
        let _ = plan.apply(|node| {
            if let Some(join) = node.as_ref().downcast_ref::<HashJoinExec>() {
                if let Some((build, probe)) = build_and_probe(join, &staged.stages) {
                    match estimated_rows(&staged.stages, build) {
                        Some(rows) if rows > values_max.saturating_mul(ROWS_PER_LISTED_KEY) => {
                            tracing::debug!(
                                build,
                                probe,
                                rows,
                                "build side too large to filter its probe stage; not linked"
                            );
                        }
                        _ => pairs.push((build, probe)),
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
    };
    visit(&staged.root);
    for stage in &staged.stages {
        visit(&stage.plan);
    }
    for (build, probe) in pairs {
        for stage in staged.stages.iter_mut() {
            if stage.id == build {
                stage.summarize_keys = true;
            }
            if stage.id == probe && !stage.filtered_by.contains(&build) {
                stage.filtered_by.push(build);
            }
        }
    }
}

/// The rows a stage is estimated to produce, from its inputs' statistics; None
/// when they say nothing (a stage that reads other stages, a source without them)
/// or too little: a join's estimate is a guess (TPC-H q17's build side, a selective
/// part joined with lineitem, is estimated at lineitem's size and keeps ~1/1000).
fn estimated_rows(stages: &[StagePlan], id: u32) -> Option<usize> {
    let stage = stages.iter().find(|s| s.id == id)?;
    let mut joins = false;
    let _ = stage.plan.apply(|node| {
        joins |= node.name().contains("Join");
        Ok(if joins {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if joins {
        return None;
    }
    let walk = datafusion::physical_plan::StatisticsContext::new();
    let stats = walk
        .compute(
            stage.plan.as_ref(),
            &datafusion::physical_plan::StatisticsArgs::new(),
        )
        .ok()?;
    stats.num_rows.get_value().copied()
}

/// The build and probe stages of `join`, when its build keys may filter its probe side.
fn build_and_probe(join: &HashJoinExec, stages: &[StagePlan]) -> Option<(u32, u32)> {
    let drops_unmatched_probe_rows = matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::RightSemi
    );
    if *join.partition_mode() != PartitionMode::Partitioned
        || !drops_unmatched_probe_rows
        || join.null_equality() != NullEquality::NullEqualsNothing
        || join.null_aware
    {
        return None;
    }
    let build = join.left().as_ref().downcast_ref::<ShuffleReadExec>()?;
    let probe = join.right().as_ref().downcast_ref::<ShuffleReadExec>()?;
    let stage = |id: u32| stages.iter().find(|s| s.id == id);
    let (build_stage, probe_stage) = (stage(build.stage())?, stage(probe.stage())?);
    let (build_keys, probe_keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
    match (&build_stage.output, &probe_stage.output) {
        (ShuffleOutput::Hash(b, _), ShuffleOutput::Hash(p, _))
            if same(b, &build_keys) && same(p, &probe_keys) && build_stage.id != probe_stage.id =>
        {
            Some((build_stage.id, probe_stage.id))
        }
        _ => None,
    }
}

fn same(a: &[Arc<dyn PhysicalExpr>], b: &[Arc<dyn PhysicalExpr>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_ref() == y.as_ref())
}

/// The condition on `keys` (the probe stage's hash keys) that `summary` (its
/// build stage's) allows; None when it allows every row.
pub fn condition(
    keys: &[Arc<dyn PhysicalExpr>],
    summary: &KeySummary,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let nothing = || Ok(Some(lit(false)));
    if summary.rows == 0 || keys.len() != summary.min.len() {
        return match summary.rows {
            0 => nothing(),
            _ => Ok(None),
        };
    }
    let mut parts: Vec<Arc<dyn PhysicalExpr>> = vec![];
    for ((key, min), max) in keys.iter().zip(&summary.min).zip(&summary.max) {
        if min.is_null() || max.is_null() {
            // Every build key was null: no row can match.
            return nothing();
        }
        parts.push(binary(
            key.clone(),
            Operator::GtEq,
            lit(min.clone()),
            schema,
        )?);
        parts.push(binary(
            key.clone(),
            Operator::LtEq,
            lit(max.clone()),
            schema,
        )?);
    }
    if let (Some(values), [key]) = (&summary.values, keys) {
        let list = values.iter().cloned().map(lit).collect();
        parts.push(in_list(key.clone(), list, &false, schema)?);
    }
    Ok(parts.into_iter().reduce(|a, b| {
        Arc::new(datafusion::physical_expr::expressions::BinaryExpr::new(
            a,
            Operator::And,
            b,
        ))
    }))
}

/// `plan` (a stage's work, bound to its inputs) keeping only rows that meet
/// `condition`: in its database statements, in its Parquet scans' pruning, and
/// in a filter before the exchange.
pub fn filtered(
    plan: Arc<dyn ExecutionPlan>,
    condition: Arc<dyn PhysicalExpr>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = quiver_connectors::join_keys::restrict(plan, condition.clone())?;
    let plan: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(condition, plan)?);
    FilterPushdown::new().optimize(plan, &ConfigOptions::default())
}

/// A short text of `condition` for EXPLAIN ANALYZE (an `IN` list is counted, not listed).
pub fn describe(summary: &KeySummary) -> String {
    let bounds: Vec<String> = summary
        .min
        .iter()
        .zip(&summary.max)
        .map(|(lo, hi)| format!("[{}, {}]", show(lo), show(hi)))
        .collect();
    match &summary.values {
        Some(v) => format!("{} and {} values", bounds.join(" "), v.len()),
        None => bounds.join(" "),
    }
}

fn show(v: &ScalarValue) -> String {
    let text = v.to_string();
    match text.chars().count() > 24 {
        true => format!("{}…", text.chars().take(24).collect::<String>()),
        false => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::col;

    #[test]
    fn a_summary_becomes_bounds_and_a_list() -> Result<()> {
        let schema = Schema::new(vec![Field::new("k", DataType::Int64, true)]);
        let keys = vec![col("k", &schema)?];
        let int = |v: i64| ScalarValue::Int64(Some(v));
        let listed = KeySummary {
            rows: 3,
            min: vec![int(2)],
            max: vec![int(7)],
            values: Some(vec![int(2), int(7)]),
        };
        let text = condition(&keys, &listed, &schema)?.map(|c| c.to_string());
        assert_eq!(
            text.as_deref(),
            Some("k@0 >= 2 AND k@0 <= 7 AND k@0 IN (SET) ([2, 7])")
        );
        let empty = KeySummary {
            rows: 0,
            values: None,
            ..listed.clone()
        };
        assert_eq!(
            condition(&keys, &empty, &schema)?.map(|c| c.to_string()),
            Some("false".to_string())
        );
        let nulls = KeySummary {
            min: vec![ScalarValue::Int64(None)],
            max: vec![ScalarValue::Int64(None)],
            ..listed
        };
        assert_eq!(
            condition(&keys, &nulls, &schema)?.map(|c| c.to_string()),
            Some("false".to_string())
        );
        Ok(())
    }
}
