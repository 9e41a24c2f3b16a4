//! A join's dynamic filter as SQL: the part of it a database can run, in that
//! database's dialect (`key IN (…)`, or the keys' bounds).

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, Column, DynamicFilterPhysicalExpr, InListExpr, IsNullExpr, Literal,
};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::sql::unparser::dialect::Dialect;

/// Longest `IN` list sent; DataFusion builds lists of at most `join_keys_max`
/// keys, this only guards against a configuration beyond any statement size.
const MAX_IN_LIST: usize = 1_000_000;

/// A join's dynamic filter as one database scan sees it.
#[derive(Debug, Clone)]
pub struct JoinFilter {
    pub(crate) filter: Arc<DynamicFilterPhysicalExpr>,
    /// For each column of the join's probe-side schema (which the filter reads),
    /// the scan's column it comes from, if any.
    pub(crate) columns: Vec<Option<usize>>,
    /// The build side's distinct keys and the probe-side column they match, for
    /// a join on one key (see `build_keys.rs`).
    pub(crate) keys: Option<(Arc<super::build_keys::BuildKeys>, usize)>,
}

/// The SQL condition for the filter's current expression, over the scan's columns;
/// `None` when no part of it translates.
pub(crate) fn condition(
    filter: &JoinFilter,
    schema: &Schema,
    dialect: &dyn Dialect,
) -> Result<Option<String>> {
    let current = filter.filter.current()?;
    let sql = Sql {
        filter,
        schema,
        dialect,
    };
    Ok(sql.weaker(&current))
}

/// The whole key set of the join's build side as a condition on the scan's
/// column, when the dynamic filter could not list it (more than `listed_max`
/// keys): one array for integer keys in PostgreSQL (the dialect that writes
/// `ARRAY[…]`), `key IN (…)` elsewhere. `None` before the set is known, or when
/// a key has no literal every database reads alike.
pub(crate) fn key_set(
    filter: &JoinFilter,
    schema: &Schema,
    dialect: &dyn Dialect,
    listed_max: usize,
) -> Option<String> {
    let (keys, probe_column) = filter.keys.as_ref()?;
    let keys = keys.keys()?;
    if keys.len() <= listed_max {
        return None;
    }
    let sql = Sql {
        filter,
        schema,
        dialect,
    };
    let column =
        sql.column(&(Arc::new(Column::new("key", *probe_column)) as Arc<dyn PhysicalExpr>))?;
    if dialect.use_array_keyword_for_array_literals() {
        if let Some(integers) = keys.iter().map(integer).collect::<Option<Vec<i64>>>() {
            let values: Vec<String> = integers.iter().map(i64::to_string).collect();
            return Some(format!(
                "{column} = ANY('{{{}}}'::int8[])",
                values.join(",")
            ));
        }
    }
    let values = keys
        .iter()
        .map(|k| sql.literal(&(Arc::new(Literal::new(k.clone())) as Arc<dyn PhysicalExpr>)))
        .collect::<Option<Vec<String>>>()?;
    Some(format!("{column} IN ({})", values.join(", ")))
}

fn integer(value: &ScalarValue) -> Option<i64> {
    Some(match value {
        ScalarValue::Int8(Some(v)) => i64::from(*v),
        ScalarValue::Int16(Some(v)) => i64::from(*v),
        ScalarValue::Int32(Some(v)) => i64::from(*v),
        ScalarValue::Int64(Some(v)) => *v,
        ScalarValue::UInt8(Some(v)) => i64::from(*v),
        ScalarValue::UInt16(Some(v)) => i64::from(*v),
        ScalarValue::UInt32(Some(v)) => i64::from(*v),
        ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok()?,
        _ => return None,
    })
}

struct Sql<'a> {
    filter: &'a JoinFilter,
    schema: &'a Schema,
    dialect: &'a dyn Dialect,
}

impl Sql<'_> {
    /// A condition implied by `expr` (dropping the parts of a conjunction that do
    /// not translate keeps every row `expr` keeps).
    fn weaker(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<String> {
        if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
            if *b.op() == Operator::And {
                return match (self.weaker(b.left()), self.weaker(b.right())) {
                    (Some(l), Some(r)) => Some(format!("({l} AND {r})")),
                    (one, None) | (None, one) => one,
                };
            }
        }
        if let Some(case) = expr.downcast_ref::<CaseExpr>() {
            // Partitioned joins: one branch per partition; any row passes one of them.
            if case.else_expr().is_some_and(|e| !is_false(e)) {
                return None;
            }
            let branches: Option<Vec<String>> = case
                .when_then_expr()
                .iter()
                .map(|(_, then)| self.weaker(then))
                .collect();
            return branches
                .filter(|b| !b.is_empty())
                .map(|b| format!("({})", b.join(" OR ")));
        }
        self.exact(expr)
    }

    /// A condition equivalent to `expr`, or `None`.
    fn exact(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<String> {
        if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
            let op = match b.op() {
                Operator::And => "AND",
                Operator::Or => "OR",
                Operator::Eq => "=",
                Operator::NotEq => "<>",
                Operator::Lt => "<",
                Operator::LtEq => "<=",
                Operator::Gt => ">",
                Operator::GtEq => ">=",
                _ => return None,
            };
            if matches!(op, "AND" | "OR") {
                return Some(format!(
                    "({} {op} {})",
                    self.exact(b.left())?,
                    self.exact(b.right())?
                ));
            }
            return Some(format!(
                "{} {op} {}",
                self.operand(b.left())?,
                self.operand(b.right())?
            ));
        }
        if let Some(list) = expr.downcast_ref::<InListExpr>() {
            let column = self.column(list.expr())?;
            // The build side's keys, as collected: with repeats.
            let mut seen = std::collections::HashSet::new();
            let mut values = vec![];
            for v in list.list() {
                let v = self.literal(v)?;
                if seen.insert(v.clone()) {
                    values.push(v);
                }
            }
            if values.is_empty() || values.len() > MAX_IN_LIST {
                return None;
            }
            let not = if list.negated() { "NOT " } else { "" };
            return Some(format!("{column} {not}IN ({})", values.join(", ")));
        }
        if let Some(is_null) = expr.downcast_ref::<IsNullExpr>() {
            return Some(format!("{} IS NULL", self.column(is_null.arg())?));
        }
        None
    }

    fn operand(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<String> {
        self.column(expr).or_else(|| self.literal(expr))
    }

    fn column(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<String> {
        let column = expr.downcast_ref::<Column>()?;
        let index = (*self.filter.columns.get(column.index())?)?;
        let name = self.schema.fields().get(index)?.name();
        Some(match self.dialect.identifier_quote_style(name) {
            Some(q) => format!("{q}{}{q}", name.replace(q, &format!("{q}{q}"))),
            None => name.to_string(),
        })
    }

    fn literal(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<String> {
        let value = expr.downcast_ref::<Literal>()?.value();
        match value {
            // SQLite has no DATE literal; its dates are ISO text (the dialect casts dates to TEXT).
            ScalarValue::Date32(Some(_))
                if matches!(
                    self.dialect.date32_cast_dtype(),
                    datafusion::sql::sqlparser::ast::DataType::Text
                ) =>
            {
                Some(format!("'{value}'"))
            }
            _ => literal_sql(value),
        }
    }
}

fn is_false(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.downcast_ref::<Literal>()
        .is_some_and(|l| matches!(l.value(), ScalarValue::Boolean(Some(false))))
}

/// A value as a SQL literal both PostgreSQL and MySQL read the same way; `None`
/// for types whose text could be read differently (timestamps and time zones,
/// backslashes that MySQL treats as escapes).
fn literal_sql(value: &ScalarValue) -> Option<String> {
    if value.is_null() {
        return None;
    }
    match value {
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Decimal128(..) => Some(value.to_string()),
        ScalarValue::Float32(Some(f)) if f.is_finite() => Some(value.to_string()),
        ScalarValue::Float64(Some(f)) if f.is_finite() => Some(value.to_string()),
        ScalarValue::Boolean(Some(b)) => Some(if *b { "TRUE" } else { "FALSE" }.to_string()),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => {
            (!s.contains('\\') && !s.contains('\0')).then(|| format!("'{}'", s.replace('\'', "''")))
        }
        ScalarValue::Date32(Some(_)) => Some(format!("DATE '{value}'")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::physical_expr::expressions::{lit, InListExpr};
    use datafusion::sql::unparser::dialect::{MySqlDialect, PostgreSqlDialect};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("o_orderkey", DataType::Int64, false),
            Field::new("o_comment", DataType::Utf8, true),
        ])
    }

    fn filter_of(expr: Arc<dyn PhysicalExpr>) -> JoinFilter {
        let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("o_orderkey", 0));
        let filter = Arc::new(DynamicFilterPhysicalExpr::new(vec![key], lit(true)));
        filter.update(expr).expect("update");
        JoinFilter {
            filter,
            columns: vec![Some(0), Some(1)],
            keys: None,
        }
    }

    fn key() -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new("o_orderkey", 0))
    }

    fn bounds(lo: i64, hi: i64) -> Arc<dyn PhysicalExpr> {
        let ge = Arc::new(BinaryExpr::new(key(), Operator::GtEq, lit(lo)));
        let le = Arc::new(BinaryExpr::new(key(), Operator::LtEq, lit(hi)));
        Arc::new(BinaryExpr::new(ge, Operator::And, le))
    }

    #[test]
    fn keys_and_bounds_become_sql() {
        let list = InListExpr::try_new(
            key(),
            vec![lit(3i64), lit(7i64), lit(3i64)],
            false,
            &schema(),
        )
        .expect("in list");
        let both: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(bounds(3, 7), Operator::And, Arc::new(list)));
        let sql = condition(&filter_of(both), &schema(), &PostgreSqlDialect {}).expect("translate");
        assert_eq!(
            sql.as_deref(),
            Some(r#"(("o_orderkey" >= 3 AND "o_orderkey" <= 7) AND "o_orderkey" IN (3, 7))"#)
        );
        let sql =
            condition(&filter_of(bounds(1, 9)), &schema(), &MySqlDialect {}).expect("translate");
        assert_eq!(
            sql.as_deref(),
            Some("(`o_orderkey` >= 1 AND `o_orderkey` <= 9)")
        );
    }

    #[test]
    fn untranslatable_parts_of_a_conjunction_are_dropped_and_nothing_else() {
        // A hash lookup stands in for a part with no SQL form: a column compared to a column.
        let odd: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(key(), Operator::Modulo, lit(2i64)));
        let and: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(bounds(1, 2), Operator::And, odd.clone()));
        let sql = condition(&filter_of(and), &schema(), &PostgreSqlDialect {}).expect("translate");
        assert_eq!(
            sql.as_deref(),
            Some(r#"("o_orderkey" >= 1 AND "o_orderkey" <= 2)"#)
        );
        // Under OR nothing may be dropped.
        let or: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(bounds(1, 2), Operator::Or, odd));
        assert_eq!(
            condition(&filter_of(or), &schema(), &PostgreSqlDialect {}).expect("translate"),
            None
        );
        // The empty filter (build side not collected) says nothing.
        let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("o_orderkey", 0));
        let empty = JoinFilter {
            filter: Arc::new(DynamicFilterPhysicalExpr::new(vec![key], lit(true))),
            columns: vec![Some(0)],
            keys: None,
        };
        assert_eq!(
            condition(&empty, &schema(), &PostgreSqlDialect {}).expect("translate"),
            None
        );
    }

    #[test]
    fn strings_are_quoted_and_risky_values_are_left_out() {
        assert_eq!(
            literal_sql(&ScalarValue::Utf8(Some("it's".into()))).as_deref(),
            Some("'it''s'")
        );
        assert_eq!(literal_sql(&ScalarValue::Utf8(Some("a\\'b".into()))), None);
        assert_eq!(literal_sql(&ScalarValue::Float64(Some(f64::NAN))), None);
        assert_eq!(literal_sql(&ScalarValue::Int64(None)), None);
        assert_eq!(
            literal_sql(&ScalarValue::Date32(Some(0))).as_deref(),
            Some("DATE '1970-01-01'")
        );
    }

    proptest::proptest! {
        /// Any string becomes either nothing or a literal that reads back as itself.
        #[test]
        fn string_literals_round_trip(s in ".*") {
            if let Some(sql) = literal_sql(&ScalarValue::Utf8(Some(s.clone()))) {
                let inner = &sql[1..sql.len() - 1];
                proptest::prop_assert_eq!(inner.replace("''", "'"), s);
                proptest::prop_assert!(!inner.replace("''", "").contains('\''));
            }
        }
    }
}
