//! Access rules applied to a query's logical plan, before it is optimized: a scan
//! of a table the user may not read fails the query with `PermissionDenied` naming
//! the table; a scan with a row filter or column masks becomes
//! `Projection(masks) <- Filter(row filter) <- Scan`. Optimizing afterwards pushes
//! both into the source (a database gets the filtered, masked SQL), so no fragment
//! on a worker ever sees a row or value the user may not.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::plan_err;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, TableReference};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{cast, Expr, LogicalPlan, LogicalPlanBuilder};

use super::access::{Decision, TableName, UserAccess};

/// The tables `plan` reads, `catalog.schema.table`, sorted.
pub fn tables_read(plan: &LogicalPlan, state: &SessionState) -> Vec<String> {
    let (catalog, schema) = defaults(state);
    let mut objects = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let r = scan.table_name.clone().resolve(&catalog, &schema);
            objects.insert(
                TableName {
                    catalog: &r.catalog,
                    schema: &r.schema,
                    table: &r.table,
                }
                .to_string(),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    });
    objects.into_iter().collect()
}

fn defaults(state: &SessionState) -> (String, String) {
    let options = state.config().options();
    (
        options.catalog.default_catalog.clone(),
        options.catalog.default_schema.clone(),
    )
}

/// Checks and rewrites `plan` for `access`.
pub fn enforce(
    plan: LogicalPlan,
    access: &UserAccess,
    state: &SessionState,
) -> Result<LogicalPlan> {
    let (default_catalog, default_schema) = defaults(state);
    let plan = plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let resolved = scan
                .table_name
                .clone()
                .resolve(&default_catalog, &default_schema);
            let table = TableName {
                catalog: &resolved.catalog,
                schema: &resolved.schema,
                table: &resolved.table,
            };
            match access.decide(table) {
                Decision::Deny => Err(denied(access, table)),
                Decision::Allow {
                    row_filter: None,
                    masks,
                } if masks.is_empty() => Ok(Transformed::no(node)),
                Decision::Allow { row_filter, masks } => {
                    let qualifier = scan.table_name.clone();
                    guard(
                        node,
                        &qualifier,
                        table,
                        row_filter.as_deref(),
                        &masks,
                        state,
                    )
                    .map(Transformed::yes)
                }
            }
        })?
        .data;
    Ok(plan)
}

fn denied(access: &UserAccess, table: TableName<'_>) -> DataFusionError {
    let who = access.user().unwrap_or("anonymous");
    DataFusionError::External(Box::new(tonic::Status::permission_denied(format!(
        "access denied: user '{who}' may not read table {table}"
    ))))
}

/// The scan with its row filter and masks on top, same columns and qualifier.
fn guard(
    scan: LogicalPlan,
    qualifier: &TableReference,
    table: TableName<'_>,
    row_filter: Option<&str>,
    masks: &BTreeMap<String, String>,
    state: &SessionState,
) -> Result<LogicalPlan> {
    let schema: DFSchema = scan.schema().as_ref().clone();
    let rule_error = |what: &str, sql: &str, e: DataFusionError| {
        DataFusionError::Plan(format!(
            "access rule for {table}: invalid {what} '{sql}': {e}"
        ))
    };
    let mut builder = LogicalPlanBuilder::from(scan);
    if let Some(sql) = row_filter {
        let predicate = state
            .create_logical_expr(sql, &schema)
            .map_err(|e| rule_error("row_filter", sql, e))?;
        builder = builder.filter(predicate)?;
    }
    if !masks.is_empty() {
        if let Some(unknown) = masks
            .keys()
            .find(|c| schema.field_with_unqualified_name(c).is_err())
        {
            return plan_err!(
                "access rule for {table} masks column '{unknown}', which the table does not have"
            );
        }
        let columns = schema
            .iter()
            .map(|(q, field)| match masks.get(field.name()) {
                Some(sql) => {
                    let mask = state
                        .create_logical_expr(sql, &schema)
                        .map_err(|e| rule_error("mask", sql, e))?;
                    // Same type as the column: the rest of the plan was typed against it.
                    Ok(cast(mask, field.data_type().clone())
                        .alias_qualified(Some(qualifier.clone()), field.name()))
                }
                None => Ok(Expr::Column(Column::new(q.cloned(), field.name()))),
            })
            .collect::<Result<Vec<_>>>()?;
        // Under the table's own name again: SQL pushed to a database then reads
        // `(SELECT <masks> FROM t WHERE ...) AS t`, and the columns the rest of the
        // statement names as `t.x` still resolve.
        builder = builder.project(columns)?.alias(qualifier.clone())?;
    }
    builder.build()
}
