//! Repairs to the SQL that DataFusion's unparser writes for pushed-down subplans.
//!
//! String literals: sqlparser prints a literal's `'` doubled *unless* it follows a
//! backslash or another quote, so the value `\' OR 1=1 OR '` would print as
//! `'\' OR 1=1 OR ''` and change the query. Every literal holding a quote or a
//! backslash is rewritten as `CONCAT` of pieces that print unambiguously
//! (PostgreSQL reads `'\'` as one backslash with standard_conforming_strings, the
//! default; MySQL sessions are put in NO_BACKSLASH_ESCAPES mode).
//!
//! `quiver_interval_mul(i, n)` (an interval times a number, see the coordinator's
//! `pg_spelling.rs`) is written back as `(i * n)`, which the database reads.
//!
//! When a filter has been pushed below a table alias, the unparser writes
//! `FROM "s"."t" AS "o" WHERE ("t"."x" > 1)`: the column is qualified with the table's
//! name, which the alias hides, and the database rejects the statement. This pass
//! requalifies such columns with the alias, when that is unambiguous: the table
//! appears in the statement exactly once, under one alias.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{Filter, Join, JoinType, LogicalPlan};

use datafusion::error::Result;
use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, ObjectNamePart, Statement, TableFactor, Value, Visit, VisitMut, Visitor,
    VisitorMut,
};

#[derive(Default)]
struct Tables {
    /// table name -> (aliases it appears under, times it appears without one)
    seen: HashMap<String, (Vec<Ident>, usize)>,
    aliases: Vec<String>,
}

impl Visitor for Tables {
    type Break = ();
    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = factor {
            if let Some(ObjectNamePart::Identifier(table)) = name.0.last() {
                let entry = self.seen.entry(table.value.clone()).or_default();
                match alias {
                    Some(a) => {
                        entry.0.push(a.name.clone());
                        self.aliases.push(a.name.value.clone());
                    }
                    None => entry.1 += 1,
                }
            }
        }
        ControlFlow::Continue(())
    }
}

struct Requalify {
    table_to_alias: HashMap<String, Ident>,
}

impl VisitorMut for Requalify {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::CompoundIdentifier(parts) = expr {
            if parts.len() == 2 {
                if let Some(alias) = self.table_to_alias.get(&parts[0].value) {
                    parts[0] = alias.clone();
                }
            }
        }
        ControlFlow::Continue(())
    }
}

struct SafeLiterals;

impl VisitorMut for SafeLiterals {
    type Break = ();
    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Value(v) = expr {
            if let Value::SingleQuotedString(s) = &v.value {
                if s.contains(['\'', '\\']) {
                    *expr = concat_of_safe_pieces(s);
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// `CONCAT('ab', '''', 'c', '\')` for `ab'c\`: each piece is plain text, one quote,
/// or one backslash, and each prints exactly as it reads.
fn concat_of_safe_pieces(s: &str) -> Expr {
    let mut pieces: Vec<String> = vec![];
    let mut plain = String::new();
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            if !plain.is_empty() {
                pieces.push(std::mem::take(&mut plain));
            }
            pieces.push(c.to_string());
        } else {
            plain.push(c);
        }
    }
    if !plain.is_empty() {
        pieces.push(plain);
    }
    let args = pieces
        .into_iter()
        .map(|p| {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::value(
                Value::SingleQuotedString(p),
            )))
        })
        .collect();
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("CONCAT")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args,
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Every repair of the unparsed statement, for a source executor's AST analyzer.
pub fn repair_statement(statement: Statement) -> Result<Statement> {
    let mut statement = requalify_aliased_columns(statement)?;
    let _ = VisitMut::visit(&mut statement, &mut SafeLiterals);
    let _ = VisitMut::visit(&mut statement, &mut IntervalProducts);
    Ok(statement)
}

/// Quiver's `quiver_interval_mul(i, n)` (the coordinator's spelling of
/// PostgreSQL's `interval * number`, which DataFusion lacks) goes to the
/// database as the product it stands for.
struct IntervalProducts;

impl VisitorMut for IntervalProducts {
    type Break = ();
    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        if !f
            .name
            .to_string()
            .eq_ignore_ascii_case("quiver_interval_mul")
        {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        if let [FunctionArg::Unnamed(FunctionArgExpr::Expr(a)), FunctionArg::Unnamed(FunctionArgExpr::Expr(b))] =
            list.args.as_slice()
        {
            *expr = Expr::Nested(Box::new(Expr::BinaryOp {
                left: Box::new(a.clone()),
                op: datafusion::sql::sqlparser::ast::BinaryOperator::Multiply,
                right: Box::new(b.clone()),
            }));
        }
        ControlFlow::Continue(())
    }
}

/// Requalifies `table.column` as `alias.column` where the table only appears aliased once.
pub fn requalify_aliased_columns(mut statement: Statement) -> Result<Statement> {
    let mut tables = Tables::default();
    let _ = Visit::visit(&statement, &mut tables);
    let table_to_alias: HashMap<String, Ident> = tables
        .seen
        .into_iter()
        .filter(|(name, (aliases, bare))| {
            aliases.len() == 1 && *bare == 0 && !tables.aliases.contains(name)
        })
        .filter_map(|(name, (mut aliases, _))| aliases.pop().map(|a| (name, a)))
        .collect();
    if !table_to_alias.is_empty() {
        let _ = VisitMut::visit(&mut statement, &mut Requalify { table_to_alias });
    }
    Ok(statement)
}

#[cfg(test)]
mod interval_tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn interval_products_reach_the_database_as_products() {
        let s = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT quiver_interval_mul(INTERVAL '5 seconds', floor(x / 5)) FROM t",
        )
        .expect("parses")
        .remove(0);
        let out = repair_statement(s).expect("repaired").to_string();
        assert_eq!(
            out.to_ascii_lowercase(),
            "select (interval '5 seconds' * floor(x / 5)) from t"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn fix(sql: &str) -> String {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parse")
            .remove(0);
        requalify_aliased_columns(statement)
            .expect("fix")
            .to_string()
    }

    #[test]
    fn hidden_table_names_become_the_alias() {
        assert_eq!(
            fix(
                r#"SELECT "c"."name" FROM "s"."cust" AS "c" JOIN "s"."ord" AS "o" ON "c"."id" = "o"."cid" WHERE ("ord"."amount" > 100)"#
            ),
            r#"SELECT "c"."name" FROM "s"."cust" AS "c" JOIN "s"."ord" AS "o" ON "c"."id" = "o"."cid" WHERE ("o"."amount" > 100)"#
        );
    }

    #[test]
    fn literals_with_quotes_and_backslashes_print_as_they_read() {
        let mut statement =
            Parser::parse_sql(&PostgreSqlDialect {}, "SELECT 1 FROM t WHERE a = 'x'")
                .expect("parse")
                .remove(0);
        let _ = VisitMut::visit(&mut statement, &mut SetLiteral(r"\' OR 1=1 OR '".into()));
        let sql = repair_statement(statement).expect("repair").to_string();
        assert_eq!(
            sql,
            r"SELECT 1 FROM t WHERE a = CONCAT('\', '''', ' OR 1=1 OR ', '''')"
        );
        let plain = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT 'plain text'")
            .expect("parse")
            .remove(0);
        assert_eq!(
            repair_statement(plain).expect("repair").to_string(),
            "SELECT 'plain text'"
        );
    }

    /// Puts a raw value into the string literals, as the unparser would hold it.
    struct SetLiteral(String);

    impl VisitorMut for SetLiteral {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = expr {
                if let Value::SingleQuotedString(s) = &mut v.value {
                    *s = self.0.clone();
                }
            }
            ControlFlow::Continue(())
        }
    }

    #[test]
    fn ambiguous_cases_are_left_alone() {
        // Self-join: two aliases for one table.
        let self_join = r#"SELECT "a"."x" FROM "t" AS "a" JOIN "t" AS "b" ON "a"."x" = "b"."y" WHERE "t"."z" = 1"#;
        assert_eq!(fix(self_join), self_join);
        // The table also appears unaliased.
        let mixed = r#"SELECT "t"."x" FROM "t" JOIN "u" AS "t2" ON "t"."x" = "t2"."x" WHERE "u"."y" = 1 AND "t"."x" IN (SELECT "u"."x" FROM "u")"#;
        assert_eq!(fix(mixed), mixed);
    }
}

/// Moves a filter on the left input of a semi or anti join above the join.
///
/// The unparser writes such a join as `WHERE [NOT] EXISTS (...)` and, doing so,
/// replaces the `WHERE` the filter below had produced: the filter would silently
/// vanish from the pushed-down SQL (TPC-H q22 returned every country). A semi/anti
/// join outputs only left rows, so filtering before or after it is the same.
pub fn pull_filters_above_semi_joins(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| {
        let LogicalPlan::Join(join) = &node else {
            return Ok(Transformed::no(node));
        };
        if !matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti) {
            return Ok(Transformed::no(node));
        }
        let LogicalPlan::Filter(filter) = join.left.as_ref() else {
            return Ok(Transformed::no(node));
        };
        let lifted = Join {
            left: Arc::clone(&filter.input),
            ..join.clone()
        };
        let filter = Filter::try_new(
            filter.predicate.clone(),
            Arc::new(LogicalPlan::Join(lifted)),
        )?;
        Ok(Transformed::yes(LogicalPlan::Filter(filter)))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod pull_up_tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::{col, lit, table_scan, LogicalPlanBuilder};
    use datafusion::sql::unparser::dialect::PostgreSqlDialect;
    use datafusion::sql::unparser::Unparser;

    #[test]
    fn filters_under_anti_joins_survive_unparsing() -> Result<()> {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int32, true),
            Field::new("v", DataType::Int32, true),
        ]);
        let left = table_scan(Some("l"), &schema, None)?
            .filter(col("l.v").gt(lit(5)))?
            .build()?;
        let right = table_scan(Some("r"), &schema, None)?.build()?;
        let plan = LogicalPlanBuilder::from(left)
            .join(right, JoinType::LeftAnti, (vec!["l.k"], vec!["r.k"]), None)?
            .build()?;
        let fixed = pull_filters_above_semi_joins(plan)?;
        let sql = Unparser::new(&PostgreSqlDialect {})
            .plan_to_sql(&fixed)?
            .to_string();
        assert!(sql.contains("> 5") && sql.contains("NOT EXISTS"), "{sql}");
        Ok(())
    }
}
