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
    pub fn input_with(&self, c: &Column) -> Option<usize> {
        self.inputs
            .iter()
            .position(|p| p.schema().index_of_column(c).is_ok())
    }
}

/// One joined part of the tree while it is rebuilt: its plan and which inputs it holds.
#[derive(Debug, Clone)]
pub(super) struct Part {
    pub plan: LogicalPlan,
    pub inputs: Vec<usize>,
}

impl Part {
    pub fn holds(&self, input: usize) -> bool {
        self.inputs.contains(&input)
    }
}

/// `a ⋈ b` on every key between them, with the conditions that become decidable
/// here (all the inputs they read are in `a` or `b`, and not all in one of them).
pub(super) fn join_parts(graph: &JoinGraph, a: &Part, b: &Part) -> Result<Part> {
    let mut on = Vec::new();
    for k in &graph.keys {
        if a.holds(k.left_input) && b.holds(k.right_input) {
            on.push((k.left.clone(), k.right.clone()));
        } else if a.holds(k.right_input) && b.holds(k.left_input) {
            on.push((k.right.clone(), k.left.clone()));
        }
    }
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
    })
}

/// The conditions that read one input only or none (a filter the tree held above
/// its joins): applied to that input before any join, or on top of the tree.
pub(super) fn with_local_conditions(graph: &JoinGraph, input: usize) -> Result<LogicalPlan> {
    let plan = graph.inputs[input].clone();
    let local: Vec<Expr> = graph
        .conditions
        .iter()
        .filter(|(_, reads)| reads.as_slice() == [input])
        .map(|(c, _)| c.clone())
        .collect();
    match conjunction(local) {
        Some(predicate) => Ok(LogicalPlan::Filter(Filter::try_new(
            predicate,
            Arc::new(plan),
        )?)),
        None => Ok(plan),
    }
}

/// `plan` with the columns of `like` in their order, so the rebuilt tree has the
/// schema of the tree it replaces, and the conditions that read no input on top.
pub(super) fn finish(
    graph: &JoinGraph,
    plan: LogicalPlan,
    like: &LogicalPlan,
) -> Result<LogicalPlan> {
    let constant: Vec<Expr> = graph
        .conditions
        .iter()
        .filter(|(_, reads)| reads.is_empty())
        .map(|(c, _)| c.clone())
        .collect();
    let plan = match conjunction(constant) {
        Some(predicate) => LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(plan))?),
        None => plan,
    };
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
