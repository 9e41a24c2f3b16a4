//! Long flat expressions are ordinary queries: BI tools write `x = 1 OR x = 2 OR …`
//! with thousands of terms, and `a + b + …` over many columns. Parsed, such a chain
//! is a tree as deep as it is long, and every recursive pass over it (cloning,
//! typing, serializing a fragment, evaluating) needs stack in proportion. So chains
//! are rebalanced into trees of logarithmic depth where that cannot change the
//! answer:
//! - in the SQL syntax tree, before planning: `AND`, `OR` and `||`, associative
//!   whatever the types;
//! - in the logical plan, once types are known: `+` and `*` over operands of one
//!   integer type (DataFusion's integer arithmetic wraps, so any grouping gives the
//!   same result). Floating-point chains keep their order (regrouping would change
//!   rounding).
//!
//! What stays deep is bounded: a statement whose expressions nest deeper than
//! [`MAX_DEPTH`] after balancing is refused with an error that says so, and the
//! parser's own limit (`sql_parser.recursion_limit`) bounds parentheses and subqueries.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::plan_err;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::DFSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, Ident, Visit, VisitMut, Visitor, VisitorMut,
};

/// Deepest expression nesting accepted after balancing.
pub const MAX_DEPTH: usize = 10_000;
/// Deepest nesting of subqueries accepted: planning time doubles with each level.
pub const MAX_SUBQUERY_DEPTH: usize = 10;

/// Deepest nesting of parentheses and brackets accepted, checked on the tokens before parsing.
pub const MAX_PARENS: usize = 64;
/// Deepest nesting of `NOT (`: on a syntax error inside, the parser backtracks at
/// every level, so its time doubles with each one.
pub const MAX_NOT_PARENS: usize = 12;

/// Refuses, before the (recursive, backtracking) parser sees it, a statement nested
/// deeper than [`MAX_PARENS`] or [`MAX_NOT_PARENS`]. Tokenizing is linear; a
/// statement that does not tokenize is left to the parser to report.
pub fn check_nesting(sql: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let mut open: Vec<bool> = vec![];
    let (mut nots, mut previous_not) = (0usize, false);
    for token in tokens {
        match token {
            Token::Whitespace(_) => continue,
            Token::LParen | Token::LBracket => {
                open.push(previous_not);
                nots += usize::from(previous_not);
                if open.len() > MAX_PARENS {
                    return plan_err!(
                        "the statement is nested too deeply: more than {MAX_PARENS} levels of parentheses"
                    );
                }
                if nots > MAX_NOT_PARENS {
                    return plan_err!(
                        "the statement is nested too deeply: more than {MAX_NOT_PARENS} levels of NOT (...)"
                    );
                }
            }
            // The pop happens whether or not the guard holds.
            Token::RParen | Token::RBracket if open.pop() == Some(true) => nots -= 1,
            _ => {}
        }
        previous_not = matches!(&token, Token::Word(w) if w.keyword == Keyword::NOT);
    }
    Ok(())
}

/// Balances `AND`/`OR`/`||` chains of a parsed statement and refuses one that stays
/// nested deeper than [`MAX_DEPTH`].
pub fn balance_statement(statement: &mut DfStatement) -> Result<()> {
    match statement {
        DfStatement::Statement(s) => {
            let _ = VisitMut::visit(s.as_mut(), &mut SyntaxBalancer);
            let mut depth = DepthCheck {
                depth: 0,
                queries: 0,
            };
            match Visit::visit(s.as_ref(), &mut depth) {
                ControlFlow::Break(TooDeep::Expressions) => plan_err!(
                    "the statement nests expressions more than {MAX_DEPTH} levels deep; \
                     long AND/OR/|| chains and integer sums are fine (they are rebalanced), deep nesting is not"
                ),
                ControlFlow::Break(TooDeep::Subqueries) => plan_err!(
                    "the statement is nested too deeply: more than {MAX_SUBQUERY_DEPTH} levels of subqueries"
                ),
                ControlFlow::Continue(()) => Ok(()),
            }
        }
        DfStatement::Explain(e) => balance_statement(&mut e.statement),
        _ => Ok(()),
    }
}

struct SyntaxBalancer;

impl VisitorMut for SyntaxBalancer {
    type Break = ();

    // Before the children: the visitor then descends into an already balanced tree.
    fn pre_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        if let SqlExpr::BinaryOp {
            op: op @ (BinaryOperator::And | BinaryOperator::Or | BinaryOperator::StringConcat),
            ..
        } = expr
        {
            let op = op.clone();
            let chain = std::mem::replace(expr, SqlExpr::Identifier(Ident::new("")));
            let mut leaves = vec![];
            let mut stack = vec![chain];
            while let Some(e) = stack.pop() {
                match e {
                    SqlExpr::BinaryOp { left, op: o, right } if o == op => {
                        stack.push(*right);
                        stack.push(*left);
                    }
                    leaf => leaves.push(leaf),
                }
            }
            let join = |left, right| SqlExpr::BinaryOp {
                left: Box::new(left),
                op: op.clone(),
                right: Box::new(right),
            };
            if let Some(balanced) = pairwise(leaves, join) {
                *expr = balanced;
            }
        }
        ControlFlow::Continue(())
    }
}

/// Stops at the first expression nested deeper than [`MAX_DEPTH`], or query deeper
/// than [`MAX_SUBQUERY_DEPTH`].
struct DepthCheck {
    depth: usize,
    queries: usize,
}

enum TooDeep {
    Expressions,
    Subqueries,
}

impl Visitor for DepthCheck {
    type Break = TooDeep;

    fn pre_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<TooDeep> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return ControlFlow::Break(TooDeep::Expressions);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<TooDeep> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Query,
    ) -> ControlFlow<TooDeep> {
        self.queries += 1;
        // The statement itself is the first query.
        if self.queries > MAX_SUBQUERY_DEPTH + 1 {
            return ControlFlow::Break(TooDeep::Subqueries);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Query,
    ) -> ControlFlow<TooDeep> {
        self.queries -= 1;
        ControlFlow::Continue(())
    }
}

/// Combines `items` (in order) pairwise, level by level: a tree of depth log2(n)
/// whose in-order leaves are `items`; None for no items.
fn pairwise<T>(mut items: Vec<T>, join: impl Fn(T, T) -> T) -> Option<T> {
    while items.len() > 1 {
        let mut next = Vec::with_capacity(items.len().div_ceil(2));
        let mut it = items.into_iter();
        while let Some(a) = it.next() {
            match it.next() {
                Some(b) => next.push(join(a, b)),
                None => next.push(a),
            }
        }
        items = next;
    }
    items.pop()
}

/// Balances `AND`, `OR`, `||` and integer `+`, `*` chains in every expression of `plan`.
pub fn balance_plan(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    plan.transform_up_with_subqueries(|node| {
        let mut schema = DFSchema::empty();
        for input in node.inputs() {
            schema.merge(input.schema());
        }
        node.map_expressions(|e| balance_expr(e, &schema))
    })
}

fn balance_expr(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    expr.transform_down(|e| {
        let op = match &e {
            Expr::BinaryExpr(BinaryExpr {
                op:
                    op @ (Operator::Plus
                    | Operator::Multiply
                    | Operator::And
                    | Operator::Or
                    | Operator::StringConcat),
                ..
            }) => *op,
            _ => return Ok(Transformed::no(e)),
        };
        let mut leaves = vec![];
        let mut stack = vec![e];
        while let Some(x) = stack.pop() {
            match x {
                Expr::BinaryExpr(BinaryExpr { left, op: o, right }) if o == op => {
                    stack.push(*right);
                    stack.push(*left);
                }
                leaf => leaves.push(leaf),
            }
        }
        // The leaves hold chains of their own; the children of what is built here are skipped.
        let leaves = leaves
            .into_iter()
            .map(|l| balance_expr(l, schema).map(|t| t.data))
            .collect::<Result<Vec<_>>>()?;
        let join =
            |l: Expr, r: Expr| Expr::BinaryExpr(BinaryExpr::new(Box::new(l), op, Box::new(r)));
        let always = matches!(op, Operator::And | Operator::Or | Operator::StringConcat);
        // Short chains are left as they are: nothing to gain, and plans stay as written.
        let balance = leaves.len() > 8 && (always || one_integer_type(&leaves, schema));
        let rebuilt = if balance {
            pairwise(leaves, join)
        } else {
            let mut it = leaves.into_iter();
            it.next().map(|first| it.fold(first, join))
        };
        let rebuilt =
            rebuilt.ok_or_else(|| DataFusionError::Internal("an empty operator chain".into()))?;
        Ok(Transformed::new(rebuilt, balance, TreeNodeRecursion::Jump))
    })
}

fn one_integer_type(leaves: &[Expr], schema: &DFSchema) -> bool {
    let mut types = leaves.iter().map(|l| l.get_type(schema).ok());
    let Some(Some(first)) = types.next() else {
        return false;
    };
    first.is_integer()
        && !matches!(first, DataType::Null)
        && types.all(|t| t.as_ref() == Some(&first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn depth(e: &SqlExpr) -> usize {
        match e {
            SqlExpr::BinaryOp { left, right, .. } => 1 + depth(left).max(depth(right)),
            _ => 1,
        }
    }

    fn selection(statement: &DfStatement) -> SqlExpr {
        let DfStatement::Statement(s) = statement else {
            panic!("a statement")
        };
        let datafusion::sql::sqlparser::ast::Statement::Query(q) = s.as_ref() else {
            panic!("a query")
        };
        let datafusion::sql::sqlparser::ast::SetExpr::Select(select) = q.body.as_ref() else {
            panic!("a select")
        };
        select.selection.clone().expect("a WHERE clause")
    }

    #[test]
    fn or_chains_become_shallow_and_keep_their_order() {
        let terms: Vec<String> = (0..1000).map(|i| format!("x = {i}")).collect();
        let sql = format!("SELECT 1 FROM t WHERE {}", terms.join(" OR "));
        let mut statement = DFParser::parse_sql(&sql)
            .expect("parses")
            .pop_front()
            .expect("one");
        balance_statement(&mut statement).expect("balanced");
        let selection = selection(&statement);
        assert!(depth(&selection) <= 12, "depth {}", depth(&selection));
        // Same terms, same order.
        assert_eq!(
            selection.to_string().replace(['(', ')'], ""),
            terms.join(" OR ")
        );
    }

    #[test]
    fn nesting_is_checked_on_tokens() {
        assert!(check_nesting(&format!("SELECT {}1{}", "(".repeat(64), ")".repeat(64))).is_ok());
        let err =
            check_nesting(&format!("SELECT {}1{}", "(".repeat(65), ")".repeat(65))).unwrap_err();
        assert!(
            err.to_string()
                .contains("more than 64 levels of parentheses"),
            "{err}"
        );
        assert!(
            check_nesting(&format!("SELECT {}1{}", "NOT (".repeat(12), ")".repeat(12))).is_ok()
        );
        let err = check_nesting(&format!("SELECT {}1{}", "NOT (".repeat(13), ")".repeat(13)))
            .unwrap_err();
        assert!(err.to_string().contains("NOT (...)"), "{err}");
        // Parentheses inside strings and comments do not count; NOTs side by side do not add up.
        assert!(check_nesting(&format!(
            "SELECT '{}' -- {}",
            "(".repeat(100),
            "(".repeat(100)
        ))
        .is_ok());
        assert!(check_nesting(&"NOT (a) AND ".repeat(100)).is_ok());
    }

    #[test]
    fn pairwise_is_balanced_and_ordered() {
        let joined = pairwise((1..=5).map(|i| i.to_string()).collect(), |a, b| {
            format!("({a}{b})")
        });
        assert_eq!(joined.as_deref(), Some("(((12)(34))5)"));
        assert_eq!(
            pairwise(vec!["x".to_string()], |a, b| a + &b).as_deref(),
            Some("x")
        );
        assert_eq!(pairwise(Vec::<String>::new(), |a, b| a + &b), None);
    }
}
