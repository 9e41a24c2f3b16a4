//! Scans of a dataset accelerated as a subset (`filter = '…'`): read the copy
//! when the query's filters imply the copy's predicate, else the source
//! (`catalog/acceleration/subset.rs` explains the copy, `containment.rs` the proof).
//!
//! The rule runs right after DataFusion pushes filters down, so a scan's filters
//! sit in the scan and in a `Filter` directly above it, and before federation,
//! which must see the source's own provider to send the scan to its database.
//! Each choice is noted for `EXPLAIN` ([`super::plan_notes`]).

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::Result;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Expr, Filter, Limit, LogicalPlan, TableScan, TableScanBuilder};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::plan_notes::PlanNotes;
use crate::catalog::acceleration::containment;
use crate::catalog::acceleration::subset::SubsetOrSource;

#[derive(Debug, Default)]
pub(super) struct SubsetScans;

impl OptimizerRule for SubsetScans {
    fn name(&self) -> &str {
        "quiver_subset_scans"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let options = config.options();
        plan.transform_down_with_subqueries(|node| match node {
            LogicalPlan::Filter(f) => match f.input.as_ref() {
                LogicalPlan::TableScan(scan) if marker(scan) => {
                    let mut filters: Vec<Expr> = split_conjunction(&f.predicate)
                        .into_iter()
                        .cloned()
                        .collect();
                    filters.extend(scan.filters.iter().cloned());
                    let chosen = choose(scan.clone(), &filters, &options)?;
                    let filter = Filter::try_new(f.predicate.clone(), Arc::new(chosen))?;
                    Ok(Transformed::yes(LogicalPlan::Filter(filter)))
                }
                _ => Ok(Transformed::no(LogicalPlan::Filter(f))),
            },
            LogicalPlan::TableScan(scan) if marker(&scan) => {
                let filters = scan.filters.clone();
                Ok(Transformed::yes(choose(scan, &filters, &options)?))
            }
            other => Ok(Transformed::no(other)),
        })
    }
}

/// Whether `scan` reads a dataset with a copy of a subset (the choice not made yet).
fn marker(scan: &TableScan) -> bool {
    source_as_provider(&scan.source).is_ok_and(|p| SubsetOrSource::of(p.as_ref()).is_some())
}

/// `scan` (of a [`SubsetOrSource`]) as a scan of the copy or of the source, given
/// every filter the query puts on it.
fn choose(
    scan: TableScan,
    filters: &[Expr],
    options: &datafusion::common::config::ConfigOptions,
) -> Result<LogicalPlan> {
    let provider = source_as_provider(&scan.source)?;
    let Some(marker) = SubsetOrSource::of(provider.as_ref()) else {
        return Ok(LogicalPlan::TableScan(scan));
    };
    let Some(subset) = marker.subset() else {
        return Ok(source_scan(scan, marker));
    };
    let dataset = &marker.dataset;
    let decision = match differing_columns(marker) {
        Some(why) => Err(format!("{why} (refresh the acceleration)")),
        None => containment::implies(filters, &subset.covers)
            .map_err(|part| format!("the query's filters do not imply {part}")),
    };
    match decision {
        Ok(()) => {
            PlanNotes::record(
                options,
                format!(
                    "{dataset}: answered from its accelerated copy, which holds the rows where {}: the query's filters imply it",
                    subset.text
                ),
            );
            copy_scan(scan, subset.table.clone())
        }
        Err(why) => {
            PlanNotes::record(
                options,
                format!(
                    "{dataset}: read from the source, not its accelerated copy, which holds only the rows where {}: {why}",
                    subset.text
                ),
            );
            Ok(source_scan(scan, marker))
        }
    }
}

/// The same scan of the source: exactly the plan the table has without a copy.
fn source_scan(scan: TableScan, marker: &SubsetOrSource) -> LogicalPlan {
    LogicalPlan::TableScan(TableScan {
        source: provider_as_source(marker.source.clone()),
        ..scan
    })
}

/// A scan of the copy. The filters the source took into its scan move above it
/// (the copy's scan takes its own when they are pushed again), and a limit the
/// scan carried goes above them.
fn copy_scan(
    scan: TableScan,
    copy: Arc<dyn datafusion::catalog::TableProvider>,
) -> Result<LogicalPlan> {
    let pushed = conjunction(scan.filters.iter().cloned());
    let fetch = if pushed.is_some() { None } else { scan.fetch };
    let mut plan = LogicalPlan::TableScan(
        TableScanBuilder::new(scan.table_name.clone(), provider_as_source(copy))
            .with_projection(scan.projection.clone())
            .with_fetch(fetch)
            .build()?,
    );
    if let Some(predicate) = pushed {
        plan = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(plan))?);
        if let Some(n) = scan.fetch {
            plan = LogicalPlan::Limit(Limit {
                skip: None,
                fetch: Some(Box::new(datafusion::logical_expr::lit(n as i64))),
                input: Arc::new(plan),
            });
        }
    }
    Ok(plan)
}

/// How the copy's columns differ from the source's, if they do (the copy cannot stand in).
fn differing_columns(marker: &SubsetOrSource) -> Option<String> {
    let (copy, source) = (marker.copy.schema(), marker.source.schema());
    if copy.fields().len() != source.fields().len() {
        return Some(format!(
            "the copy has {} columns and the source {}",
            copy.fields().len(),
            source.fields().len()
        ));
    }
    source
        .fields()
        .iter()
        .zip(copy.fields().iter())
        .find(|(s, c)| s.name() != c.name() || s.data_type() != c.data_type())
        .map(|(s, c)| {
            format!(
                "the copy's column {} ({}) differs from the source's {} ({})",
                c.name(),
                c.data_type(),
                s.name(),
                s.data_type()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::acceleration::subset::CopyOfSubset;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    fn table(values: &[i64]) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .expect("batch");
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table"))
    }

    /// A session with the rule where the engine puts it, and `t`: a source of
    /// 1..=10 and a copy of `a >= 5` that also holds 100, so answers tell which was read.
    async fn session() -> SessionContext {
        let mut rules = datafusion::optimizer::Optimizer::new().rules;
        let at = rules
            .iter()
            .position(|r| r.name() == "push_down_filter")
            .map(|i| i + 1)
            .unwrap_or(rules.len());
        rules.insert(at, Arc::new(SubsetScans));
        let mut state = SessionStateBuilder::new()
            .with_default_features()
            .with_optimizer_rules(rules)
            .build();
        PlanNotes::install(state.config_mut().options_mut());
        let copy =
            CopyOfSubset::new(&state, table(&[5, 6, 7, 8, 9, 10, 100]), "a >= 5").expect("copy");
        let ctx = SessionContext::new_with_state(state);
        let marker = SubsetOrSource {
            dataset: "t".into(),
            copy: Arc::new(copy),
            source: table(&(1..=10).collect::<Vec<_>>()),
        };
        ctx.register_table("t", Arc::new(marker)).expect("register");
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> (String, Vec<String>) {
        let batches = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        (text, PlanNotes::of(ctx.state().config_options()))
    }

    #[tokio::test]
    async fn a_contained_query_reads_the_copy_and_another_the_source() {
        let ctx = session().await;
        let (got, notes) = answer(&ctx, "SELECT sum(a) AS s FROM t WHERE a >= 6").await;
        assert!(
            got.contains("| 140 |"),
            "from the copy (6..10 and 100):\n{got}"
        );
        assert!(
            notes[0].contains("t: answered from its accelerated copy"),
            "{notes:?}"
        );

        let ctx = session().await;
        let (got, notes) = answer(&ctx, "SELECT sum(a) AS s FROM t WHERE a >= 2 AND a < 9").await;
        assert!(got.contains("| 35 |"), "from the source (2..8):\n{got}");
        assert!(
            notes[0].contains("t: read from the source") && notes[0].contains("a >= 5"),
            "{notes:?}"
        );

        // No filter at all: the source.
        let ctx = session().await;
        let (got, _) = answer(&ctx, "SELECT count(*) AS n FROM t").await;
        assert!(got.contains("| 10 |"), "{got}");
        // A limit stays above the query's filter on the copy.
        let ctx = session().await;
        let (got, _) = answer(&ctx, "SELECT a FROM t WHERE a > 7 ORDER BY a LIMIT 2").await;
        assert!(got.contains("| 8 |") && got.contains("| 9 |"), "{got}");
        // Two scans of the table in a join: each decides alone.
        let ctx = session().await;
        let (got, notes) = answer(
            &ctx,
            "SELECT count(*) AS n FROM t x JOIN t y ON x.a = y.a + 1 WHERE y.a >= 8",
        )
        .await;
        assert!(got.contains("| 2 |"), "{got}");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes.iter().any(|n| n.contains("answered from")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("read from the source")),
            "{notes:?}"
        );
    }
}
