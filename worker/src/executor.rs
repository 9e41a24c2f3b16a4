//! Decoding and running fragments.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec;
use quiver_connectors::SourceConfig;
use quiver_proto::{FragmentTicket, QuiverCodec, WorkerStats};

/// Consumers named in a fragment's out-of-memory error.
const TOP_CONSUMERS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(5) {
    Some(n) => n,
    None => unreachable!(),
};

/// What a worker needs to know to run fragments.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Shown in stats and logs.
    pub id: String,
    /// Sources from the shared config: their object stores are registered so file
    /// fragments can read `s3://` locations.
    pub sources: Vec<SourceConfig>,
    /// Memory limit of a fragment whose ticket sets none.
    pub default_memory_limit: usize,
    /// The cluster key every call must be authenticated with; None = an insecure
    /// cluster (`allow_insecure`), where anyone who reaches the port may call.
    pub cluster: Option<quiver_proto::ClusterKey>,
    /// `[workers] join_keys_max` and `join_key_array_max`: keys of a join sent
    /// into a database statement.
    pub join_keys: quiver_connectors::join_keys::JoinKeyLimits,
    /// `[workers] exchange_compression`: IPC compression of the Flight streams this
    /// worker sends to other cluster processes.
    pub compression: crate::LinkCompression,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            id: "worker".into(),
            sources: vec![],
            default_memory_limit: 2 << 30,
            cluster: None,
            join_keys: Default::default(),
            compression: Default::default(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub running: AtomicU32,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    pub memory_reserved: AtomicU64,
}

/// Runs fragments; shared by all requests of one worker.
pub struct FragmentExecutor {
    pub(crate) options: WorkerOptions,
    /// Shared object stores; each fragment gets its own memory pool on top.
    base_runtime: Arc<RuntimeEnv>,
    state: SessionState,
    /// The same, with joins' dynamic filters on, for fragments of one partition
    /// (whole plans, and stage tasks narrowed to their partition).
    whole_plan_state: SessionState,
    codec: QuiverCodec,
    pub(crate) counters: Counters,
    pub(crate) lifecycle: crate::lifecycle::Lifecycle,
}

/// A decoded fragment ready to stream, with the memory pool it runs in.
pub(crate) struct RunningFragment {
    pub stream: SendableRecordBatchStream,
    pub pool: Arc<crate::cost::PeakPool>,
    /// The running plan, for its spill metrics once it ends.
    pub plan: Arc<dyn ExecutionPlan>,
}

impl FragmentExecutor {
    pub fn new(options: WorkerOptions, codec: QuiverCodec) -> Result<Self> {
        let base_runtime = RuntimeEnvBuilder::new().build_arc()?;
        quiver_connectors::register_object_stores(&base_runtime, &options.sources)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut config = SessionConfig::new();
        quiver_connectors::join_keys::configure(config.options_mut(), options.join_keys.list);
        // A fragment is one partition of a plan whose siblings run elsewhere: it must
        // read exactly its own file group, never steal work from partitions that
        // do not exist in this process.
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        // Exchange reads from other workers authenticate with this worker's credentials.
        let mut config = config.with_extension(Arc::new(crate::ClusterCredentials::new(
            options.cluster.clone(),
        )));
        // A join's dynamic filter waits until every partition of the join has built
        // its side. A fragment that runs one partition of many would wait forever,
        // so joins compute dynamic filters only in plans of one partition: whole
        // plans, and stage tasks rewritten to their own partition (partition_exec.rs).
        let mut whole = config.clone();
        config
            .options_mut()
            .optimizer
            .enable_join_dynamic_filter_pushdown = false;
        whole
            .options_mut()
            .optimizer
            .enable_join_dynamic_filter_pushdown = true;
        // Built once: registering every function per fragment would cost milliseconds.
        let build = |config| {
            SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(base_runtime.clone())
                .with_default_features()
                .build()
        };
        let (mut state, mut whole_plan_state) = (build(config), build(whole));
        crate::functions::register(&mut state)?;
        crate::functions::register(&mut whole_plan_state)?;
        Ok(Self {
            options,
            base_runtime,
            state,
            whole_plan_state,
            codec,
            counters: Counters::default(),
            lifecycle: crate::lifecycle::Lifecycle::new(),
        })
    }

    /// A task context with the fragment's own memory pool over the shared state.
    fn task_context(
        &self,
        ticket: &FragmentTicket,
    ) -> Result<(Arc<TaskContext>, Arc<crate::cost::PeakPool>)> {
        let limit = match ticket.memory_limit {
            0 => self.options.default_memory_limit,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        // What `with_memory_limit` builds, under a pool that remembers its peak.
        let tracked = TrackConsumersPool::new(GreedyMemoryPool::new(limit), TOP_CONSUMERS);
        let pool = Arc::new(crate::cost::PeakPool::new(Arc::new(tracked)));
        // Parquet footers and page indexes stay cached across fragments, as in one
        // long-lived DataFusion session: without it every fragment of every query
        // read and decoded each file's metadata again. The cache checks size and
        // modification time, so a rewritten file is read afresh.
        let caches = CacheManagerConfig::default().with_file_metadata_cache(Some(
            self.base_runtime.cache_manager.get_file_metadata_cache(),
        ));
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(self.base_runtime.object_store_registry.clone())
            .with_cache_manager(caches)
            .with_memory_pool(pool.clone())
            .build_arc()?;
        let task = Arc::try_unwrap(self.state.task_ctx())
            .map_err(|_| DataFusionError::Internal("task context is shared".into()))?;
        Ok((
            Arc::new(
                task.with_runtime(runtime)
                    .with_task_id(ticket.scope().to_string()),
            ),
            pool,
        ))
    }

    /// Decodes the ticket's plan and starts its partition; setting `cancelled` stops it.
    pub(crate) fn start(
        &self,
        ticket: &FragmentTicket,
        cancelled: Arc<AtomicBool>,
    ) -> Result<RunningFragment> {
        let (ctx, pool) = self.task_context(ticket)?;
        let plan: Arc<dyn ExecutionPlan> =
            physical_plan_from_bytes_with_extension_codec(&ticket.plan, &ctx, &self.codec)?;
        let partitions = plan.properties().partitioning.partition_count();
        let partition = ticket.partition as usize;
        if partition >= partitions {
            return plan_err!(
                "fragment {} asks for partition {partition} of a plan with {partitions}",
                ticket.fragment_id
            );
        }
        // A stage task's partition becomes a plan of its own where it can (see partition_exec.rs).
        let (plan, partition) = match crate::partition_exec::one_partition(&plan, partition)? {
            Some(one) => (one, 0),
            None => (plan, partition),
        };
        let (plan, ctx) = if plan.properties().partitioning.partition_count() == 1 {
            // Every partition inside runs here: the joins' dynamic filters can complete,
            // and a database scan under a join can wait for its keys.
            let whole = Arc::try_unwrap(self.whole_plan_state.task_ctx())
                .map_err(|_| DataFusionError::Internal("task context is shared".into()))?
                .with_runtime(ctx.runtime_env())
                .with_task_id(ticket.scope().to_string());
            (
                quiver_connectors::join_keys::attach(plan, Some(self.options.join_keys.array))?,
                Arc::new(whole),
            )
        } else {
            (plan, ctx)
        };
        let plan = crate::cancel::cancellable(plan, cancelled)?;
        tracing::trace!(plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(true), "decoded fragment");
        let stream = plan.execute(partition, ctx)?;
        Ok(RunningFragment { stream, pool, plan })
    }

    pub fn stats(&self) -> WorkerStats {
        let c = &self.counters;
        WorkerStats {
            worker_id: self.options.id.clone(),
            running_fragments: c.running.load(Ordering::Relaxed),
            completed_fragments: c.completed.load(Ordering::Relaxed),
            failed_fragments: c.failed.load(Ordering::Relaxed),
            rows_sent: c.rows.load(Ordering::Relaxed),
            bytes_sent: c.bytes.load(Ordering::Relaxed),
            memory_reserved: c.memory_reserved.load(Ordering::Relaxed),
            cpu_seconds: crate::usage::cpu_seconds().unwrap_or(0.0),
            rss_bytes: crate::usage::rss_bytes().unwrap_or(0),
            exchange_bytes: crate::exchange::store().bytes_on_disk(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    use datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec;
    use futures::TryStreamExt;

    /// A second fragment over the same Parquet file finds its metadata cached by
    /// the first, instead of reading and decoding the footer again.
    #[tokio::test]
    async fn parquet_metadata_is_cached_across_fragments() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| DataFusionError::External(Box::new(e)))?;
        let path = dir.path().join("t.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..1000))],
        )?;
        let ctx = SessionContext::new();
        ctx.read_batch(batch)?
            .write_parquet(&path.to_string_lossy(), Default::default(), None)
            .await?;
        let ctx = SessionContext::new();
        ctx.register_parquet("t", &path.to_string_lossy(), ParquetReadOptions::default())
            .await?;
        let plan = ctx
            .sql("SELECT sum(x) FROM t WHERE x > 10")
            .await?
            .create_physical_plan()
            .await?;
        let codec = QuiverCodec::new();
        let bytes = physical_plan_to_bytes_with_extension_codec(plan, &codec)?;

        let executor = FragmentExecutor::new(WorkerOptions::default(), codec)?;
        let cache = executor
            .base_runtime
            .cache_manager
            .get_file_metadata_cache();
        assert_eq!(cache.len(), 0);
        let ticket = FragmentTicket {
            query_id: "q".into(),
            fragment_id: 0,
            partition: 0,
            plan: bytes.to_vec(),
            memory_limit: 0,
            for_client: false,
            worker_address: String::new(),
            relay: false,
            string_views: false,
            exchange_scope: String::new(),
        };
        for _ in 0..2 {
            let running = executor.start(&ticket, Arc::new(AtomicBool::new(false)))?;
            let batches: Vec<RecordBatch> = running.stream.try_collect().await?;
            let sum = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0));
            assert_eq!(sum, Some((11..1000).sum::<i64>()));
            assert_eq!(
                cache.len(),
                1,
                "the file's metadata is cached once, and found the second time"
            );
        }
        Ok(())
    }
}
