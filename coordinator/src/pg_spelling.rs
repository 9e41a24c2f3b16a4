//! PostgreSQL's spelling of what DataFusion spells otherwise, on every door.
//!
//! - Date and time format patterns in `to_date`, `to_timestamp` and `to_char`:
//!   BI tools write time filters the PostgreSQL way (Superset:
//!   `TO_TIMESTAMP('1995-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')`);
//!   DataFusion's functions of the same names read chrono patterns (`%Y-%m-%d`). A
//!   format given as a string literal without `%` is taken as PostgreSQL's and
//!   translated before planning; a format with `%` is already chrono's and is left
//!   alone, so both spellings work.
//! - An interval literal times a number (`INTERVAL '5 minutes' * FLOOR(…)`, in
//!   Superset's sub-hour time grains) becomes `quiver_interval_mul(…)`
//!   (`quiver_worker::functions`), which DataFusion's `*` does not do.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value, ValueWithSpan, VisitMut,
    VisitorMut,
};

/// Rewrites `statement` (see the module doc).
pub fn rewrite(statement: &mut Statement) {
    let _ = statement.visit(&mut Spelling);
}

struct Spelling;

/// `interval * number` or `number * interval`, as a call of the interval multiplication.
fn interval_product(expr: &Expr) -> Option<Expr> {
    let Expr::BinaryOp { left, op: BinaryOperator::Multiply, right } = expr else { return None };
    let (interval, factor) = match (left.as_ref(), right.as_ref()) {
        (i @ Expr::Interval(_), f) | (f, i @ Expr::Interval(_)) => (i, f),
        _ => return None,
    };
    let sql = format!("{}({interval}, {factor})", quiver_worker::functions::INTERVAL_MUL);
    datafusion::sql::sqlparser::parser::Parser::new(&datafusion::sql::sqlparser::dialect::PostgreSqlDialect {})
        .try_with_sql(&sql)
        .ok()?
        .parse_expr()
        .ok()
}

impl VisitorMut for Spelling {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(call) = interval_product(expr) {
            *expr = call;
            return ControlFlow::Continue(());
        }
        let Expr::Function(f) = expr else { return ControlFlow::Continue(()) };
        let name = f.name.to_string().to_ascii_lowercase();
        let name = name.trim_start_matches("pg_catalog.");
        if !matches!(name, "to_date" | "to_timestamp" | "to_char") {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::List(list) = &mut f.args else { return ControlFlow::Continue(()) };
        if list.args.len() != 2 {
            return ControlFlow::Continue(());
        }
        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(ValueWithSpan { value: Value::SingleQuotedString(format), .. }))) =
            &mut list.args[1]
        {
            if !format.contains('%') {
                *format = to_chrono(format);
            }
        }
        ControlFlow::Continue(())
    }
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
            rest = rest.strip_prefix("TH").or_else(|| rest.strip_prefix("th")).unwrap_or(rest);
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
        assert_eq!(to_chrono("YYYY-MM-DD HH24:MI:SS.US"), "%Y-%m-%d %H:%M:%S.%6f");
        assert_eq!(to_chrono("YYYY-MM-DD\"T\"HH24:MI:SS.MS"), "%Y-%m-%dT%H:%M:%S.%3f");
        assert_eq!(to_chrono("FMMonth DD, YYYY HH12:MI AM"), "%B %d, %Y %I:%M %p");
        assert_eq!(to_chrono("DDD 100%"), "%j 100%%");
    }

    #[test]
    fn an_interval_times_a_number_becomes_a_call() {
        let sql = "SELECT DATE_TRUNC('minute', t) + INTERVAL '5 seconds' * FLOOR(EXTRACT(SECOND FROM t) / 5), 2 * INTERVAL '1 day', a * b FROM x";
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses").remove(0);
        rewrite(&mut s);
        let out = s.to_string();
        assert!(out.contains("quiver_interval_mul(INTERVAL '5 seconds', FLOOR(EXTRACT(SECOND FROM t) / 5))"), "{out}");
        assert!(out.contains("quiver_interval_mul(INTERVAL '1 day', 2)") && out.contains("a * b"), "{out}");
    }

    #[test]
    fn only_literal_formats_without_percent_are_rewritten() {
        let sql = "SELECT TO_DATE('1995-01-01', 'YYYY-MM-DD'), to_timestamp(x, '%Y'), to_char(d, f), TO_TIMESTAMP('1', 'YYYY')";
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses").remove(0);
        rewrite(&mut s);
        let out = s.to_string();
        assert!(out.contains("TO_DATE('1995-01-01', '%Y-%m-%d')"), "{out}");
        assert!(out.contains("to_timestamp(x, '%Y')") && out.contains("to_char(d, f)"), "{out}");
        assert!(out.contains("TO_TIMESTAMP('1', '%Y')"), "{out}");
    }
}
