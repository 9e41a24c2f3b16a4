//! PostgreSQL's spelling of what DataFusion spells otherwise, on every door.
//!
//! - Date and time format patterns in `to_date`, `to_timestamp` and `to_char`:
//!   BI tools write time filters the PostgreSQL way (Superset:
//!   `TO_TIMESTAMP('1995-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')`);
//!   DataFusion's functions of the same names read chrono patterns (`%Y-%m-%d`). A
//!   format given as a string literal without `%` is taken as PostgreSQL's and
//!   translated before planning; a format with `%` is already chrono's and is left
//!   alone, so both spellings work.
//! - `LIKE … ESCAPE '!'` (SQLAlchemy's schema listing) with a literal or bound
//!   pattern: the pattern is rewritten with backslash escapes, the only kind
//!   DataFusion reads ([`LikeEscapes`], the last optimizer rule, when the pattern
//!   has been folded to a literal).
//! - An interval literal times a number (`INTERVAL '5 minutes' * FLOOR(…)`, in
//!   Superset's sub-hour time grains) becomes `quiver_interval_mul(…)`
//!   (`quiver_worker::functions`), which DataFusion's `*` does not do.
//! - `information_schema.views` lists views only (DataFusion's lists every table).
//! - `date_trunc` takes PostgreSQL's units in any case and plural
//!   (`'Days'`), and `decade`, `century` and `millennium`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, TableFactor,
    Value, ValueWithSpan, VisitMut, VisitorMut,
};

/// Rewrites `statement` (see the module doc).
pub fn rewrite(statement: &mut Statement) {
    let _ = statement.visit(&mut Spelling);
}

struct Spelling;

/// `interval * number` or `number * interval`, as a call of the interval multiplication.
fn interval_product(expr: &Expr) -> Option<Expr> {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Multiply,
        right,
    } = expr
    else {
        return None;
    };
    let (interval, factor) = match (left.as_ref(), right.as_ref()) {
        (i @ Expr::Interval(_), f) | (f, i @ Expr::Interval(_)) => (i, f),
        _ => return None,
    };
    let sql = format!(
        "{}({interval}, {factor})",
        quiver_worker::functions::INTERVAL_MUL
    );
    datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
    )
    .try_with_sql(&sql)
    .ok()?
    .parse_expr()
    .ok()
}

/// A `LIKE` pattern written with another escape character (`'pg!_%' ESCAPE '!'`,
/// as SQLAlchemy writes it) in the backslash escapes DataFusion reads.
fn backslash_escapes(pattern: &str, escape: char) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == escape {
            match chars.next() {
                Some(n @ ('%' | '_')) => {
                    out.push('\\');
                    out.push(n);
                }
                Some('\\') => out.push_str("\\\\"),
                Some(n) => out.push(n),
                None => out.push(c),
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// The optimizer rule that runs [`like_escapes`] last, when bound parameters and
/// constant expressions (`$1::VARCHAR || '%'`) have become literals.
#[derive(Debug)]
pub struct LikeEscapes;

impl datafusion::optimizer::OptimizerRule for LikeEscapes {
    fn name(&self) -> &str {
        "quiver_like_escapes"
    }

    fn rewrite(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _config: &dyn datafusion::optimizer::OptimizerConfig,
    ) -> datafusion::error::Result<
        datafusion::common::tree_node::Transformed<datafusion::logical_expr::LogicalPlan>,
    > {
        // Whole plan at once (no apply order): the rule recurses itself.
        like_escapes(plan).map(datafusion::common::tree_node::Transformed::yes)
    }
}

/// `LIKE`/`ILIKE … ESCAPE 'c'` with a literal pattern and `c` other than backslash.
pub fn like_escapes(
    plan: datafusion::logical_expr::LogicalPlan,
) -> datafusion::error::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::{expr::Like, Expr as L};
    use datafusion::scalar::ScalarValue;
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|e| {
            e.transform(|e| match e {
                L::Like(Like {
                    negated,
                    expr,
                    pattern,
                    escape_char: Some(c),
                    case_insensitive,
                }) if c != '\\' => {
                    // `$1::VARCHAR` bound: a cast of a string literal to a string type.
                    let literal = match pattern.as_ref() {
                        L::Cast(datafusion::logical_expr::Cast { expr: inner, .. })
                            if matches!(inner.as_ref(), L::Literal(..)) =>
                        {
                            inner.as_ref()
                        }
                        other => other,
                    };
                    // Any string literal, rewritten in its own string type.
                    let rewritten = match literal {
                        L::Literal(v, m) => match v.try_as_str() {
                            Some(Some(p)) => Some(L::Literal(
                                ScalarValue::try_from_string(
                                    backslash_escapes(p, c),
                                    &v.data_type(),
                                )?,
                                m.clone(),
                            )),
                            _ => None,
                        },
                        _ => None,
                    };
                    Ok(match rewritten {
                        Some(p) => Transformed::yes(L::Like(Like {
                            negated,
                            expr,
                            pattern: Box::new(p),
                            escape_char: None,
                            case_insensitive,
                        })),
                        None => Transformed::no(L::Like(Like {
                            negated,
                            expr,
                            pattern,
                            escape_char: Some(c),
                            case_insensitive,
                        })),
                    })
                }
                other => Ok(Transformed::no(other)),
            })
        })
    })
    .map(|t| t.data)
}

/// `information_schema.views` as the views among its rows, under the name it was read by.
fn views_only(factor: &TableFactor) -> Option<TableFactor> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return None;
    };
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
        .collect();
    if !matches!(parts.as_slice(), [.., s, t] if s == "information_schema" && t == "views") {
        return None;
    }
    // The rewrite's own read of the table (visited next) stays as it is.
    if alias.as_ref().is_some_and(|a| a.name.value == ALL_VIEWS) {
        return None;
    }
    let sql = format!(
        "SELECT {ALL_VIEWS}.* FROM {name} AS {ALL_VIEWS} JOIN information_schema.tables t \
         ON t.table_catalog = {ALL_VIEWS}.table_catalog AND t.table_schema = {ALL_VIEWS}.table_schema \
         AND t.table_name = {ALL_VIEWS}.table_name WHERE t.table_type = 'VIEW'"
    );
    let query = datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
    )
    .try_with_sql(&sql)
    .ok()?
    .parse_query()
    .ok()?;
    let alias = alias
        .clone()
        .unwrap_or_else(|| datafusion::sql::sqlparser::ast::TableAlias {
            explicit: true,
            name: datafusion::sql::sqlparser::ast::Ident::new("views"),
            columns: vec![],
            at: None,
        });
    Some(TableFactor::Derived {
        lateral: false,
        subquery: query,
        alias: Some(alias),
        sample: None,
    })
}

const ALL_VIEWS: &str = "quiver_all_views";

impl VisitorMut for Spelling {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let Some(derived) = views_only(factor) {
            *factor = derived;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(call) = interval_product(expr) {
            *expr = call;
            return ControlFlow::Continue(());
        }
        if let Some(truncated) = date_trunc_units(expr) {
            *expr = truncated;
            return ControlFlow::Continue(());
        }
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        let name = f.name.to_string().to_ascii_lowercase();
        let name = name.trim_start_matches("pg_catalog.");
        if !matches!(name, "to_date" | "to_timestamp" | "to_char") {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::List(list) = &mut f.args else {
            return ControlFlow::Continue(());
        };
        if list.args.len() != 2 {
            return ControlFlow::Continue(());
        }
        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(format),
            ..
        }))) = &mut list.args[1]
        {
            if !format.contains('%') {
                *format = to_chrono(format);
            }
        }
        ControlFlow::Continue(())
    }
}

/// `date_trunc(unit, x)` with PostgreSQL's units: any case, plurals (`'days'`), and
/// the decade, century and millennium (as PostgreSQL counts them: the 21st century
/// began in 2001), which DataFusion's `date_trunc` does not take.
fn date_trunc_units(expr: &mut Expr) -> Option<Expr> {
    let Expr::Function(f) = expr else {
        return None;
    };
    let name = f.name.to_string().to_ascii_lowercase();
    if name.trim_start_matches("pg_catalog.") != "date_trunc" {
        return None;
    }
    let FunctionArguments::List(list) = &mut f.args else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(ValueWithSpan {
        value: Value::SingleQuotedString(unit),
        ..
    }))), FunctionArg::Unnamed(FunctionArgExpr::Expr(value))] = list.args.as_mut_slice()
    else {
        return None;
    };
    let lower = unit.to_ascii_lowercase();
    let singular = match lower.as_str() {
        "microseconds" | "milliseconds" | "seconds" | "minutes" | "hours" | "days" | "weeks"
        | "months" | "quarters" | "years" | "decades" | "centuries" | "millennia" => {
            match lower.as_str() {
                "centuries" => "century".to_string(),
                "millennia" => "millennium".to_string(),
                other => other.trim_end_matches('s').to_string(),
            }
        }
        "millenniums" => "millennium".to_string(),
        other => other.to_string(),
    };
    // The first year of the period holding year `y`.
    let first_year = match singular.as_str() {
        "decade" => "floor(y / 10) * 10",
        "century" => "floor((y - 1) / 100) * 100 + 1",
        "millennium" => "floor((y - 1) / 1000) * 1000 + 1",
        _ => {
            *unit = singular;
            return None;
        }
    };
    let year = format!("date_part('year', {value})");
    let sql = format!(
        "CAST(make_date(CAST({} AS INT), 1, 1) AS TIMESTAMP)",
        first_year.replace('y', &year)
    );
    datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
    )
    .try_with_sql(&sql)
    .ok()?
    .parse_expr()
    .ok()
}

/// PostgreSQL's template patterns, longest first where one is a prefix of another.
const PATTERNS: &[(&str, &str)] = &[
    ("HH24", "%H"),
    ("HH12", "%I"),
    ("HH", "%I"),
    ("MI", "%M"),
    ("SS", "%S"),
    ("MS", "%3f"),
    ("US", "%6f"),
    ("AM", "%p"),
    ("PM", "%p"),
    ("am", "%P"),
    ("pm", "%P"),
    ("YYYY", "%Y"),
    ("YY", "%y"),
    ("MONTH", "%B"),
    ("Month", "%B"),
    ("month", "%B"),
    ("MON", "%b"),
    ("Mon", "%b"),
    ("mon", "%b"),
    ("MM", "%m"),
    ("DAY", "%A"),
    ("Day", "%A"),
    ("day", "%A"),
    ("DY", "%a"),
    ("Dy", "%a"),
    ("dy", "%a"),
    ("DDD", "%j"),
    ("DD", "%d"),
    ("ID", "%u"),
    ("IW", "%V"),
    ("WW", "%U"),
    ("TZ", "%Z"),
    ("tz", "%Z"),
    ("OF", "%:z"),
];

/// A PostgreSQL format (`YYYY-MM-DD HH24:MI:SS.US`) as chrono's (`%Y-%m-%d %H:%M:%S.%6f`).
/// Double-quoted text is literal; `FM` (fill mode) and `TH` suffixes are dropped.
pub fn to_chrono(format: &str) -> String {
    let mut out = String::with_capacity(format.len() * 2);
    let mut rest = format;
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            out.push_str(&quoted[..end].replace('%', "%%"));
            rest = quoted.get(end + 1..).unwrap_or("");
            continue;
        }
        if let Some(r) = rest.strip_prefix("FM").or_else(|| rest.strip_prefix("fm")) {
            rest = r;
            continue;
        }
        if let Some((pattern, chrono)) = PATTERNS.iter().find(|(p, _)| rest.starts_with(p)) {
            out.push_str(chrono);
            rest = &rest[pattern.len()..];
            // Ordinal suffixes (DDth) have no chrono equivalent.
            rest = rest
                .strip_prefix("TH")
                .or_else(|| rest.strip_prefix("th"))
                .unwrap_or(rest);
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn postgresql_patterns_become_chrono_ones() {
        assert_eq!(to_chrono("YYYY-MM-DD"), "%Y-%m-%d");
        assert_eq!(
            to_chrono("YYYY-MM-DD HH24:MI:SS.US"),
            "%Y-%m-%d %H:%M:%S.%6f"
        );
        assert_eq!(
            to_chrono("YYYY-MM-DD\"T\"HH24:MI:SS.MS"),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
        assert_eq!(
            to_chrono("FMMonth DD, YYYY HH12:MI AM"),
            "%B %d, %Y %I:%M %p"
        );
        assert_eq!(to_chrono("DDD 100%"), "%j 100%%");
    }

    #[test]
    fn like_escapes_become_backslashes() {
        assert_eq!(backslash_escapes("pg!_%", '!'), "pg\\_%");
        assert_eq!(backslash_escapes("a!!b\\c!%", '!'), "a!b\\\\c\\%");
    }

    #[tokio::test]
    async fn a_bound_like_pattern_with_another_escape_runs() -> datafusion::error::Result<()> {
        let ctx = datafusion::prelude::SessionContext::new();
        let plan = ctx.state().create_logical_plan("SELECT n FROM (VALUES ('pg_x'), ('pgax'), ('tpch')) t(n) WHERE n NOT LIKE $1 ESCAPE '!'").await?;
        let plan = plan.with_param_values(vec![datafusion::scalar::ScalarValue::Utf8(Some(
            "pg!_%".into(),
        ))])?;
        let plan = like_escapes(plan)?;
        let batches = datafusion::prelude::DataFrame::new(ctx.state(), plan)
            .collect()
            .await?;
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
        assert!(
            text.contains("pgax") && text.contains("tpch") && !text.contains("pg_x"),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn an_interval_times_a_number_becomes_a_call() {
        let sql = "SELECT DATE_TRUNC('minute', t) + INTERVAL '5 seconds' * FLOOR(EXTRACT(SECOND FROM t) / 5), 2 * INTERVAL '1 day', a * b FROM x";
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0);
        rewrite(&mut s);
        let out = s.to_string();
        assert!(
            out.contains(
                "quiver_interval_mul(INTERVAL '5 seconds', FLOOR(EXTRACT(SECOND FROM t) / 5))"
            ),
            "{out}"
        );
        assert!(
            out.contains("quiver_interval_mul(INTERVAL '1 day', 2)") && out.contains("a * b"),
            "{out}"
        );
    }

    #[test]
    fn only_literal_formats_without_percent_are_rewritten() {
        let sql = "SELECT TO_DATE('1995-01-01', 'YYYY-MM-DD'), to_timestamp(x, '%Y'), to_char(d, f), TO_TIMESTAMP('1', 'YYYY')";
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0);
        rewrite(&mut s);
        let out = s.to_string();
        assert!(out.contains("TO_DATE('1995-01-01', '%Y-%m-%d')"), "{out}");
        assert!(
            out.contains("to_timestamp(x, '%Y')") && out.contains("to_char(d, f)"),
            "{out}"
        );
        assert!(out.contains("TO_TIMESTAMP('1', '%Y')"), "{out}");
    }

    #[tokio::test]
    async fn date_trunc_takes_postgresql_units() -> datafusion::error::Result<()> {
        let ctx = datafusion::prelude::SessionContext::new();
        let cases = [
            (
                "'Days', TIMESTAMP '2001-02-16 20:38:40'",
                "2001-02-16T00:00:00",
            ),
            ("'decade', DATE '1997-05-03'", "1990-01-01T00:00:00"),
            (
                "'century', TIMESTAMP '2000-12-31 20:38:40'",
                "1901-01-01T00:00:00",
            ),
            (
                "'CENTURY', TIMESTAMP '2001-01-01 00:00:01'",
                "2001-01-01T00:00:00",
            ),
            ("'millennium', DATE '2001-02-16'", "2001-01-01T00:00:00"),
        ];
        for (args, want) in cases {
            let sql = format!("SELECT CAST(date_trunc({args}) AS VARCHAR) AS t");
            let mut s = Parser::parse_sql(&PostgreSqlDialect {}, &sql)
                .expect("parses")
                .remove(0);
            rewrite(&mut s);
            let batches = ctx.sql(&s.to_string()).await?.collect().await?;
            let got = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
            assert!(got.contains(want), "date_trunc({args}): {got}");
        }
        Ok(())
    }
}
