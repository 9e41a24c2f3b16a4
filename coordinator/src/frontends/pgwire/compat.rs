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

use datafusion::sql::sqlparser::ast::{
    Expr, Query, SelectItem, SetExpr, Statement, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

pub fn rewrite(statement: &mut Statement) {
    let _ = statement.visit(&mut NoDomainsOrComposites);
    let _ = statement.visit(&mut ViewDefinitions);
    let _ = statement.visit(&mut ArraySubqueries);
    let _ = statement.visit(&mut CatalogSubqueries);
    let _ = statement.visit(&mut DistinctNames);
    let _ = statement.visit(&mut Subscripts);
}

/// `ARRAY(SELECT x FROM … ORDER BY y)`, PostgreSQL's array of a subquery's rows
/// (psql's `\d+`), as `(SELECT array_agg(x ORDER BY y) FROM …)`; over
/// `unnest(….reloptions)`, NULL.
struct ArraySubqueries;

impl VisitorMut for ArraySubqueries {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        if !f.name.to_string().eq_ignore_ascii_case("array") {
            return ControlFlow::Continue(());
        }
        let datafusion::sql::sqlparser::ast::FunctionArguments::Subquery(query) = &f.args else {
            return ControlFlow::Continue(());
        };
        let mut query = query.clone();
        let order = query
            .order_by
            .take()
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        // psql's `\d+` lists a table's TOAST options, `array(select 'toast.' || x from
        // unnest(tc.reloptions) x)`: an unnest of the outer row, which DataFusion does
        // not decorrelate. Quiver's `reloptions` are always NULL, and so is the array.
        if let [from] = select.from.as_slice() {
            let relation = from.relation.to_string().to_ascii_lowercase();
            if relation.contains("unnest(") && relation.contains("reloptions)") {
                if let Ok(null) = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql("CAST(NULL AS VARCHAR[])")
                    .and_then(|mut p| p.parse_expr())
                {
                    *expr = null;
                }
                return ControlFlow::Continue(());
            }
        }
        let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
            select.projection.as_slice()
        else {
            return ControlFlow::Continue(());
        };
        let Ok(agg) = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&format!("array_agg({item}{order})"))
            .and_then(|mut p| p.parse_expr())
        else {
            return ControlFlow::Continue(());
        };
        select.projection = vec![SelectItem::UnnamedExpr(agg)];
        *expr = Expr::Subquery(query);
        ControlFlow::Continue(())
    }
}

/// `generate_subscripts(a, 1)`, PostgreSQL's set-returning function of an array's
/// indexes (SQLAlchemy's index reflection), as `unnest(range(1, len + 1))`, which
/// unnests in step with an `unnest(a)` beside it, as in PostgreSQL.
struct Subscripts;

impl VisitorMut for Subscripts {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        let name = f.name.to_string().to_ascii_lowercase();
        if name.trim_start_matches("pg_catalog.") != "generate_subscripts" {
            return ControlFlow::Continue(());
        }
        let datafusion::sql::sqlparser::ast::FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        let Some(array) = list.args.first() else {
            return ControlFlow::Continue(());
        };
        let sql =
            format!("unnest(range(1, CAST(coalesce(array_length({array}, 1), 0) AS BIGINT) + 1))");
        if let Ok(e) = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_expr())
        {
            *expr = e;
        }
        ControlFlow::Continue(())
    }
}

/// Parameters cast to `oid` or `oid[]` (`$1::oid[]`), by number: they are
/// described to the client as those types, not as the `int4` Quiver computes
/// with. asyncpg's type introspection binds `$1::oid[]` and has a codec for
/// `oid[]` only; told `int4[]`, it would introspect that type with the same
/// query, without end.
pub fn oid_parameters(
    statement: &Statement,
) -> std::collections::HashMap<usize, pgwire::api::Type> {
    use datafusion::sql::sqlparser::ast::{Value, Visit, Visitor};
    struct Casts(std::collections::HashMap<usize, pgwire::api::Type>);
    impl Visitor for Casts {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Cast {
                expr: inner,
                data_type,
                ..
            } = expr
            {
                if let Expr::Value(v) = inner.as_ref() {
                    if let Value::Placeholder(p) = &v.value {
                        let n = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
                        let t = match data_type.to_string().to_ascii_lowercase().as_str() {
                            "oid[]" => Some(pgwire::api::Type::OID_ARRAY),
                            "oid" => Some(pgwire::api::Type::OID),
                            _ => None,
                        };
                        if let (Some(n), Some(t)) = (n, t) {
                            self.0.insert(n, t);
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut casts = Casts(Default::default());
    let _ = statement.visit(&mut casts);
    casts.0
}

/// PostgreSQL lets a select list repeat a column name (`SELECT current_user,
/// session_user`, which the catalog rewrites make two `session_user` calls,
/// `SELECT 1, 1`, or `SELECT d::date, d::timestamptz`, both named `d`); DataFusion
/// wants each name once. A repeated unnamed item gets the name `<name>_<n>`.
struct DistinctNames;

impl VisitorMut for DistinctNames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let mut seen = std::collections::HashMap::<String, usize>::new();
        for item in select.projection.iter_mut() {
            let SelectItem::UnnamedExpr(expr) = item else {
                continue;
            };
            let name = output_name(expr);
            let count = seen.entry(name.to_ascii_lowercase()).or_insert(0);
            *count += 1;
            // A cast of a column is named after the column, as PostgreSQL names it
            // (DataFusion would print the qualified name).
            let cast_of_column = matches!(expr, Expr::Cast { expr: inner, .. }
                if matches!(inner.as_ref(), Expr::Identifier(_) | Expr::CompoundIdentifier(_)));
            if *count == 1 && cast_of_column {
                let alias = datafusion::sql::sqlparser::ast::Ident::with_quote('"', name);
                *item = SelectItem::ExprWithAlias {
                    expr: expr.clone(),
                    alias,
                };
                continue;
            }
            if *count > 1 {
                let base = match expr {
                    Expr::Function(f) => f.name.to_string(),
                    Expr::Identifier(_)
                    | Expr::CompoundIdentifier(_)
                    | Expr::Cast { .. }
                    | Expr::Nested(_) => name.clone(),
                    _ => "?column?".to_string(),
                };
                let alias = datafusion::sql::sqlparser::ast::Ident::with_quote(
                    '"',
                    format!("{base}_{}", *count - 1),
                );
                *item = SelectItem::ExprWithAlias {
                    expr: expr.clone(),
                    alias,
                };
            }
        }
        ControlFlow::Continue(())
    }
}

/// The name DataFusion gives an unnamed select item: a column's (also through a
/// cast, `x::date` and `x::text` are both `x`), else the expression's text.
fn output_name(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(parts) => {
            parts.last().map(|i| i.value.clone()).unwrap_or_default()
        }
        Expr::Cast { expr, .. } | Expr::Nested(expr) => output_name(expr),
        other => other.to_string(),
    }
}

/// `CASE WHEN t.typtype = 'd' THEN (subquery) …` and `… = 'c' …`: asyncpg's type
/// introspection walks a domain's base types (a recursive CTE) and a composite
/// type's attributes in correlated subqueries, which DataFusion cannot run. No
/// type Quiver puts in a result is a domain or a composite (a struct is `record`),
/// so those branches are NULL, typed as asyncpg reads them (`oid`, `oid[]`, `text[]`).
struct NoDomainsOrComposites;

impl VisitorMut for NoDomainsOrComposites {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Case { conditions, .. } = expr else {
            return ControlFlow::Continue(());
        };
        let [when] = conditions.as_slice() else {
            return ControlFlow::Continue(());
        };
        let condition = when
            .condition
            .to_string()
            .to_ascii_lowercase()
            .replace(' ', "");
        let kind = match condition.rsplit_once("typtype=") {
            Some((_, "'d'")) => 'd',
            Some((_, "'c'")) => 'c',
            _ => return ControlFlow::Continue(()),
        };
        if !matches!(when.result, Expr::Subquery(_)) {
            return ControlFlow::Continue(());
        }
        let typed = match (kind, when.result.to_string().contains("attname")) {
            ('d', _) => "CAST(NULL AS INT)",
            (_, true) => "CAST(NULL AS VARCHAR[])",
            _ => "CAST(NULL AS INT[])",
        };
        if let Ok(null) = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(typed)
            .and_then(|mut p| p.parse_expr())
        {
            *expr = null;
        }
        ControlFlow::Continue(())
    }
}

/// `pg_get_viewdef(oid [, pretty])` (psql's `\d+ view`, JDBC's view metadata) as
/// the view's text from `pg_views`, found through `pg_class` by its OID.
struct ViewDefinitions;

impl VisitorMut for ViewDefinitions {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        let name = f.name.to_string().to_ascii_lowercase();
        if name.trim_start_matches("pg_catalog.") != "pg_get_viewdef" {
            return ControlFlow::Continue(());
        }
        let datafusion::sql::sqlparser::ast::FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        let Some(datafusion::sql::sqlparser::ast::FunctionArg::Unnamed(
            datafusion::sql::sqlparser::ast::FunctionArgExpr::Expr(oid),
        )) = list.args.first()
        else {
            return ControlFlow::Continue(());
        };
        let sql = format!(
            "(SELECT max(quiver_pv.definition) FROM pg_catalog.pg_views quiver_pv \
             JOIN pg_catalog.pg_namespace quiver_pn ON quiver_pn.nspname = quiver_pv.schemaname \
             JOIN pg_catalog.pg_class quiver_pc ON quiver_pc.relnamespace = quiver_pn.oid \
             AND quiver_pc.relname = quiver_pv.viewname WHERE quiver_pc.oid = CAST({oid} AS INT))"
        );
        if let Ok(subquery) = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_expr())
        {
            *expr = subquery;
        }
        ControlFlow::Continue(())
    }
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
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "first_value",
    "json_agg",
];

fn aggregate_catalog_subquery(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    if select.projection.len() != 1
        || select.from.is_empty()
        || !matches!(&select.group_by, datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty())
    {
        return;
    }
    let over_catalog = select.from.iter().all(|t| {
        std::iter::once(&t.relation)
            .chain(t.joins.iter().map(|j| &j.relation))
            .all(|r| match r {
                TableFactor::Table { name, .. } => name
                    .to_string()
                    .to_ascii_lowercase()
                    .starts_with("pg_catalog."),
                _ => false,
            })
    });
    if !over_catalog {
        return;
    }
    let wrap = |e: &Expr| -> Option<Expr> {
        let text = e.to_string().to_ascii_lowercase();
        if AGGREGATES.iter().any(|a| {
            text.starts_with(&format!("{a}(")) || text.starts_with(&format!("pg_catalog.{a}("))
        }) {
            return None;
        }
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&format!("first_value({e})"))
            .ok()?
            .parse_expr()
            .ok()
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
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0);
        rewrite(&mut s);
        s.to_string()
    }

    #[test]
    fn catalog_subqueries_are_aggregated_and_others_are_not() {
        let out = rewritten("SELECT a.attname, (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS x FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) FROM pg_catalog.pg_attribute a");
        assert!(
            out.contains("first_value(pg_catalog.pg_get_expr(d.adbin, d.adrelid)) AS x"),
            "{out}"
        );
        let out = rewritten(
            "SELECT (SELECT max(x) FROM pg_catalog.t) , (SELECT y FROM orders WHERE k = 1)",
        );
        assert!(!out.contains("first_value"), "{out}");
    }

    #[test]
    fn array_of_a_subquery_becomes_an_aggregate() {
        let out = rewritten(
            "SELECT array(SELECT x FROM pg_catalog.t WHERE y = 1 ORDER BY x) FROM pg_catalog.u",
        );
        assert_eq!(out, "SELECT (SELECT array_agg(x ORDER BY x) FROM pg_catalog.t WHERE y = 1) FROM pg_catalog.u");
    }

    #[test]
    fn repeated_unnamed_columns_get_distinct_names() {
        let out = rewritten("SELECT session_user, session_user, 1, 1, a FROM t");
        assert_eq!(out, "SELECT session_user, session_user AS \"session_user_1\", 1, 1 AS \"?column?_1\", a FROM t");
        let out = rewritten("SELECT t.d::DATE, d::TIMESTAMPTZ, CAST(k AS INT), k FROM t");
        assert_eq!(out, "SELECT t.d::DATE AS \"d\", d::TIMESTAMPTZ AS \"d_1\", CAST(k AS INT) AS \"k\", k AS \"k_1\" FROM t");
    }
}

#[cfg(test)]
mod oid_tests {
    #[test]
    fn oid_array_parameters_are_found_after_the_catalog_rewrites() {
        let parser = datafusion_pg_catalog::sql::PostgresCompatibilityParser::new();
        let s = parser
            .parse("SELECT t.oid FROM pg_catalog.pg_type t WHERE t.oid = any($1::oid[])")
            .expect("parses")
            .remove(0);
        let found = super::oid_parameters(&s);
        assert_eq!(found.get(&1), Some(&pgwire::api::Type::OID_ARRAY), "{s}");
    }
}
