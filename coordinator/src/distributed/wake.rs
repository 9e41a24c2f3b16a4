//! Scale from zero: a plan that needs workers while none runs (a pool with
//! `workers.min = 0`) fails planning with [`NoWorkers`]; the session then has the
//! pool start workers, waits for one, and plans again. The wait is recorded in
//! `system.queries` (`worker_wait_ms`) and shown as a row of `EXPLAIN ANALYZE`.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

/// Planning needs a worker and none is healthy.
#[derive(Debug, thiserror::Error)]
#[error("no healthy workers: {configured} configured, none answers its health check")]
pub struct NoWorkers {
    pub configured: usize,
}

impl NoWorkers {
    pub fn error(configured: usize) -> DataFusionError {
        DataFusionError::External(Box::new(Self { configured }))
    }
}

/// Whether planning failed for want of a worker.
pub fn needs_workers(e: &DataFusionError) -> bool {
    match e.find_root() {
        DataFusionError::External(inner) => inner.downcast_ref::<NoWorkers>().is_some(),
        _ => false,
    }
}

/// Adds the wait to an `EXPLAIN ANALYZE` answer (plan_type, plan) as one more row.
pub async fn annotate_analyze(
    stream: SendableRecordBatchStream,
    waited: Duration,
    started: usize,
) -> Result<SendableRecordBatchStream> {
    let schema = stream.schema();
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    let mut all = concat_batches(&schema, &batches)?;
    if all.num_columns() == 2 {
        let row = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["worker_wait"])),
                Arc::new(StringArray::from(vec![format!(
                    "waited {} ms for {started} worker(s) to start (scale from zero)",
                    waited.as_millis()
                )])),
            ],
        )?;
        // A column type other than Utf8 (never seen) leaves the answer as it is.
        if all.column(0).data_type() == row.column(0).data_type() {
            all = concat_batches(&schema, &[all, row])?;
        }
    }
    let out = futures::stream::iter(vec![Ok(all)]);
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_found_under_context() {
        let e = NoWorkers::error(0).context("Optimizer rule 'quiver_distribute_fragments' failed");
        assert!(needs_workers(&e));
        assert!(
            e.to_string().contains("no healthy workers: 0 configured"),
            "{e}"
        );
        assert!(!needs_workers(&DataFusionError::Plan(
            "no healthy workers".into()
        )));
    }
}
