//! PostgreSQL's boolean text literals: `indisprimary = 'f'` compares a boolean
//! with the literal `'f'`, which PostgreSQL reads as `false` (SQLAlchemy 1.4's
//! index reflection, so Superset's dataset editor, sends it). DataFusion cannot
//! compare a boolean with text, so this analyzer rule, run before type
//! coercion, turns a string literal compared with a boolean expression into the
//! boolean it spells (`t`, `true`, `yes`, `on`, `1` and their opposites, in any
//! case); other literals are left for the usual error.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::DFSchema;
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;

#[derive(Debug)]
pub struct BooleanLiterals;

/// The boolean `text` spells, as PostgreSQL reads it.
fn spelled(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "yes" | "y" | "on" | "1" => Some(true),
        "f" | "false" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn text_literal(e: &Expr) -> Option<bool> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => spelled(s),
        _ => None,
    }
}

fn rewrite(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    e.transform(|e| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
            return Ok(Transformed::no(e));
        };
        if !matches!(
            op,
            Operator::Eq | Operator::NotEq | Operator::IsDistinctFrom | Operator::IsNotDistinctFrom
        ) {
            return Ok(Transformed::no(e));
        }
        let is_bool = |x: &Expr| {
            x.get_type(schema)
                .is_ok_and(|t| t == datafusion::arrow::datatypes::DataType::Boolean)
        };
        let lit = |b: bool| Box::new(Expr::Literal(ScalarValue::Boolean(Some(b)), None));
        let replaced = match (text_literal(left), text_literal(right)) {
            (None, Some(b)) if is_bool(left) => Some(BinaryExpr::new(left.clone(), *op, lit(b))),
            (Some(b), None) if is_bool(right) => Some(BinaryExpr::new(lit(b), *op, right.clone())),
            _ => None,
        };
        Ok(match replaced {
            Some(b) => Transformed::yes(Expr::BinaryExpr(b)),
            None => Transformed::no(e),
        })
    })
}

impl AnalyzerRule for BooleanLiterals {
    fn name(&self) -> &str {
        "quiver_boolean_literals"
    }

    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            // Expressions are typed over the node's inputs (all of a join's sides).
            let mut schema = DFSchema::empty();
            for input in node.inputs() {
                schema.merge(input.schema());
            }
            let schema = Arc::new(schema);
            node.map_expressions(|e| rewrite(e, &schema))
        })
        .map(|t| t.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn text_compared_with_a_boolean_is_the_boolean_it_spells() -> Result<()> {
        let mut rules: Vec<Arc<dyn AnalyzerRule + Send + Sync>> = vec![Arc::new(BooleanLiterals)];
        rules.extend(datafusion::optimizer::Analyzer::new().rules);
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_default_features()
            .with_analyzer_rules(rules)
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.sql("CREATE TABLE t (b BOOLEAN, s VARCHAR) AS VALUES (true, 'f'), (false, 'x')")
            .await?
            .collect()
            .await?;
        let count = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await?.collect().await?;
                Ok::<usize, datafusion::error::DataFusionError>(
                    batches.iter().map(|b| b.num_rows()).sum(),
                )
            }
        };
        assert_eq!(count("SELECT * FROM t WHERE b = 'f'").await?, 1);
        assert_eq!(count("SELECT * FROM t WHERE 'TRUE' = b").await?, 1);
        assert_eq!(count("SELECT * FROM t WHERE b <> 'no'").await?, 1);
        // Text compared with text stays text.
        assert_eq!(count("SELECT * FROM t WHERE s = 'f'").await?, 1);
        let maybe = match ctx.sql("SELECT * FROM t WHERE b = 'maybe'").await {
            Ok(df) => df.collect().await.is_err(),
            Err(_) => true,
        };
        assert!(maybe, "'maybe' is no boolean");
        Ok(())
    }
}
