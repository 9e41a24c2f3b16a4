//! [`ShuffleWriteExec`]: the producing end of an exchange.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::Array;
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

use quiver_proto::plan_nodes::single_child;

use super::keys::KeySummarizer;
use super::report::{report_schema, TaskReport};
use super::store::store;
use super::stream::streams;
use crate::batches::compact_views;

/// How a stage's rows are split into the partitions of the next stage.
#[derive(Debug, Clone)]
pub enum ShuffleOutput {
    /// By the hash of these expressions, as DataFusion's hash repartitioning does.
    Hash(Vec<Arc<dyn PhysicalExpr>>, usize),
    /// All rows into one partition: a broadcast build side, or the input of a
    /// final merge.
    Single,
}

impl ShuffleOutput {
    pub fn partitions(&self) -> usize {
        match self {
            Self::Hash(_, n) => *n,
            Self::Single => 1,
        }
    }

    /// DataFusion's hash partitioner for a hash output; none for a single partition.
    fn partitioner(&self) -> Result<Option<BatchPartitioner>> {
        match self {
            Self::Hash(exprs, n) => Ok(Some(BatchPartitioner::new_hash_partitioner(
                exprs.clone(),
                *n,
                Time::new(),
            )?)),
            Self::Single => Ok(None),
        }
    }
}

impl fmt::Display for ShuffleOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hash(exprs, n) => {
                let keys: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                write!(f, "Hash([{}], {n})", keys.join(", "))
            }
            Self::Single => write!(f, "Single"),
        }
    }
}

/// Runs one partition of its input (one task of a stage), splits the rows by
/// `output` and writes each output partition to a file in the exchange store.
/// Its own output is a small report: one row per output partition with the
/// output's key, rows and bytes, and the task's spill and time.
pub struct ShuffleWriteExec {
    stage: u32,
    input: Arc<dyn ExecutionPlan>,
    output: ShuffleOutput,
    /// Set for a streamed output: the key its partitions' channels go by. Unset,
    /// the output is written to the exchange store's files.
    stream: Option<String>,
    /// Set when the report carries a summary of the hash keys (listing at most
    /// this many values), for a dynamic filter on another stage.
    key_summary: Option<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleWriteExec {
    pub fn new(stage: u32, input: Arc<dyn ExecutionPlan>, output: ShuffleOutput) -> Self {
        let partitions = input.properties().partitioning.partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(report_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            stage,
            input,
            output,
            stream: None,
            key_summary: None,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The same task, streaming its partitions under `key` instead of writing files.
    pub fn streamed(mut self, key: String) -> Self {
        self.stream = Some(key);
        self
    }

    pub fn stream_key(&self) -> Option<&str> {
        self.stream.as_deref()
    }

    /// The same task, also reporting its hash keys' [`super::KeySummary`] (with at most
    /// `max_values` values listed).
    pub fn with_key_summary(mut self, max_values: usize) -> Self {
        self.key_summary = Some(max_values);
        self
    }

    pub fn key_summary(&self) -> Option<usize> {
        self.key_summary
    }

    pub fn stage(&self) -> u32 {
        self.stage
    }

    pub fn output(&self) -> &ShuffleOutput {
        &self.output
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl fmt::Debug for ShuffleWriteExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShuffleWriteExec")
            .field("stage", &self.stage)
            .finish()
    }
}

impl DisplayAs for ShuffleWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShuffleWriteExec: stage={}, output={}",
            self.stage, self.output
        )
    }
}

impl ExecutionPlan for ShuffleWriteExec {
    fn name(&self) -> &str {
        "ShuffleWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if let ShuffleOutput::Hash(exprs, _) = &self.output {
            for e in exprs {
                if f(e)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = single_child("ShuffleWriteExec", children)?;
        let mut exec = Self::new(self.stage, input, self.output.clone());
        exec.stream = self.stream.clone();
        exec.key_summary = self.key_summary;
        Ok(Arc::new(exec))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let query = context.task_id().unwrap_or_else(|| context.session_id());
        let batch_size = context.session_config().batch_size();
        let input = self.input.execute(partition, context)?;
        // A summary that cannot be taken (a key type min/max cannot order) is left
        // out: the filter it would feed is an optimization, the task's rows are not.
        let summarizer = match (self.key_summary, &self.output) {
            (Some(max), ShuffleOutput::Hash(keys, _)) => {
                KeySummarizer::new(keys.clone(), &input.schema(), max)
                    .inspect_err(|e| tracing::debug!(error = %e, "no key summary"))
                    .ok()
            }
            _ => None,
        };
        let (input, summarizer) = match summarizer {
            Some(summarizer) => {
                let summarizer = Arc::new(parking_lot::Mutex::new(Some(summarizer)));
                let seen = summarizer.clone();
                let schema = input.schema();
                let observed = input.map(move |batch| {
                    let batch = batch?;
                    let mut s = seen.lock();
                    if let Some(Err(e)) = s.as_mut().map(|s| s.observe(&batch)) {
                        tracing::debug!(error = %e, "no key summary");
                        *s = None;
                    }
                    Ok(batch)
                });
                let input: SendableRecordBatchStream =
                    Box::pin(RecordBatchStreamAdapter::new(schema, observed));
                (input, Some(summarizer))
            }
            None => (input, None),
        };
        let plan = self.input.clone();
        let output = self.output.clone();
        let written = MetricBuilder::new(&self.metrics).output_rows(partition);
        let stream = self.stream.clone();
        let report = async move {
            let started = Instant::now();
            let (rows, bytes, key) = match stream {
                Some(key) => stream_partitions(key, input, &output, batch_size).await?,
                None => write_partitions(&query, input, &output).await?,
            };
            written.add(rows.iter().sum::<u64>() as usize);
            let keys = summarizer
                .and_then(|s| s.lock().take())
                .and_then(|s| s.finish().ok());
            let report = TaskReport {
                key,
                rows,
                bytes,
                spilled_bytes: spilled_bytes(&plan),
                elapsed_ms: started.elapsed().as_millis() as u64,
                keys,
            };
            report.to_batch()
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            report_schema(),
            futures::stream::once(report),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Writes every row of `input` to its output partition's file; returns rows and
/// bytes per partition and the output's key.
async fn write_partitions(
    query: &str,
    mut input: SendableRecordBatchStream,
    output: &ShuffleOutput,
) -> Result<(Vec<u64>, Vec<u64>, String)> {
    let (key, dir) = store().new_output(query)?;
    let n = output.partitions();
    let schema = input.schema();
    let paths: Vec<_> = (0..n).map(|p| dir.join(format!("{p}.arrow"))).collect();
    // Every partition gets a file, empty ones too: a missing file then always
    // means a lost output, never "no rows".
    let mut writers = paths
        .iter()
        .map(|path| {
            Ok(StreamWriter::try_new(
                BufWriter::new(File::create(path)?),
                &schema,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rows = vec![0u64; n];
    let mut partitioner = output.partitioner()?;
    while let Some(batch) = input.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        match partitioner.as_mut() {
            // View columns are compacted first: a partition's rows still point into
            // the whole input buffers, and IPC would write those buffers once per partition.
            Some(partitioner) => partitioner.partition(batch, |p, part| {
                rows[p] += part.num_rows() as u64;
                writers[p]
                    .write(&compact_views(part)?)
                    .map_err(DataFusionError::from)
            })?,
            None => {
                rows[0] += batch.num_rows() as u64;
                writers[0].write(&compact_views(batch)?)?;
            }
        }
    }
    for mut writer in writers {
        writer.finish()?;
        writer.into_inner()?.flush()?;
    }
    let bytes = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .collect();
    Ok((rows, bytes, key))
}

/// Sends every row of `input` to its output partition's reader, waiting while a
/// reader's channel is full; returns rows and data bytes per partition.
///
/// Each partition's rows are gathered into batches of `batch_size` rows first:
/// hashing cuts every input batch into one piece per partition, and a reader
/// (over Flight, a message each) does better with few full batches than with
/// many small ones. The copy this makes also compacts string views, which the
/// file path does separately. A partition whose reader has gone (a LIMIT above
/// it was satisfied) is dropped; the task ends early once every reader has.
async fn stream_partitions(
    key: String,
    mut input: SendableRecordBatchStream,
    output: &ShuffleOutput,
    batch_size: usize,
) -> Result<(Vec<u64>, Vec<u64>, String)> {
    let n = output.partitions();
    let schema = input.schema();
    let mut outs = (0..n)
        .map(|p| {
            let tx = streams()
                .sender(&key, p)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(Some(Out {
                tx,
                coalescer: BatchCoalescer::new(schema.clone(), batch_size.max(1)),
                rows: 0,
                bytes: 0,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut partitioner = output.partitioner()?;
    let mut parts = Vec::with_capacity(n);
    while let Some(batch) = input.next().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                // Readers fail with the producer's own error, not a lost stream.
                let message = e.to_string();
                for out in outs.iter().flatten() {
                    let _ = out.tx.send(Err(message.clone())).await;
                }
                return Err(e);
            }
        };
        if batch.num_rows() == 0 {
            continue;
        }
        match partitioner.as_mut() {
            Some(partitioner) => partitioner.partition(batch, |p, part| {
                parts.push((p, part));
                Ok(())
            })?,
            None => parts.push((0, batch)),
        }
        for (p, part) in parts.drain(..) {
            let Some(slot) = outs.get_mut(p) else {
                continue;
            };
            if let Some(out) = slot.as_mut() {
                out.coalescer.push_batch(part)?;
                if !out.send_completed().await {
                    *slot = None;
                }
            }
        }
        if outs.iter().all(Option::is_none) {
            break;
        }
    }
    let (mut rows, mut bytes) = (vec![0u64; n], vec![0u64; n]);
    for (p, out) in outs.into_iter().enumerate() {
        let Some(mut out) = out else { continue };
        out.coalescer.finish_buffered_batch()?;
        out.send_completed().await;
        rows[p] = out.rows;
        bytes[p] = out.bytes;
    }
    Ok((rows, bytes, key))
}

/// One output partition of a streamed task: its channel and the rows gathered for it.
struct Out {
    tx: tokio::sync::mpsc::Sender<super::stream::StreamItem>,
    coalescer: BatchCoalescer,
    rows: u64,
    bytes: u64,
}

impl Out {
    /// Sends the full batches gathered so far; false once the reader has gone.
    async fn send_completed(&mut self) -> bool {
        while let Some(batch) = self.coalescer.next_completed_batch() {
            let (r, b) = (batch.num_rows() as u64, data_bytes(&batch));
            if self.tx.send(Ok(batch)).await.is_err() {
                return false;
            }
            self.rows += r;
            self.bytes += b;
        }
        true
    }
}

/// Bytes of the data a batch holds (its buffers as sliced, not their capacity):
/// what the batch's Arrow IPC body carries, so streamed and written exchanges
/// report comparable sizes.
fn data_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| {
            let data = c.to_data();
            let fixed = data.get_slice_memory_size().unwrap_or(0);
            // A view array's strings live in its variadic buffers, which arrow's count
            // leaves out (they are compacted to what the rows use before this).
            let variadic: usize = match c.data_type() {
                DataType::Utf8View | DataType::BinaryView => {
                    data.buffers().iter().skip(1).map(|b| b.len()).sum()
                }
                _ => 0,
            };
            (fixed + variadic) as u64
        })
        .sum()
}

/// Bytes the operators of `plan` spilled to disk (sorts, aggregates, joins).
pub(crate) fn spilled_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let own = plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0) as u64;
    own + plan.children().into_iter().map(spilled_bytes).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_bytes_count_what_the_rows_hold() {
        use datafusion::arrow::array::{Int64Array, StringViewArray};
        let long = "twenty characters!!!"; // 20 bytes: kept out of line
        let batch = RecordBatch::try_from_iter(vec![
            (
                "v",
                Arc::new(StringViewArray::from(vec![long, long, "short"])) as Arc<dyn Array>,
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![1, 2, 3])) as Arc<dyn Array>,
            ),
        ])
        .expect("batch");
        let batch = compact_views(batch).expect("compact");
        // 3 views of 16 bytes, 40 bytes of long strings, 3 × 8 bytes of integers.
        assert_eq!(data_bytes(&batch), 3 * 16 + 40 + 24);
        // A slice counts its own rows only.
        assert_eq!(
            data_bytes(&batch.slice(2, 1).project(&[1]).expect("project")),
            8
        );
    }
}
