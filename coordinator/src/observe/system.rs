//! The `system` schema: live views of the coordinator, read with plain SQL.
//! - `system.workers`: every worker, its state and load;
//! - `system.scaling_events`: the worker pool's decisions with their reasons;
//! - `system.queries`: queries running and recently run;
//! - `system.fragments`: the stage tasks of those queries: worker, attempt, rows, bytes, spill, time, CPU, memory;
//! - `system.usage`: what the queries used, per user and hour (see `crate::observe::usage`);
//! - `system.views`, `system.accelerations`: virtual datasets (see `crate::catalog`);
//! - `system.snapshots`: each lakehouse table's current version, files, bytes and last commit.
//!
//! Each table is a snapshot taken when a query names it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::error::Result;

use crate::observe::fragments::FragmentLog;
use crate::observe::queries::{QueryLog, QueryRecord};
use crate::observe::usage::Usage;
use crate::pool::WorkerPool;

#[derive(Debug)]
pub struct SystemSchema {
    pool: Arc<WorkerPool>,
    queries: Arc<QueryLog>,
    fragments: Arc<FragmentLog>,
    datasets: Arc<crate::catalog::Datasets>,
    lakehouse: Vec<Arc<quiver_connectors::lakehouse::LakeSchema>>,
}

/// One row of `system.snapshots`: catalog, schema, table, and the snapshot or its error.
type SnapshotRow = (
    String,
    String,
    String,
    &'static str,
    std::result::Result<quiver_connectors::lakehouse::Snapshot, String>,
);

impl SystemSchema {
    pub fn new(
        pool: Arc<WorkerPool>,
        queries: Arc<QueryLog>,
        fragments: Arc<FragmentLog>,
        datasets: Arc<crate::catalog::Datasets>,
        lakehouse: Vec<Arc<quiver_connectors::lakehouse::LakeSchema>>,
    ) -> Self {
        Self {
            pool,
            queries,
            fragments,
            datasets,
            lakehouse,
        }
    }

    /// `system.snapshots`: one row per Delta or Iceberg table (an unreadable one with its error).
    async fn snapshots(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("catalog", DataType::Utf8, false),
            Field::new("schema", DataType::Utf8, false),
            Field::new("table", DataType::Utf8, false),
            Field::new("format", DataType::Utf8, false),
            Field::new("version", DataType::Int64, true),
            Field::new("files", DataType::Int64, true),
            Field::new("bytes", DataType::Int64, true),
            Field::new(
                "committed_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("error", DataType::Utf8, true),
        ]));
        let mut rows: Vec<SnapshotRow> = vec![];
        for source in &self.lakehouse {
            let (catalog, name) = source
                .qualified()
                .split_once('.')
                .unwrap_or((source.qualified(), ""));
            for (table, snapshot) in source.snapshots().await {
                rows.push((
                    catalog.to_string(),
                    name.to_string(),
                    table,
                    source.format(),
                    snapshot,
                ));
            }
        }
        let ok = |r: &SnapshotRow| r.4.as_ref().ok().cloned();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.2.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(Int64Array::from_iter(
                rows.iter().map(|r| ok(r).map(|s| s.version)),
            )),
            Arc::new(Int64Array::from_iter(
                rows.iter().map(|r| ok(r).map(|s| s.files as i64)),
            )),
            Arc::new(Int64Array::from_iter(
                rows.iter().map(|r| ok(r).map(|s| s.bytes as i64)),
            )),
            Arc::new(
                TimestampMillisecondArray::from_iter(
                    rows.iter().map(|r| ok(r).and_then(|s| s.committed_ms)),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.4.as_ref().err().map(|e| e.as_str())),
            )),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn fragments(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("query_id", DataType::Utf8, false),
            Field::new("stage", DataType::Int64, false),
            Field::new("task", DataType::Int64, false),
            Field::new("attempt", DataType::Int64, false),
            Field::new("worker", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new(
                "started_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("elapsed_ms", DataType::Int64, false),
            Field::new("rows", DataType::Int64, false),
            Field::new("bytes", DataType::Int64, false),
            Field::new("spilled_bytes", DataType::Int64, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("cpu_ms", DataType::Int64, false),
            Field::new("peak_memory_bytes", DataType::Int64, false),
        ]));
        let f = self.fragments.snapshot();
        let int = |g: &dyn Fn(&crate::observe::fragments::FragmentRecord) -> u64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(f.iter().map(|r| g(r) as i64)))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                f.iter().map(|r| r.query_id.as_str()),
            )),
            int(&|r| r.stage as u64),
            int(&|r| r.task as u64),
            int(&|r| r.attempt as u64),
            Arc::new(StringArray::from_iter_values(
                f.iter().map(|r| r.worker.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(f.iter().map(|r| r.state))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(f.iter().map(|r| millis(r.started_at)))
                    .with_timezone("UTC"),
            ),
            int(&|r| r.elapsed_ms()),
            int(&|r| r.rows),
            int(&|r| r.bytes),
            int(&|r| r.spilled_bytes),
            Arc::new(StringArray::from_iter(f.iter().map(|r| r.error.as_deref()))),
            int(&|r| r.cpu_nanos / 1_000_000),
            int(&|r| r.peak_memory),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn queries(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("user", DataType::Utf8, true),
            Field::new("sql", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new(
                "started_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("elapsed_secs", DataType::Float64, false),
            Field::new("rows", DataType::Int64, false),
            Field::new("bytes", DataType::Int64, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("client", DataType::Utf8, true),
            Field::new("tables", DataType::Utf8, false),
            Field::new("cache_hit", DataType::Boolean, false),
            Field::new("rows_written", DataType::Int64, true),
            Field::new("worker_wait_ms", DataType::Int64, false),
            Field::new("workers_started", DataType::Int64, false),
            Field::new("cpu_secs", DataType::Float64, false),
            Field::new("peak_memory_bytes", DataType::Int64, false),
            Field::new("bytes_read", DataType::Int64, false),
            Field::new("bytes_read_by_source", DataType::Utf8, false),
            Field::new("exchange_rows", DataType::Int64, false),
            Field::new("exchange_bytes", DataType::Int64, false),
            Field::new("container_secs", DataType::Float64, false),
        ]));
        let q = self.queries.snapshot();
        let int = |g: &dyn Fn(&crate::observe::usage::Usage) -> u64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                q.iter().map(|r| g(&r.usage) as i64),
            ))
        };
        let float = |g: &dyn Fn(&crate::observe::usage::Usage) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(
                q.iter().map(|r| g(&r.usage)),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                q.iter().map(|r| r.id.as_str()),
            )),
            Arc::new(StringArray::from_iter(q.iter().map(|r| r.user.as_deref()))),
            Arc::new(StringArray::from_iter_values(
                q.iter().map(|r| r.sql.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(q.iter().map(|r| r.state))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(q.iter().map(|r| millis(r.started_at)))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(
                q.iter().map(|r| r.elapsed()),
            )),
            Arc::new(Int64Array::from_iter_values(
                q.iter().map(|r| r.rows as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                q.iter().map(|r| r.bytes as i64),
            )),
            Arc::new(StringArray::from_iter(q.iter().map(|r| r.error.as_deref()))),
            Arc::new(StringArray::from_iter(
                q.iter().map(|r| r.client.as_deref()),
            )),
            Arc::new(StringArray::from_iter_values(
                q.iter().map(|r| r.objects.join(", ")),
            )),
            Arc::new(datafusion::arrow::array::BooleanArray::from_iter(
                q.iter().map(|r| Some(r.cache_hit)),
            )),
            Arc::new(Int64Array::from_iter(
                q.iter().map(|r| r.rows_written.map(|n| n as i64)),
            )),
            int(&|u| u.worker_wait_ms),
            int(&|u| u.workers_started as u64),
            float(&|u| u.cpu_secs),
            int(&|u| u.peak_memory),
            int(&|u| u.bytes_read()),
            Arc::new(StringArray::from_iter_values(
                q.iter().map(|r| r.usage.sources_text()),
            )),
            int(&|u| u.exchange_rows),
            int(&|u| u.exchange_bytes),
            float(&|u| u.container_secs),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    async fn workers(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("address", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("running_fragments", DataType::Int64, false),
            Field::new("state_secs", DataType::Float64, false),
            Field::new("idle_secs", DataType::Float64, false),
            Field::new("mode", DataType::Utf8, false),
            Field::new("container", DataType::Utf8, true),
            Field::new("last_decision", DataType::Utf8, true),
            Field::new("cpu_secs", DataType::Float64, true),
            Field::new("memory_bytes", DataType::Int64, true),
            Field::new("exchange_bytes", DataType::Int64, true),
            Field::new("instance", DataType::Utf8, true),
        ]));
        let workers = self.pool.all();
        // Each worker's own load figures; a worker that does not answer quickly shows NULLs.
        let stats = futures::future::join_all(
            workers
                .iter()
                .map(|w| w.stats(std::time::Duration::from_millis(500))),
        )
        .await;
        // The newest pool decision about each worker, "action: reason".
        let events = self.pool.events.snapshot();
        let last = |id: &str| {
            events
                .iter()
                .rev()
                .find(|e| e.worker == id)
                .map(|e| format!("{}: {}", e.action, e.reason))
        };
        let mode = format!("{:?}", self.pool.mode()).to_lowercase();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                workers.iter().map(|w| w.id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                workers.iter().map(|w| w.address.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                workers.iter().map(|w| w.state().as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                workers.iter().map(|w| w.running_fragments() as i64),
            )),
            Arc::new(Float64Array::from_iter_values(
                workers.iter().map(|w| w.in_state_for().as_secs_f64()),
            )),
            Arc::new(Float64Array::from_iter_values(
                workers.iter().map(|w| w.idle_for().as_secs_f64()),
            )),
            Arc::new(StringArray::from_iter_values(
                workers.iter().map(|_| mode.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                workers.iter().map(|w| self.pool.container_of(&w.id)),
            )),
            Arc::new(StringArray::from_iter(workers.iter().map(|w| last(&w.id)))),
            Arc::new(Float64Array::from_iter(
                stats.iter().map(|s| s.as_ref().map(|s| s.cpu_seconds)),
            )),
            Arc::new(Int64Array::from_iter(
                stats.iter().map(|s| s.as_ref().map(|s| s.rss_bytes as i64)),
            )),
            Arc::new(Int64Array::from_iter(
                stats
                    .iter()
                    .map(|s| s.as_ref().map(|s| s.exchange_bytes as i64)),
            )),
            Arc::new(StringArray::from_iter(
                workers.iter().map(|w| w.instance_id()),
            )),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn scaling_events(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("action", DataType::Utf8, false),
            Field::new("worker", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
        ]));
        let events = self.pool.events.snapshot();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMillisecondArray::from_iter_values(events.iter().map(|e| millis(e.at)))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.action),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.worker.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.reason.as_str()),
            )),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        crate::reserved::SYSTEM_TABLES
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let batch = match name {
            "workers" => self.workers().await?,
            "scaling_events" => self.scaling_events()?,
            "queries" => self.queries()?,
            "fragments" => self.fragments()?,
            "usage" => usage_table(&self.queries.snapshot())?,
            "views" => crate::catalog::system_tables::views(&self.datasets)?,
            "accelerations" => crate::catalog::system_tables::accelerations(&self.datasets)?,
            "snapshots" => self.snapshots().await?,
            _ => return Ok(None),
        };
        let schema: SchemaRef = batch.schema();
        Ok(Some(Arc::new(MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        crate::reserved::SYSTEM_TABLES.contains(&name)
    }
}

/// `system.usage`: per user (NULL: no authentication) and hour the queries started
/// in, what they used.
fn usage_table(queries: &[QueryRecord]) -> Result<RecordBatch> {
    #[derive(Default)]
    struct Sum {
        queries: i64,
        elapsed: f64,
        usage: Usage,
    }
    let mut sums: BTreeMap<(Option<String>, i64), Sum> = BTreeMap::new();
    for q in queries {
        let started = q
            .started_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let hour = started - started.rem_euclid(3_600_000);
        let s = sums.entry((q.user.clone(), hour)).or_default();
        s.queries += 1;
        s.elapsed += q.elapsed();
        s.usage.add(&q.usage);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, true),
        Field::new(
            "hour",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("queries", DataType::Int64, false),
        Field::new("elapsed_secs", DataType::Float64, false),
        Field::new("cpu_secs", DataType::Float64, false),
        Field::new("peak_memory_bytes", DataType::Int64, false),
        Field::new("bytes_read", DataType::Int64, false),
        Field::new("exchange_bytes", DataType::Int64, false),
        Field::new("container_secs", DataType::Float64, false),
        Field::new("worker_wait_ms", DataType::Int64, false),
    ]));
    let rows: Vec<_> = sums.iter().collect();
    let int = |f: &dyn Fn(&Sum) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, s)| f(s))))
    };
    let float = |f: &dyn Fn(&Sum) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|(_, s)| f(s)),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter(
            rows.iter().map(|((user, _), _)| user.as_deref()),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|((_, hour), _)| *hour))
                .with_timezone("UTC"),
        ),
        int(&|s| s.queries),
        float(&|s| s.elapsed),
        float(&|s| s.usage.cpu_secs),
        int(&|s| s.usage.peak_memory as i64),
        int(&|s| s.usage.bytes_read() as i64),
        int(&|s| s.usage.exchange_bytes as i64),
        float(&|s| s.usage.container_secs),
        int(&|s| s.usage.worker_wait_ms as i64),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}
