//! A live copy as a table: the base copy without the keys the change set holds,
//! plus the change set's rows that are not deletions.
//!
//! Both parts are Parquet folders, so the plan is an anti join and a union of
//! two file scans that the distributed planner spreads over the workers like any
//! other; filters and projections reach both scans. Right after a compaction the
//! change set is empty and the copy is its base alone, a plain file table.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::{Column, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::datasource::view::ViewTable;
use datafusion::error::Result;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{not, Expr, JoinType, LogicalPlanBuilder};
use quiver_connectors::postgres::changes::DELETED_COLUMN;

use super::super::listing_table;
use crate::catalog::store::ChangesState;

/// The table queries read for `changes`; `None` while the copy is not yet
/// consistent (the initial copy's changes are still being replayed).
pub async fn table_of(
    state: &SessionState,
    changes: &ChangesState,
) -> Result<Option<Arc<dyn TableProvider>>> {
    if changes.applied_lsn < changes.consistent_from {
        return Ok(None);
    }
    let base = match changes.base.is_empty() {
        true => None,
        false => Some(listing_table(state, &changes.base, true).await?),
    };
    let Some(change_set) = &changes.change_set else {
        return Ok(base);
    };
    let delta = listing_table(state, std::slice::from_ref(change_set), true).await?;
    let columns: Vec<_> = delta
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != DELETED_COLUMN)
        .collect();
    // Names as they are: a column `Name` is not `name`.
    let column =
        |table: &str, name: &str| Column::new(Some(TableReference::bare(table.to_string())), name);
    let live = LogicalPlanBuilder::scan("change_set", provider_as_source(delta.clone()), None)?
        .filter(not(Expr::Column(column("change_set", DELETED_COLUMN))))?
        .project(
            columns
                .iter()
                .map(|c| Expr::Column(column("change_set", c))),
        )?
        .build()?;
    let plan = match base {
        None => live,
        Some(base) => {
            let keys = &changes.key;
            let changed = LogicalPlanBuilder::scan("changed", provider_as_source(delta), None)?
                .project(keys.iter().map(|k| Expr::Column(column("changed", k))))?
                .build()?;
            LogicalPlanBuilder::scan("base", provider_as_source(base), None)?
                .join(
                    changed,
                    JoinType::LeftAnti,
                    (
                        keys.iter().map(|k| column("base", k)).collect::<Vec<_>>(),
                        keys.iter()
                            .map(|k| column("changed", k))
                            .collect::<Vec<_>>(),
                    ),
                    None,
                )?
                .project(columns.iter().map(|c| Expr::Column(column("base", c))))?
                .union(live)?
                .build()?
        }
    };
    Ok(Some(Arc::new(ViewTable::new(plan, None))))
}
