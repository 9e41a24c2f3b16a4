//! A tree of inner joins as a graph: its inputs, the equalities that connect them,
//! and the other join conditions; and the tree rebuilt in a new order.
//!
//! Only inner joins move: their inputs can be joined in any order with the same
//! result. Projections that only drop columns and filters between the joins belong
//! to the tree; anything else (an outer join, an aggregate, an alias) is an input.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::{Column, Result};
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    Expr, Filter, Join, JoinConstraint, JoinType, LogicalPlan, Projection,
};

/// The inner joins of one tree, flattened.
#[derive(Debug, Default)]
pub(super) struct JoinGraph {
    pub inputs: Vec<LogicalPlan>,
    /// `left = right` conditions whose sides each read one input.
    pub keys: Vec<Key>,
    /// Every other condition, with the inputs it reads.
    pub conditions: Vec<(Expr, Vec<usize>)>,
}

#[derive(Debug, Clone)]
pub(super) struct Key {
    pub left: Expr,
    pub left_input: usize,
    pub right: Expr,
    pub right_input: usize,
}

/// Whether `join` is one whose inputs may be reordered.
pub(super) fn reorderable(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Join(j) if j.join_type == JoinType::Inner
        && !j.null_aware
        && j.null_equality == datafusion::common::NullEquality::NullEqualsNothing)
}

impl JoinGraph {
    /// Flattens the inner-join tree rooted at `root` (which must be reorderable).
    pub fn of(root: &LogicalPlan) -> Self {
        let mut pairs = Vec::new();
        let mut others = Vec::new();
        let mut graph = JoinGraph::default();
        graph.collect(root, &mut pairs, &mut others);
        for (l, r) in pairs {
            match (graph.input_of(&l), graph.input_of(&r)) {
                (Some(li), Some(ri)) if li != ri => graph.keys.push(Key {
                    left: l,
                    left_input: li,
                    right: r,
                    right_input: ri,
                }),
                _ => others.push(l.eq(r)),
            }
        }
        for condition in others {
            let reads = graph.inputs_read(&condition);
            graph.conditions.push((condition, reads));
        }
        graph
    }

    fn collect(
        &mut self,
        plan: &LogicalPlan,
        pairs: &mut Vec<(Expr, Expr)>,
        others: &mut Vec<Expr>,
    ) {
        match plan {
            LogicalPlan::Join(j) if reorderable(plan) => {
                self.collect(&j.left, pairs, others);
                self.collect(&j.right, pairs, others);
                pairs.extend(j.on.iter().cloned());
                if let Some(f) = &j.filter {
                    others.extend(split_conjunction_owned(f.clone()));
                }
            }
            // Column pruning between joins: the rebuilt tree is pruned again afterwards.
            LogicalPlan::Projection(p)
                if reorderable(&p.input) && p.expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
            {
                self.collect(&p.input, pairs, others)
            }
            LogicalPlan::Filter(f) if reorderable(&f.input) && !f.predicate.is_volatile() => {
                others.extend(split_conjunction_owned(f.predicate.clone()));
                self.collect(&f.input, pairs, others)
            }
            _ => self.inputs.push(plan.clone()),
        }
    }

    /// The one input whose columns `expr` reads, if it reads columns of exactly one.
    fn input_of(&self, expr: &Expr) -> Option<usize> {
        match self.inputs_read(expr).as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    fn inputs_read(&self, expr: &Expr) -> Vec<usize> {
        let mut read: Vec<usize> = expr
            .column_refs()
            .into_iter()
            .filter_map(|c| self.input_with(c))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        read.sort_unstable();
        read
    }

    /// The input whose output has column `c`.
    fn input_with(&self, c: &Column) -> Option<usize> {
        self.inputs
            .iter()
            .position(|p| p.schema().index_of_column(c).is_ok())
    }
}

/// One side of a key: its expression and the input it reads.
pub(super) type KeySide<'k> = (&'k Expr, usize);

/// One joined part of the tree while it is rebuilt: its plan, which inputs it
/// holds, its estimated rows, and its name in `EXPLAIN`.
#[derive(Debug, Clone)]
pub(super) struct Part {
    pub plan: LogicalPlan,
    pub inputs: Vec<usize>,
    pub rows: f64,
    pub label: String,
}

impl Part {
    pub fn holds(&self, input: usize) -> bool {
        self.inputs.contains(&input)
    }
}

impl JoinGraph {
    /// The keys between parts `a` and `b`, each as (its side in `a`, its side in `b`).
    pub fn keys_between<'k>(&'k self, a: &Part, b: &Part) -> Vec<(KeySide<'k>, KeySide<'k>)> {
        let mut keys = Vec::new();
        for k in &self.keys {
            let (left, right) = ((&k.left, k.left_input), (&k.right, k.right_input));
            if a.holds(k.left_input) && b.holds(k.right_input) {
                keys.push((left, right));
            } else if a.holds(k.right_input) && b.holds(k.left_input) {
                keys.push((right, left));
            }
        }
        keys
    }

    /// `plan` under the conditions whose inputs read satisfy `decided`, if any.
    fn filtered(
        &self,
        plan: LogicalPlan,
        decided: impl Fn(&[usize]) -> bool,
    ) -> Result<LogicalPlan> {
        let predicates = self
            .conditions
            .iter()
            .filter(|(_, reads)| decided(reads))
            .map(|(c, _)| c.clone());
        match conjunction(predicates) {
            Some(predicate) => Ok(LogicalPlan::Filter(Filter::try_new(
                predicate,
                Arc::new(plan),
            )?)),
            None => Ok(plan),
        }
    }
}

/// `a ⋈ b` on every key between them, with the conditions that become decidable
/// here (all the inputs they read are in `a` or `b`, and not all in one of them);
/// `rows` and `label` describe the result.
pub(super) fn join_parts(
    graph: &JoinGraph,
    a: &Part,
    b: &Part,
    rows: f64,
    label: String,
) -> Result<Part> {
    let on = graph
        .keys_between(a, b)
        .into_iter()
        .map(|((left, _), (right, _))| (left.clone(), right.clone()))
        .collect();
    let decided: Vec<Expr> = graph
        .conditions
        .iter()
        .filter(|(_, reads)| {
            let in_a = reads.iter().all(|i| a.holds(*i));
            let in_b = reads.iter().all(|i| b.holds(*i));
            let in_both = reads.iter().all(|i| a.holds(*i) || b.holds(*i));
            in_both && !in_a && !in_b
        })
        .map(|(c, _)| c.clone())
        .collect();
    let join = Join::try_new(
        Arc::new(a.plan.clone()),
        Arc::new(b.plan.clone()),
        on,
        conjunction(decided),
        JoinType::Inner,
        JoinConstraint::On,
        datafusion::common::NullEquality::NullEqualsNothing,
        false,
    )?;
    let mut inputs = a.inputs.clone();
    inputs.extend(&b.inputs);
    Ok(Part {
        plan: LogicalPlan::Join(join),
        inputs,
        rows,
        label,
    })
}

/// Input `input` as the first part of the rebuilt tree, under the conditions that
/// read it alone (a filter the tree held above its joins).
pub(super) fn input_part(
    graph: &JoinGraph,
    input: usize,
    rows: f64,
    label: String,
) -> Result<Part> {
    let plan = graph.filtered(graph.inputs[input].clone(), |reads| reads == [input])?;
    Ok(Part {
        plan,
        inputs: vec![input],
        rows,
        label,
    })
}

/// `plan` with the columns of `like` in their order, so the rebuilt tree has the
/// schema of the tree it replaces, under the conditions that read no input.
pub(super) fn finish(
    graph: &JoinGraph,
    plan: LogicalPlan,
    like: &LogicalPlan,
) -> Result<LogicalPlan> {
    let plan = graph.filtered(plan, |reads| reads.is_empty())?;
    let columns = like
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect::<Vec<_>>();
    Ok(LogicalPlan::Projection(Projection::try_new(
        columns,
        Arc::new(plan),
    )?))
}
