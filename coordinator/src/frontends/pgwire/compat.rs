//! Rewrites for the catalog queries drivers send, beyond datafusion-pg-catalog's.
//!
//! SQLAlchemy's inspector (and JDBC tools) select columns through correlated
//! scalar subqueries over `pg_catalog` (`(SELECT pg_get_expr(adbin, adrelid) FROM
//! pg_attrdef WHERE adrelid = attrelid ...)`). PostgreSQL checks at run time that
//! one row comes back; DataFusion wants the subquery aggregated. Over
//! `pg_catalog` each such subquery yields at most one row, so its value is
//! wrapped in `first_value(...)`, which keeps the meaning. Subqueries over other
//! tables are left alone.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Query, SelectItem, SetExpr, Statement, TableFactor, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

pub fn rewrite(statement: &mut Statement) {
    let _ = statement.visit(&mut CatalogSubqueries);
}

struct CatalogSubqueries;

impl VisitorMut for CatalogSubqueries {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Subquery(query) = expr {
            aggregate_catalog_subquery(query);
        }
        ControlFlow::Continue(())
    }
}

/// Aggregate functions that already make one row.
const AGGREGATES: &[&str] = &["count", "sum", "min", "max", "avg", "array_agg", "string_agg", "bool_and", "bool_or", "first_value", "json_agg"];

fn aggregate_catalog_subquery(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_mut() else { return };
    if select.projection.len() != 1 || select.from.is_empty() || !matches!(&select.group_by, datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty()) {
        return;
    }
    let over_catalog = select.from.iter().all(|t| {
        std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)).all(|r| match r {
            TableFactor::Table { name, .. } => name.to_string().to_ascii_lowercase().starts_with("pg_catalog."),
            _ => false,
        })
    });
    if !over_catalog {
        return;
    }
    let wrap = |e: &Expr| -> Option<Expr> {
        let text = e.to_string().to_ascii_lowercase();
        if AGGREGATES.iter().any(|a| text.starts_with(&format!("{a}(")) || text.starts_with(&format!("pg_catalog.{a}("))) {
            return None;
        }
        Parser::new(&PostgreSqlDialect {}).try_with_sql(&format!("first_value({e})")).ok()?.parse_expr().ok()
    };
    match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) => {
            if let Some(w) = wrap(e) {
                *e = w;
            }
        }
        SelectItem::ExprWithAlias { expr, .. } => {
            if let Some(w) = wrap(expr) {
                *expr = w;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses").remove(0);
        rewrite(&mut s);
        s.to_string()
    }

    #[test]
    fn catalog_subqueries_are_aggregated_and_others_are_not() {
        let out = rewritten("SELECT a.attname, (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS x FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) FROM pg_catalog.pg_attribute a");
        assert!(out.contains("first_value(pg_catalog.pg_get_expr(d.adbin, d.adrelid)) AS x"), "{out}");
        let out = rewritten("SELECT (SELECT max(x) FROM pg_catalog.t) , (SELECT y FROM orders WHERE k = 1)");
        assert!(!out.contains("first_value"), "{out}");
    }
}
