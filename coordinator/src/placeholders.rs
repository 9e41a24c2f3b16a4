//! Statement parameters as drivers write them. JDBC, ODBC, ADBC and most BI tools
//! write `?`; PostgreSQL and DataFusion write `$1`, `$2`. A statement's `?`s are
//! numbered `$1..$n` in the order they appear, so everything after the parser
//! (type inference, binding, the prepared statement's parameter schema) sees one form.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{Expr, Statement, Value, VisitMut, VisitorMut};

/// Renumbers `?` placeholders as `$1..$n`; a statement that mixes `?` with `$n` is refused.
pub fn number_question_marks(statement: &mut Statement) -> Result<()> {
    let mut numbering = Numbering::default();
    let _ = statement.visit(&mut numbering);
    if numbering.questions > 0 && numbering.dollars > 0 {
        return Err(DataFusionError::Plan(
            "the statement mixes '?' and '$n' parameters; use one form".to_string(),
        ));
    }
    Ok(())
}

/// The type the planner inferred for each of `$1..$n` (None where it could not).
pub fn positional_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let mut positional: Vec<(usize, Option<DataType>)> = plan
        .get_parameter_types()?
        .into_iter()
        .filter_map(|(name, t)| {
            name.strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| (n, t))
        })
        .filter(|(n, _)| *n >= 1)
        .collect();
    // `$1::bigint[]`: a parameter the planner left untyped takes the type it is cast to.
    let casts = cast_types(plan);
    for (n, t) in positional.iter_mut() {
        if t.is_none() {
            *t = casts.get(&format!("${n}")).cloned();
        }
    }
    positional.sort_by_key(|(n, _)| *n);
    let mut out = vec![None; positional.last().map(|(n, _)| *n).unwrap_or(0)];
    for (n, t) in positional {
        out[n - 1] = t;
    }
    Ok(out)
}

/// The types placeholders are cast to (`CAST($1 AS INT)`, `$1::text[]`), by placeholder id.
fn cast_types(plan: &LogicalPlan) -> std::collections::HashMap<String, DataType> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::expr::{Cast, TryCast};
    use datafusion::logical_expr::Expr as LExpr;
    let mut out = std::collections::HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let LExpr::Cast(Cast { expr, field, .. })
                | LExpr::TryCast(TryCast { expr, field, .. }) = e
                {
                    if let LExpr::Placeholder(p) = expr.as_ref() {
                        out.entry(p.id.clone())
                            .or_insert_with(|| field.data_type().clone());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

#[derive(Default)]
struct Numbering {
    questions: usize,
    dollars: usize,
}

impl VisitorMut for Numbering {
    type Break = ();

    // Before the children, so the numbering follows the text left to right.
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Value(v) = expr {
            if let Value::Placeholder(p) = &mut v.value {
                if p == "?" {
                    self.questions += 1;
                    *p = format!("${}", self.questions);
                } else if p.starts_with('$') {
                    self.dollars += 1;
                }
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use proptest::prelude::*;

    fn numbered(sql: &str) -> Result<String> {
        let mut statements = Parser::parse_sql(&GenericDialect {}, sql)
            .map_err(|e| DataFusionError::SQL(Box::new(e), None))?;
        let mut s = statements.remove(0);
        number_question_marks(&mut s)?;
        Ok(s.to_string())
    }

    #[test]
    fn question_marks_are_numbered_in_text_order() {
        assert_eq!(
            numbered("SELECT ? + 1 FROM t WHERE a < ? AND b IN (?, ?) LIMIT ?").expect("numbered"),
            "SELECT $1 + 1 FROM t WHERE a < $2 AND b IN ($3, $4) LIMIT $5"
        );
        assert_eq!(
            numbered("SELECT * FROM t WHERE x = (SELECT max(y) FROM u WHERE z = ?) AND w = ?")
                .expect("n"),
            "SELECT * FROM t WHERE x = (SELECT max(y) FROM u WHERE z = $1) AND w = $2"
        );
    }

    #[test]
    fn strings_and_dollar_forms_are_left_alone() {
        assert_eq!(
            numbered("SELECT '?' FROM t WHERE a = $1").expect("n"),
            "SELECT '?' FROM t WHERE a = $1"
        );
        let err = numbered("SELECT ? , $1").unwrap_err().to_string();
        assert!(err.contains("mixes"), "{err}");
    }

    proptest! {
        /// However many `?` a filter has, they become exactly $1..$n, each once.
        #[test]
        fn every_question_mark_gets_its_number(n in 1usize..40) {
            let terms: Vec<String> = (0..n).map(|i| format!("c{i} = ?")).collect();
            let out = numbered(&format!("SELECT 1 FROM t WHERE {}", terms.join(" OR "))).expect("numbered");
            let found: Vec<usize> = out
                .split('$')
                .skip(1)
                .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().expect("a number"))
                .collect();
            prop_assert_eq!(found, (1..=n).collect::<Vec<_>>());
            prop_assert!(!out.contains('?'));
        }
    }
}
