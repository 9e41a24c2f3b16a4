//! Stopping a fragment whose result nobody reads any more.
//!
//! Dropping a stream stops it only at its next yield point, and a CPU-bound
//! fragment (a partial aggregate over a file read in one go) may not yield for
//! its whole run. So every leaf of a fragment is wrapped in [`CancellableExec`],
//! which checks a flag before each batch it hands up: once the response stream is
//! dropped (the client left, the query failed elsewhere), the fragment ends within
//! one batch of work.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use futures::Stream;
use quiver_proto::plan_nodes::single_child;

/// Wraps every leaf of `plan` so that setting `cancelled` ends it.
pub fn cancellable(
    plan: Arc<dyn ExecutionPlan>,
    cancelled: Arc<AtomicBool>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if !node.children().is_empty() {
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(Arc::new(CancellableExec {
            input: node,
            cancelled: cancelled.clone(),
        }) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

struct CancellableExec {
    input: Arc<dyn ExecutionPlan>,
    cancelled: Arc<AtomicBool>,
}

impl fmt::Debug for CancellableExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellableExec").finish()
    }
}

impl DisplayAs for CancellableExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CancellableExec")
    }
}

impl ExecutionPlan for CancellableExec {
    fn name(&self) -> &str {
        "CancellableExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CancellableExec {
            input: single_child("CancellableExec", children)?,
            cancelled: self.cancelled.clone(),
        }))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(CancellableStream {
            input,
            cancelled: self.cancelled.clone(),
        }))
    }
}

struct CancellableStream {
    input: SendableRecordBatchStream,
    cancelled: Arc<AtomicBool>,
}

impl Stream for CancellableStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(DataFusionError::Execution(
                "fragment cancelled: its result is no longer read".into(),
            ))));
        }
        self.input.as_mut().poll_next(cx)
    }
}

impl RecordBatchStream for CancellableStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_set_flag_ends_the_stream_with_an_error() {
        let flag = Arc::new(AtomicBool::new(false));
        let leaf: Arc<dyn ExecutionPlan> =
            Arc::new(PlaceholderRowExec::new(Arc::new(Schema::empty())));
        let plan = cancellable(leaf, flag.clone()).expect("wrap");
        assert_eq!(plan.name(), "CancellableExec");
        let rows = plan
            .execute(0, Arc::new(TaskContext::default()))
            .expect("run")
            .next()
            .await;
        assert!(matches!(rows, Some(Ok(_))), "runs while the flag is clear");
        flag.store(true, Ordering::Relaxed);
        let mut stream = plan
            .execute(0, Arc::new(TaskContext::default()))
            .expect("run");
        let err = stream
            .next()
            .await
            .and_then(|r| r.err())
            .expect("an error once cancelled");
        assert!(err.to_string().contains("cancelled"), "{err}");
    }
}
