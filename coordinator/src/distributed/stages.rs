//! Cutting a physical plan into stages at its exchanges.
//!
//! DataFusion's physical plan already says where rows must move between
//! partitions: a hash `RepartitionExec` (before a partitioned join or a final
//! aggregate) and a `CoalescePartitionsExec` (into a broadcast build side or a
//! global aggregate). Each of those becomes a stage boundary: the subtree below
//! is a stage whose tasks write an exchange ([`ShuffleWriteExec`]), and the node
//! is replaced by a [`ShuffleReadExec`] of that stage's output. Round-robin
//! repartitions only spread work inside one process, and every task is already
//! a process's worth of work, so they are dropped.
//!
//! What is left above the top boundaries is the query's *root*: its merge runs
//! on the coordinator and the partitions under it run on workers as streamed
//! fragments (see `distributed_query_exec.rs`).

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::JoinType;
use datafusion::common::{plan_err, Result};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan, Partitioning};
use quiver_worker::exchange::{ShuffleOutput, ShuffleReadExec};

/// One stage: `plan` runs as one task per partition; each task's rows are split by `output`.
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub id: u32,
    /// The stage's work, reading earlier stages through unbound `ShuffleReadExec`s.
    pub plan: Arc<dyn ExecutionPlan>,
    pub output: ShuffleOutput,
    /// Stages whose output this one reads.
    pub inputs: Vec<u32>,
    /// Its tasks report a summary of their hash keys, which filters another
    /// stage (`dynamic_filters.rs`).
    pub summarize_keys: bool,
    /// Build stages whose keys filter this stage's rows before it starts.
    pub filtered_by: Vec<u32>,
}

impl StagePlan {
    pub fn tasks(&self) -> usize {
        self.plan.properties().partitioning.partition_count()
    }
}

/// A plan cut into stages; `stages` lists every stage after the ones it reads.
#[derive(Debug)]
pub struct StagedPlan {
    pub root: Arc<dyn ExecutionPlan>,
    pub stages: Vec<StagePlan>,
}

/// Cuts `plan` into stages. Fails for plans an exchange cannot carry yet (an
/// order-preserving hash repartition); the caller then distributes the old way.
pub fn cut(plan: Arc<dyn ExecutionPlan>, target_partitions: usize) -> Result<StagedPlan> {
    let mut cutter = Cutter {
        stages: vec![],
        target_partitions: target_partitions.max(1),
    };
    let root = cutter.coordinator_level(plan)?;
    Ok(StagedPlan {
        root,
        stages: cutter.stages,
    })
}

struct Cutter {
    stages: Vec<StagePlan>,
    /// Partitions of a shuffle the cutter adds itself.
    target_partitions: usize,
}

/// Joins that emit build-side rows once the *whole* probe side has been seen
/// (unmatched rows of a left/full join, semi and anti results). In DataFusion's
/// `CollectLeft` mode that bookkeeping is shared by the partitions of one
/// process, so it cannot span tasks on different workers.
fn emits_build_side_at_end(join_type: &JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::LeftAnti
            | JoinType::LeftSemi
            | JoinType::LeftMark
            | JoinType::Full
    )
}

fn partitions(plan: &Arc<dyn ExecutionPlan>) -> usize {
    plan.properties().partitioning.partition_count()
}

fn is_merge(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.as_ref().is::<CoalescePartitionsExec>() || plan.as_ref().is::<SortPreservingMergeExec>()
}

impl Cutter {
    /// Nodes above every merge: they see one partition and stay on the coordinator.
    fn coordinator_level(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if partitions(&plan) > 1 {
            return self.worker_level(plan);
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok(plan);
        }
        let merge = is_merge(&plan);
        let children = children
            .into_iter()
            .map(|c| {
                if merge {
                    self.worker_level(c)
                } else {
                    self.coordinator_level(c)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        replace_children_if_necessary(plan, children)
    }

    /// Nodes that run on workers: every exchange below becomes a stage.
    fn worker_level(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(repartition) = plan.as_ref().downcast_ref::<RepartitionExec>() {
            let input = self.worker_level(repartition.input().clone())?;
            return match repartition.partitioning() {
                Partitioning::Hash(exprs, n) => {
                    if repartition.preserve_order() && partitions(&input) > 1 {
                        return plan_err!("an order-preserving hash exchange is not supported");
                    }
                    Ok(self.stage(input, ShuffleOutput::Hash(exprs.clone(), *n)))
                }
                _ => Ok(input),
            };
        }
        if let Some(join) = plan.as_ref().downcast_ref::<HashJoinExec>() {
            if *join.partition_mode() == PartitionMode::CollectLeft
                && emits_build_side_at_end(join.join_type())
            {
                return self.partition_join(join);
            }
        }
        if let Some(join) = plan.as_ref().downcast_ref::<NestedLoopJoinExec>() {
            if emits_build_side_at_end(join.join_type()) {
                let left = self.worker_level(join.left().clone())?;
                let right = self.worker_level(join.right().clone())?;
                let right = self.single(right);
                return replace_children_if_necessary(plan, vec![left, right]);
            }
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok(plan);
        }
        let children = children
            .into_iter()
            .map(|c| self.worker_level(c))
            .collect::<Result<Vec<_>>>()?;
        if plan.as_ref().is::<CoalescePartitionsExec>() {
            if let [input] = children.as_slice() {
                if partitions(input) > 1 {
                    let read = self.stage(input.clone(), ShuffleOutput::Single);
                    return replace_children_if_necessary(plan, vec![read]);
                }
            }
        }
        replace_children_if_necessary(plan, children)
    }

    /// `plan` as one partition: gathered into a single-output stage if it has more.
    fn single(&mut self, plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        if partitions(&plan) > 1 {
            self.stage(plan, ShuffleOutput::Single)
        } else {
            plan
        }
    }

    /// A `CollectLeft` join whose build-side rows depend on the whole probe side:
    /// both sides are shuffled by the join keys and it runs `Partitioned`, so each
    /// task sees all probe rows of its keys. A null-aware anti join (`NOT IN`)
    /// needs every row at once, so it runs as a single task.
    fn partition_join(&mut self, join: &HashJoinExec) -> Result<Arc<dyn ExecutionPlan>> {
        let build = match join
            .left()
            .as_ref()
            .downcast_ref::<CoalescePartitionsExec>()
        {
            Some(c) if c.fetch().is_none() => c.input().clone(),
            _ => join.left().clone(),
        };
        let build = self.worker_level(build)?;
        let probe = self.worker_level(join.right().clone())?;
        if join.null_aware {
            let (build, probe) = (self.single(build), self.single(probe));
            return join
                .builder()
                .with_new_children(vec![build, probe])?
                .build_exec();
        }
        let n = self.target_partitions;
        let (build_keys, probe_keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
        let build = self.stage(build, ShuffleOutput::Hash(build_keys, n));
        let probe = self.stage(probe, ShuffleOutput::Hash(probe_keys, n));
        join.builder()
            .with_partition_mode(PartitionMode::Partitioned)
            .with_new_children(vec![build, probe])?
            .build_exec()
    }

    fn stage(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        output: ShuffleOutput,
    ) -> Arc<dyn ExecutionPlan> {
        let id = self.stages.len() as u32 + 1;
        let partitioning = match &output {
            ShuffleOutput::Hash(exprs, n) => Partitioning::Hash(exprs.clone(), *n),
            ShuffleOutput::Single => Partitioning::UnknownPartitioning(1),
        };
        let schema = plan.schema();
        let inputs = reads(&plan);
        self.stages.push(StagePlan {
            id,
            plan,
            output,
            inputs,
            summarize_keys: false,
            filtered_by: vec![],
        });
        Arc::new(ShuffleReadExec::new(id, schema, partitioning))
    }
}

/// The stages `plan` reads.
pub fn reads(plan: &Arc<dyn ExecutionPlan>) -> Vec<u32> {
    let mut out = vec![];
    let _ = plan.apply(|node| {
        if let Some(read) = node.as_ref().downcast_ref::<ShuffleReadExec>() {
            if !out.contains(&read.stage()) {
                out.push(read.stage());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Two 4-partition tables; joins are planned `Partitioned` unless said otherwise.
    async fn plan(sql: &str, collect_left: bool) -> Arc<dyn ExecutionPlan> {
        let mut config = SessionConfig::new().with_target_partitions(4);
        if !collect_left {
            config
                .options_mut()
                .optimizer
                .hash_join_single_partition_threshold = 0;
            config
                .options_mut()
                .optimizer
                .hash_join_single_partition_threshold_rows = 0;
        }
        let ctx = SessionContext::new_with_config(config);
        for name in ["a", "b"] {
            let schema = Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("v", DataType::Int64, false),
            ]));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(0..100)),
                    Arc::new(Int64Array::from_iter_values(0..100)),
                ],
            )
            .expect("batch");
            let parts = (0..4).map(|_| vec![batch.clone()]).collect();
            ctx.register_table(
                name,
                Arc::new(MemTable::try_new(schema, parts).expect("table")),
            )
            .expect("register");
        }
        ctx.sql(sql)
            .await
            .expect("sql")
            .create_physical_plan()
            .await
            .expect("plan")
    }

    fn shuffles(staged: &StagedPlan) -> usize {
        staged
            .stages
            .iter()
            .filter(|s| matches!(s.output, ShuffleOutput::Hash(..)))
            .count()
    }

    #[tokio::test]
    async fn a_partitioned_join_under_an_aggregate_shuffles_both_sides_and_the_groups() {
        let plan = plan(
            "SELECT a.v, count(*) FROM a JOIN b ON a.k = b.k GROUP BY a.v",
            false,
        )
        .await;
        let staged = cut(plan, 4).expect("cut");
        // Both join inputs and the partial aggregate are shuffled.
        assert_eq!(shuffles(&staged), 3, "{staged:#?}");
        let last = staged.stages.last().expect("stages");
        assert_eq!(
            last.inputs.len(),
            2,
            "the aggregate's stage reads both join inputs"
        );
        // Every stage comes after the stages it reads.
        for (i, s) in staged.stages.iter().enumerate() {
            assert!(s
                .inputs
                .iter()
                .all(|input| staged.stages[..i].iter().any(|e| e.id == *input)));
        }
        assert!(reads(&staged.root).contains(&last.id));
    }

    #[tokio::test]
    async fn a_partitioned_joins_build_stage_filters_its_probe_stage_but_not_for_a_full_join() {
        let mut staged = cut(
            plan(
                "SELECT a.v, count(*) FROM a JOIN b ON a.k = b.k GROUP BY a.v",
                false,
            )
            .await,
            4,
        )
        .expect("cut");
        // A build side estimated larger than the keys a summary lists is not linked.
        let mut too_large = cut(
            plan(
                "SELECT a.v, count(*) FROM a JOIN b ON a.k = b.k GROUP BY a.v",
                false,
            )
            .await,
            4,
        )
        .expect("cut");
        super::super::dynamic_filters::link(&mut too_large, 0);
        assert!(
            too_large
                .stages
                .iter()
                .all(|s| s.filtered_by.is_empty() && !s.summarize_keys),
            "{too_large:#?}"
        );
        super::super::dynamic_filters::link(&mut staged, 10_000);
        let build = staged
            .stages
            .iter()
            .find(|s| s.summarize_keys)
            .expect("a build stage");
        let probes: Vec<&StagePlan> = staged
            .stages
            .iter()
            .filter(|s| !s.filtered_by.is_empty())
            .collect();
        assert_eq!(probes.len(), 1, "{staged:#?}");
        assert_eq!(probes[0].filtered_by, vec![build.id]);
        assert_ne!(probes[0].id, build.id);

        // A full join keeps probe rows without a match: nothing may drop them.
        let mut staged = cut(
            plan("SELECT a.v, b.v FROM a FULL JOIN b ON a.k = b.k", false).await,
            4,
        )
        .expect("cut");
        super::super::dynamic_filters::link(&mut staged, 10_000);
        assert!(
            staged
                .stages
                .iter()
                .all(|s| s.filtered_by.is_empty() && !s.summarize_keys),
            "{staged:#?}"
        );
    }

    #[tokio::test]
    async fn a_small_build_side_is_gathered_once_and_broadcast() {
        let plan = plan("SELECT count(*) FROM a JOIN b ON a.k = b.k", true).await;
        let staged = cut(plan, 4).expect("cut");
        let gathers = staged
            .stages
            .iter()
            .filter(|s| matches!(s.output, ShuffleOutput::Single))
            .count();
        assert!(gathers >= 1, "{staged:#?}");
        assert_eq!(
            shuffles(&staged),
            0,
            "an inner CollectLeft join needs no shuffle: {staged:#?}"
        );
    }

    #[tokio::test]
    async fn a_semi_join_is_repartitioned_so_no_task_needs_the_whole_probe_side() {
        let plan = plan("SELECT count(*) FROM a LEFT SEMI JOIN b ON a.k = b.k", true).await;
        let staged = cut(plan, 4).expect("cut");
        let show = |p: &Arc<dyn ExecutionPlan>| {
            datafusion::physical_plan::displayable(p.as_ref())
                .indent(true)
                .to_string()
        };
        let text = staged
            .stages
            .iter()
            .map(|s| show(&s.plan))
            .chain([show(&staged.root)])
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains("mode=Partitioned, join_type=LeftSemi"),
            "{text}"
        );
        assert!(shuffles(&staged) >= 2, "{text}");
    }
}
