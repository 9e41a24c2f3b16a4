//! Whether a query's filters imply the predicate an accelerated subset was copied
//! under, so that the copy holds every row the query can return.
//!
//! The reasoning is deliberately small and sound: from the query's conjuncts it
//! takes, per column, the bounds (`<`, `<=`, `>`, `>=`, `=`, `BETWEEN`) and value
//! sets (`IN`, `=`) it can read, and then proves each conjunct of the copy's
//! predicate from them (an `OR` from either side), or finds it among the query's
//! own conjuncts. Whatever it cannot prove counts as not implied: the query then
//! reads the source, which is always right.

use std::cmp::Ordering;
use std::collections::HashMap;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

/// Ok when `query` (the conjuncts a scan is filtered by) implies `covers`; Err
/// names the part of `covers` the query does not imply.
pub fn implies(query: &[Expr], covers: &Expr) -> Result<(), String> {
    let facts = Facts::of(query);
    for part in split_conjunction(covers) {
        let part = unqualified(part);
        if !facts.prove(&part) {
            return Err(shown(&part));
        }
    }
    Ok(())
}

/// An expression as SQL, for messages.
pub fn shown(e: &Expr) -> String {
    datafusion::sql::unparser::expr_to_sql(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| e.to_string())
}

/// What the query's conjuncts say about each column.
#[derive(Default)]
struct Facts {
    columns: HashMap<String, Range>,
    /// The conjuncts themselves, for a part of the predicate the query repeats.
    conjuncts: Vec<Expr>,
}

/// A column's values as far as the query bounds them: between `lower` and
/// `upper` (value, inclusive), and one of `set` when there is one. Any bound
/// also excludes NULL.
#[derive(Default)]
struct Range {
    lower: Option<(ScalarValue, bool)>,
    upper: Option<(ScalarValue, bool)>,
    set: Option<Vec<ScalarValue>>,
    not_null: bool,
}

impl Facts {
    fn of(query: &[Expr]) -> Self {
        let mut facts = Facts::default();
        for e in query.iter().flat_map(|e| split_conjunction(e)) {
            let e = unqualified(e);
            facts.learn(&e);
            facts.conjuncts.push(e);
        }
        facts
    }

    fn learn(&mut self, e: &Expr) {
        // `a = 1 OR a = 2` (how small `IN` lists are simplified): a set of values.
        if let Some((column, values)) = value_set(e) {
            let range = self.columns.entry(column).or_default();
            range.not_null = true;
            range.restrict_to(values);
            return;
        }
        match e {
            Expr::BinaryExpr(b) => {
                if let Some((column, op, value)) = comparison(b) {
                    let range = self.columns.entry(column).or_default();
                    range.not_null = true;
                    match op {
                        Operator::Eq => range.restrict_to(vec![value]),
                        Operator::Gt => range.floor_at((value, false)),
                        Operator::GtEq => range.floor_at((value, true)),
                        Operator::Lt => range.cap_at((value, false)),
                        Operator::LtEq => range.cap_at((value, true)),
                        _ => {}
                    }
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                if let (Expr::Column(c), Some(low), Some(high)) =
                    (expr.as_ref(), literal(low), literal(high))
                {
                    let range = self.columns.entry(c.name.clone()).or_default();
                    range.not_null = true;
                    range.floor_at((low, true));
                    range.cap_at((high, true));
                }
            }
            Expr::InList(list) if !list.negated => {
                let values: Option<Vec<ScalarValue>> = list.list.iter().map(literal).collect();
                if let (Expr::Column(c), Some(values)) = (list.expr.as_ref(), values) {
                    let range = self.columns.entry(c.name.clone()).or_default();
                    range.not_null = true;
                    range.restrict_to(values);
                }
            }
            Expr::IsNotNull(inner) => {
                if let Expr::Column(c) = inner.as_ref() {
                    self.columns.entry(c.name.clone()).or_default().not_null = true;
                }
            }
            _ => {}
        }
    }

    /// Whether the query implies `part` (one conjunct of the copy's predicate).
    fn prove(&self, part: &Expr) -> bool {
        if self.conjuncts.contains(part) {
            return true;
        }
        // A set of values (`IN`, or `=`s joined by `OR`): the query's values all in it.
        if let Some((column, allowed)) = value_set(part) {
            let within = self
                .columns
                .get(&column)
                .and_then(Range::values)
                .is_some_and(|mine| {
                    mine.iter().all(|m| {
                        allowed
                            .iter()
                            .any(|v| compare(m, v) == Some(Ordering::Equal))
                    })
                });
            if within {
                return true;
            }
        }
        match part {
            Expr::BinaryExpr(b) if b.op == Operator::And => {
                self.prove(&unqualified(&b.left)) && self.prove(&unqualified(&b.right))
            }
            Expr::BinaryExpr(b) if b.op == Operator::Or => {
                self.prove(&b.left) || self.prove(&b.right)
            }
            Expr::BinaryExpr(b) => match comparison(b) {
                Some((column, op, value)) => self
                    .columns
                    .get(&column)
                    .is_some_and(|r| r.within(op, &value)),
                None => false,
            },
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => match (expr.as_ref(), literal(low), literal(high)) {
                (Expr::Column(c), Some(low), Some(high)) => {
                    self.columns.get(&c.name).is_some_and(|r| {
                        r.within(Operator::GtEq, &low) && r.within(Operator::LtEq, &high)
                    })
                }
                _ => false,
            },
            Expr::IsNotNull(inner) => match inner.as_ref() {
                Expr::Column(c) => self.columns.get(&c.name).is_some_and(|r| r.not_null),
                _ => false,
            },
            _ => false,
        }
    }
}

impl Range {
    /// A lower bound, kept if tighter than the one known.
    fn floor_at(&mut self, bound: (ScalarValue, bool)) {
        self.lower = tighter(self.lower.take(), bound, Ordering::Greater);
    }

    fn cap_at(&mut self, bound: (ScalarValue, bool)) {
        self.upper = tighter(self.upper.take(), bound, Ordering::Less);
    }

    /// Only these values: a second set keeps the first (a superset of the truth is still sound).
    fn restrict_to(&mut self, values: Vec<ScalarValue>) {
        if self.set.is_none() {
            self.set = Some(values);
        }
    }

    /// The values the column can take, when finitely many are known.
    fn values(&self) -> Option<Vec<ScalarValue>> {
        if let Some(set) = &self.set {
            return Some(set.clone());
        }
        match (&self.lower, &self.upper) {
            (Some((l, true)), Some((u, true))) if compare(l, u) == Some(Ordering::Equal) => {
                Some(vec![l.clone()])
            }
            _ => None,
        }
    }

    /// Whether every value the query allows satisfies `column <op> value`.
    fn within(&self, op: Operator, value: &ScalarValue) -> bool {
        // Strings are ordered by the source's collation when the copy is taken, and
        // by bytes here: only equality means the same in both.
        if is_text(value) && !matches!(op, Operator::Eq | Operator::NotEq) {
            return false;
        }
        if let Some(set) = self.values() {
            return set.iter().all(|m| {
                compare(m, value).is_some_and(|o| match op {
                    Operator::Eq => o == Ordering::Equal,
                    Operator::NotEq => o != Ordering::Equal,
                    Operator::Gt => o == Ordering::Greater,
                    Operator::GtEq => o != Ordering::Less,
                    Operator::Lt => o == Ordering::Less,
                    Operator::LtEq => o != Ordering::Greater,
                    _ => false,
                })
            });
        }
        match op {
            Operator::Gt | Operator::GtEq => {
                bound_within(&self.lower, value, op == Operator::GtEq, Ordering::Greater)
            }
            Operator::Lt | Operator::LtEq => {
                bound_within(&self.upper, value, op == Operator::LtEq, Ordering::Less)
            }
            // `<>` from bounds: the whole range lies on one side of the value.
            Operator::NotEq => {
                bound_within(&self.lower, value, false, Ordering::Greater)
                    || bound_within(&self.upper, value, false, Ordering::Less)
            }
            _ => false,
        }
    }
}

/// Whether the query's bound `known` (toward `side`) keeps every value beyond
/// `value` (inclusive or not).
fn bound_within(
    known: &Option<(ScalarValue, bool)>,
    value: &ScalarValue,
    inclusive: bool,
    side: Ordering,
) -> bool {
    let Some((bound, bound_inclusive)) = known else {
        return false;
    };
    match compare(bound, value) {
        Some(o) if o == side => true,
        Some(Ordering::Equal) => inclusive || !bound_inclusive,
        _ => false,
    }
}

/// The tighter of two bounds toward `side`.
fn tighter(
    known: Option<(ScalarValue, bool)>,
    new: (ScalarValue, bool),
    side: Ordering,
) -> Option<(ScalarValue, bool)> {
    let Some(old) = known else {
        return Some(new);
    };
    match compare(&new.0, &old.0) {
        Some(o) if o == side => Some(new),
        Some(Ordering::Equal) => Some((old.0, old.1 && new.1)),
        _ => Some(old),
    }
}

/// `column <op> literal`, with the literal on either side (the operator turned around).
fn comparison(b: &BinaryExpr) -> Option<(String, Operator, ScalarValue)> {
    let (column, op, value) = match (b.left.as_ref(), b.right.as_ref()) {
        (Expr::Column(c), other) => (c, b.op, literal(other)?),
        (other, Expr::Column(c)) => (c, b.op.swap()?, literal(other)?),
        _ => return None,
    };
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
    )
    .then(|| (column.name.clone(), op, value))
}

/// The values `e` allows one column, when it is `col = v`, `col IN (…)`, or an
/// `OR` of those on the same column.
fn value_set(e: &Expr) -> Option<(String, Vec<ScalarValue>)> {
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::Or => {
            let (left, mut values) = value_set(&b.left)?;
            let (right, more) = value_set(&b.right)?;
            (left == right).then(|| {
                values.extend(more);
                (left, values)
            })
        }
        Expr::BinaryExpr(b) => match comparison(b)? {
            (column, Operator::Eq, value) => Some((column, vec![value])),
            _ => None,
        },
        Expr::InList(list) if !list.negated => match list.expr.as_ref() {
            Expr::Column(c) => Some((
                c.name.clone(),
                list.list.iter().map(literal).collect::<Option<_>>()?,
            )),
            _ => None,
        },
        _ => None,
    }
}

/// A non-null literal (a cast of one folded).
fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
        Expr::Cast(c) => literal(&c.expr)?.cast_to(c.field.data_type()).ok(),
        Expr::TryCast(c) => literal(&c.expr)?.cast_to(c.field.data_type()).ok(),
        _ => None,
    }
}

fn is_text(v: &ScalarValue) -> bool {
    matches!(
        v.data_type(),
        datafusion::arrow::datatypes::DataType::Utf8
            | datafusion::arrow::datatypes::DataType::LargeUtf8
            | datafusion::arrow::datatypes::DataType::Utf8View
    )
}

/// Two values compared, the second cast to the first's type when they differ.
fn compare(a: &ScalarValue, b: &ScalarValue) -> Option<Ordering> {
    if a.data_type() == b.data_type() {
        return a.partial_cmp(b);
    }
    a.partial_cmp(&b.cast_to(&a.data_type()).ok()?)
}

/// `e` with its columns unqualified: the query's filters name the scan's table,
/// the copy's predicate names bare columns.
pub fn unqualified(e: &Expr) -> Expr {
    e.clone()
        .transform(|e| match e {
            Expr::Column(c) if c.relation.is_some() => {
                Ok(Transformed::yes(Expr::Column(Column::from_name(c.name))))
            }
            Expr::Alias(a) => Ok(Transformed::yes(*a.expr)),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| e.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};
    use proptest::prelude::*;

    fn q(exprs: &[Expr]) -> Vec<Expr> {
        exprs.to_vec()
    }

    #[test]
    fn bounds_imply_wider_bounds() {
        let covers = col("d").gt_eq(lit(10));
        assert!(implies(&q(&[col("t.d").gt_eq(lit(10))]), &covers).is_ok());
        assert!(
            implies(&q(&[col("d").gt(lit(9))]), &covers).is_err(),
            "integers are not assumed"
        );
        assert!(implies(&q(&[col("d").gt(lit(10))]), &covers).is_ok());
        assert!(implies(&q(&[col("d").between(lit(12), lit(20))]), &covers).is_ok());
        assert!(implies(&q(&[col("d").eq(lit(11))]), &covers).is_ok());
        assert!(implies(
            &q(&[col("d").in_list(vec![lit(10), lit(30)], false)]),
            &covers
        )
        .is_ok());
        let err = implies(&q(&[col("d").gt_eq(lit(5))]), &covers).unwrap_err();
        assert!(err.contains('d') && err.contains("10"), "{err}");
        assert!(implies(&q(&[col("e").gt_eq(lit(50))]), &covers).is_err());
        assert!(implies(&[], &covers).is_err());
        // The literal on the left: 10 <= d.
        assert!(implies(&q(&[lit(10).lt_eq(col("d"))]), &covers).is_ok());
    }

    #[test]
    fn strict_and_inclusive_bounds_meet_exactly() {
        let strict = col("d").gt(lit(10));
        assert!(implies(&q(&[col("d").gt_eq(lit(10))]), &strict).is_err());
        assert!(implies(&q(&[col("d").gt(lit(10))]), &strict).is_ok());
        let upper = col("d").lt(lit(10));
        assert!(implies(&q(&[col("d").lt_eq(lit(10))]), &upper).is_err());
        assert!(implies(&q(&[col("d").lt(lit(10)), col("d").lt_eq(lit(10))]), &upper).is_ok());
    }

    #[test]
    fn sets_disjunctions_and_repeated_conjuncts() {
        // Text is compared for equality only: the source's collation orders it otherwise.
        assert!(implies(&q(&[col("r").gt_eq(lit("N"))]), &col("r").gt_eq(lit("M"))).is_err());
        assert!(implies(&q(&[col("r").eq(lit("N"))]), &col("r").gt_eq(lit("M"))).is_err());
        assert!(implies(&q(&[col("r").eq(lit("N"))]), &col("r").not_eq(lit("M"))).is_ok());
        let regions = col("r").in_list(vec![lit("EU"), lit("US")], false);
        assert!(implies(&q(&[col("r").eq(lit("EU"))]), &regions).is_ok());
        assert!(implies(&q(&[col("r").eq(lit("APAC"))]), &regions).is_err());
        // A small `IN` list as DataFusion simplifies it, on both sides.
        let as_ors = col("r").eq(lit("EU")).or(col("r").eq(lit("US")));
        let query_ors = col("t.r").eq(lit("US")).or(col("t.r").eq(lit("EU")));
        assert!(implies(std::slice::from_ref(&query_ors), &as_ors).is_ok());
        assert!(implies(&q(&[query_ors]), &col("r").eq(lit("EU"))).is_err());
        let mixed = col("r").eq(lit("EU")).or(col("d").eq(lit(1)));
        assert!(implies(&q(&[mixed]), &as_ors).is_err());
        let either = col("r").eq(lit("EU")).or(col("d").gt(lit(3)));
        assert!(implies(&q(&[col("d").gt(lit(4))]), &either).is_ok());
        // A predicate the reasoning cannot read is still proved when the query repeats it.
        let odd = Expr::IsTrue(Box::new(col("flag")));
        assert!(implies(&q(&[Expr::IsTrue(Box::new(col("t.flag")))]), &odd).is_ok());
        assert!(implies(&q(&[col("flag").eq(lit(true))]), &odd).is_err());
        let not_null = col("r").is_not_null();
        assert!(implies(&q(&[col("r").eq(lit("EU"))]), &not_null).is_ok());
        let both = col("r").eq(lit("EU")).and(col("d").gt_eq(lit(1)));
        assert!(implies(&q(&[col("d").gt_eq(lit(2)), col("r").eq(lit("EU"))]), &both).is_ok());
        assert!(implies(&q(&[col("d").gt_eq(lit(2))]), &both).is_err());
    }

    #[test]
    fn values_of_other_types_are_cast() {
        let covers = col("d").gt_eq(lit(ScalarValue::Int64(Some(10))));
        assert!(implies(
            &q(&[col("d").gt_eq(lit(ScalarValue::Int32(Some(11))))]),
            &covers
        )
        .is_ok());
        let dates = col("d").gt_eq(lit(ScalarValue::Date32(Some(20_000))));
        assert!(implies(
            &q(&[col("d").gt(lit(ScalarValue::Date32(Some(20_001))))]),
            &dates
        )
        .is_ok());
        assert!(implies(
            &q(&[col("d").gt(lit(ScalarValue::Date32(Some(19_000))))]),
            &dates
        )
        .is_err());
    }

    /// A small evaluator for the shapes above, over one integer column `x`.
    fn holds(e: &Expr, x: i64) -> bool {
        match e {
            Expr::BinaryExpr(b) if b.op == Operator::And => holds(&b.left, x) && holds(&b.right, x),
            Expr::BinaryExpr(b) if b.op == Operator::Or => holds(&b.left, x) || holds(&b.right, x),
            Expr::BinaryExpr(b) => {
                let (op, v) = match (b.left.as_ref(), b.right.as_ref()) {
                    (Expr::Column(_), Expr::Literal(ScalarValue::Int64(Some(v)), _)) => (b.op, *v),
                    (Expr::Literal(ScalarValue::Int64(Some(v)), _), Expr::Column(_)) => {
                        (b.op.swap().expect("comparison"), *v)
                    }
                    _ => unreachable!("test shapes"),
                };
                match op {
                    Operator::Eq => x == v,
                    Operator::NotEq => x != v,
                    Operator::Lt => x < v,
                    Operator::LtEq => x <= v,
                    Operator::Gt => x > v,
                    Operator::GtEq => x >= v,
                    _ => unreachable!("test shapes"),
                }
            }
            Expr::Between(b) => {
                let (Some(ScalarValue::Int64(Some(l))), Some(ScalarValue::Int64(Some(h)))) =
                    (literal(&b.low), literal(&b.high))
                else {
                    unreachable!("test shapes")
                };
                (l..=h).contains(&x)
            }
            Expr::InList(l) => l
                .list
                .iter()
                .any(|v| literal(v) == Some(ScalarValue::Int64(Some(x)))),
            _ => unreachable!("test shapes"),
        }
    }

    fn atom() -> impl Strategy<Value = Expr> {
        let v = -6i64..6;
        prop_oneof![
            (0..6usize, v.clone(), any::<bool>()).prop_map(|(op, v, flip)| {
                let op = [
                    Operator::Eq,
                    Operator::NotEq,
                    Operator::Lt,
                    Operator::LtEq,
                    Operator::Gt,
                    Operator::GtEq,
                ][op];
                let (l, r) = if flip {
                    (lit(v), col("x"))
                } else {
                    (col("x"), lit(v))
                };
                Expr::BinaryExpr(BinaryExpr::new(Box::new(l), op, Box::new(r)))
            }),
            (v.clone(), 0i64..5).prop_map(|(l, w)| col("x").between(lit(l), lit(l + w))),
            proptest::collection::vec(v, 1..4)
                .prop_map(|vs| col("x").in_list(vs.into_iter().map(lit).collect(), false)),
        ]
    }

    fn predicate() -> impl Strategy<Value = Expr> {
        atom().prop_recursive(2, 6, 2, |inner| {
            (inner.clone(), inner, any::<bool>())
                .prop_map(|(a, b, and)| if and { a.and(b) } else { a.or(b) })
        })
    }

    proptest! {
        /// Sound: whenever the query is said to imply the copy's predicate, every
        /// value the query keeps is in the copy.
        #[test]
        fn an_implied_predicate_holds_for_every_row_the_query_keeps(
            query in proptest::collection::vec(predicate(), 0..4),
            covers in predicate(),
        ) {
            if implies(&query, &covers).is_ok() {
                for x in -10i64..10 {
                    if query.iter().all(|e| holds(e, x)) {
                        prop_assert!(holds(&covers, x), "x = {x}: {query:?} does not imply {covers}");
                    }
                }
            }
        }
    }
}
