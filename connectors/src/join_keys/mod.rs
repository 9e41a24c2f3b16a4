//! Dynamic filtering into databases: a hash join's build-side keys become part of
//! the statement the probe side's database runs.
//!
//! When a database table is the probe side of a hash join, DataFusion's join
//! computes, once its build side is collected, a dynamic filter: the keys'
//! bounds and, for up to `datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values`
//! distinct keys, the keys themselves. DataFusion's default of 150 sends only the
//! range for a few hundred keys; [`configure`] raises it to `join_keys_max`
//! (10,000 unless configured), on the coordinator and on every worker. [`attach`] hands that filter to the
//! [`SourceScanExec`] under the join; the scan waits for it before it sends its
//! statement, and adds it as `WHERE key IN (…)` or, beyond the limit,
//! `WHERE key >= min AND key <= max` (as Trino's dynamic filtering does for its
//! JDBC connectors). Only the parts of the filter that translate to SQL are sent;
//! the join still checks every row, so a weaker filter is only slower, never wrong.
//!
//! Beyond `join_keys_max` keys DataFusion's filter holds only the range and a hash
//! table. With `join_key_array_max` set (off by default), a join on one key then
//! also keeps its build side's distinct keys ([`build_keys`]), and a PostgreSQL
//! scan receives them as one array literal, `key = ANY('{…}'::int8[])`, which
//! PostgreSQL runs as a hashed semi-join filter (other databases: `IN (…)`).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::expressions::{Column, DynamicFilterPhysicalExpr};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};

mod build_keys;
pub(crate) mod condition;

use self::build_keys::BuildKeysExec;
pub use self::build_keys::MAX_SET_KEYS;
pub use self::condition::JoinFilter;

/// How many of a join's keys reach a database (`[workers] join_keys_max` and
/// `join_key_array_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinKeyLimits {
    /// Most keys the dynamic filter lists, sent as `key IN (…)`.
    pub list: usize,
    /// Most keys of a build side kept and sent whole beyond `list`; 0 = none
    /// (the default: on TPC-H the sets that need it cost more than they save,
    /// docs/benchmarks.md "Join keys as a set").
    pub array: usize,
}

impl Default for JoinKeyLimits {
    fn default() -> Self {
        Self {
            list: 10_000,
            array: 0,
        }
    }
}

/// Lets joins build their dynamic filter as a key list for up to `max_keys`
/// distinct keys (and 64 bytes a key, DataFusion's per-partition byte limit).
pub fn configure(options: &mut datafusion::config::ConfigOptions, max_keys: usize) {
    let optimizer = &mut options.optimizer;
    optimizer.hash_join_inlist_pushdown_max_distinct_values = max_keys;
    optimizer.hash_join_inlist_pushdown_max_size = optimizer
        .hash_join_inlist_pushdown_max_size
        .max(max_keys.saturating_mul(64));
}
use crate::source_scan::SourceScanExec;

/// Gives every [`SourceScanExec`] that is the probe side of a hash join (through
/// nodes that only move, filter or rename rows) that join's dynamic filter.
/// `collect_keys` (at most that many; `None` or 0: none): also put a
/// [`BuildKeysExec`] on the build side of such a join on one key, for sets beyond
/// the filter's list; only for a plan that runs in this process as it is (the
/// node does not travel to workers, which attach their own).
pub fn attach(
    plan: Arc<dyn ExecutionPlan>,
    collect_keys: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(join) = node.as_ref().downcast_ref::<HashJoinExec>() else {
            return Ok(Transformed::no(node));
        };
        // The typed accessor; its replacement hands out `dyn PhysicalExpr`.
        #[allow(deprecated)]
        let Some(filter) = join.dynamic_filter_expr().cloned() else {
            return Ok(Transformed::no(node));
        };
        let probe = join.right().clone();
        let identity = (0..probe.schema().fields().len()).map(Some).collect();
        // A join on one key also keeps its build side's keys, for sets larger
        // than the dynamic filter lists (build_keys.rs).
        let collector = match join.on() {
            [(build_key, probe_key)] => match collect_keys {
                Some(max) if max > 0 => probe_key.downcast_ref::<Column>().map(|c| {
                    let max = max.min(MAX_SET_KEYS);
                    let exec = BuildKeysExec::new(join.left().clone(), build_key.clone(), max);
                    (exec, c.index())
                }),
                _ => None,
            },
            _ => None,
        };
        let keys = collector
            .as_ref()
            .map(|(exec, column)| (exec.keys(), *column));
        match with_filter(
            &probe,
            JoinFilter {
                filter,
                columns: identity,
                keys,
            },
        )? {
            Some(new_probe) => {
                let left = match collector {
                    Some((exec, _)) => Arc::new(exec) as Arc<dyn ExecutionPlan>,
                    None => join.left().clone(),
                };
                Ok(Transformed::yes(replace_children_if_necessary(
                    node.clone(),
                    vec![left, new_probe],
                )?))
            }
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
}

/// `plan` with `condition` (over `plan`'s output columns) written into the
/// statement of the database scan under it, through nodes that only move, filter
/// or rename rows; unchanged when there is no such scan. Only the parts of the
/// condition a database can run are written (as for a join's dynamic filter);
/// the caller still applies the whole condition.
pub fn restrict(
    plan: Arc<dyn ExecutionPlan>,
    condition: Arc<dyn PhysicalExpr>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut columns: Vec<Column> = collect_columns(&condition).into_iter().collect();
    columns.sort_by_key(|c| c.index());
    let children = columns
        .into_iter()
        .map(|c| Arc::new(c) as Arc<dyn PhysicalExpr>)
        .collect();
    let filter = Arc::new(DynamicFilterPhysicalExpr::new(children, condition));
    filter.mark_complete();
    let identity = (0..plan.schema().fields().len()).map(Some).collect();
    let joined = JoinFilter {
        filter,
        columns: identity,
        keys: None,
    };
    let Some(with) = with_filter(&plan, joined)? else {
        return Ok(plan);
    };
    with.transform_up(
        |node| match node.as_ref().downcast_ref::<SourceScanExec>() {
            Some(scan) => Ok(Transformed::yes(
                Arc::new(scan.baked()?) as Arc<dyn ExecutionPlan>
            )),
            None => Ok(Transformed::no(node)),
        },
    )
    .map(|t| t.data)
}

/// `plan` with the filter on the scan under it, or `None` when there is no such scan.
fn with_filter(
    plan: &Arc<dyn ExecutionPlan>,
    filter: JoinFilter,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let node = plan.as_ref();
    if let Some(scan) = node.downcast_ref::<SourceScanExec>() {
        return Ok(Some(Arc::new(scan.with_join_filter(filter))));
    }
    let [child] = plan.children()[..] else {
        return Ok(None);
    };
    let filter = if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        // Output column i of the projection is child column j when it is a plain column.
        let through: Vec<Option<usize>> = projection
            .expr()
            .iter()
            .map(|e| e.expr.downcast_ref::<Column>().map(|c| c.index()))
            .collect();
        let columns = filter
            .columns
            .iter()
            .map(|c| c.and_then(|i| through.get(i).copied().flatten()))
            .collect();
        JoinFilter { columns, ..filter }
    } else {
        let same_rows = node.is::<RepartitionExec>()
            || node.is::<CoalescePartitionsExec>()
            || node.name() == "CoalesceBatchesExec"
            || node.name() == "CooperativeExec"
            // One partition of its input (a stage task rewritten to its own partition).
            || node.name() == "PartitionExec"
            || node.downcast_ref::<FilterExec>().is_some_and(|f| f.projection().is_none());
        if !same_rows {
            return Ok(None);
        }
        filter
    };
    match with_filter(child, filter)? {
        Some(new_child) => Ok(Some(replace_children_if_necessary(
            plan.clone(),
            vec![new_child],
        )?)),
        None => Ok(None),
    }
}
