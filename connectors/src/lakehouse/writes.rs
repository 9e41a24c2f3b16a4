//! Writes into lakehouse tables (`writable = true` on a Delta source).
//!
//! `INSERT` and `INSERT OVERWRITE` go through deltalake's own sink: the rows are
//! written as Parquet files, then one commit adds them (and, for an overwrite,
//! removes the old ones). `CREATE TABLE … AS` streams the rows into deltalake's
//! write operation, whose single commit creates the table with its files. A
//! statement that fails commits nothing: files it wrote are not in the log, so no
//! reader sees them. After a write, the next query reads the table's new snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::datasource::provider_as_source;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use url::Url;

use super::LakeSchema;

/// A writable table: reads as `inner`; writes become a [`DeltaSink`].
#[derive(Debug)]
pub(crate) struct AfterWrite {
    pub inner: Arc<dyn TableProvider>,
    pub lake: Weak<LakeSchema>,
    pub table: String,
    pub handle: Url,
}

#[async_trait]
impl TableProvider for AfterWrite {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }

    async fn insert_into(
        &self,
        _: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mode = match op {
            InsertOp::Append => Mode::Append,
            InsertOp::Overwrite => Mode::Overwrite,
            InsertOp::Replace => {
                return Err(DataFusionError::Plan(
                    "REPLACE INTO is not supported for Delta tables".into(),
                ))
            }
        };
        let lake = self
            .lake
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("the source is gone".into()))?;
        let store = super::store_for(lake.runtime(), &self.handle)
            .map_err(|e| DataFusionError::External(e.into()))?
            .1;
        let sink = DeltaSink {
            name: self.table.clone(),
            url: self.handle.clone(),
            store,
            schema: self.inner.schema(),
            mode,
            lake: self.lake.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// A Delta table that `CREATE TABLE … AS` is about to create at `url`.
#[derive(Debug)]
pub(crate) struct DeltaCreate {
    pub name: String,
    pub url: Url,
    pub store: Arc<dyn object_store::ObjectStore>,
    pub schema: SchemaRef,
    pub lake: Weak<LakeSchema>,
}

#[async_trait]
impl TableProvider for DeltaCreate {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    async fn scan(
        &self,
        _: &dyn Session,
        _: Option<&Vec<usize>>,
        _: &[Expr],
        _: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::Plan(format!(
            "{} is being created",
            self.name
        )))
    }
    async fn insert_into(
        &self,
        _: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let sink = DeltaSink {
            name: self.name.clone(),
            url: self.url.clone(),
            store: self.store.clone(),
            schema: self.schema.clone(),
            mode: Mode::Create,
            lake: self.lake.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Create,
    Append,
    Overwrite,
}

/// Streams a statement's rows into deltalake's write operation: its files, then
/// one commit (creating the table, adding files, or replacing them).
#[derive(Debug)]
struct DeltaSink {
    name: String,
    url: Url,
    store: Arc<dyn object_store::ObjectStore>,
    schema: SchemaRef,
    mode: Mode,
    lake: Weak<LakeSchema>,
}

impl DisplayAs for DeltaSink {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeltaSink: {:?} {}", self.mode, self.url)
    }
}

#[async_trait]
impl DataSink for DeltaSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _: &Arc<TaskContext>,
    ) -> Result<u64> {
        use deltalake_core::operations::write::WriteBuilder;
        use deltalake_core::protocol::SaveMode;
        let fail = |e: deltalake_core::DeltaTableError| {
            DataFusionError::External(format!("Delta table {}: {e}", self.name).into())
        };
        let builder = deltalake_core::DeltaTableBuilder::from_url(self.url.clone())
            .map_err(fail)?
            .with_storage_backend(self.store.clone(), self.url.clone());
        // Appends and overwrites start from the latest version; the commit fails
        // (and writes nothing visible) if another writer conflicts.
        let (table, snapshot) = match self.mode {
            Mode::Create => (builder.build().map_err(fail)?, None),
            Mode::Append | Mode::Overwrite => {
                let table = builder.load().await.map_err(fail)?;
                let snapshot = table.snapshot().map_err(fail)?.snapshot().clone();
                (table, Some(snapshot))
            }
        };
        // The rows reach deltalake's writer as a one-partition streaming table.
        let rows = Arc::new(AtomicU64::new(0));
        let counted = {
            let rows = rows.clone();
            let schema = data.schema();
            let counted = data.map(move |b| {
                if let Ok(b) = &b {
                    rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                }
                b
            });
            Box::pin(RecordBatchStreamAdapter::new(schema, counted)) as SendableRecordBatchStream
        };
        let schema = counted.schema();
        let once = Arc::new(Once {
            schema: schema.clone(),
            stream: Mutex::new(Some(counted)),
        });
        let input = StreamingTable::try_new(schema, vec![once])?;
        let plan =
            LogicalPlanBuilder::scan("rows", provider_as_source(Arc::new(input)), None)?.build()?;
        let session = deltalake_core::delta_datafusion::create_session().state();
        let save_mode = match self.mode {
            Mode::Create => SaveMode::ErrorIfExists,
            Mode::Append => SaveMode::Append,
            Mode::Overwrite => SaveMode::Overwrite,
        };
        let mut write = WriteBuilder::new(table.log_store(), snapshot)
            .with_input_plan(plan)
            .with_session_state(Arc::new(session))
            .with_save_mode(save_mode);
        if self.mode == Mode::Create {
            write = write.with_table_name(&self.name);
        }
        write.await.map_err(fail)?;
        if let Some(lake) = self.lake.upgrade() {
            if self.mode == Mode::Create {
                lake.add_table(&self.name, self.url.clone());
            }
            lake.written(&self.name).await;
        }
        Ok(rows.load(Ordering::Relaxed))
    }
}

/// A stream that can be read once.
struct Once {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for Once {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Once")
    }
}

impl PartitionStream for Once {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }
    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some(s) => s,
            None => Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async {
                    Err(DataFusionError::Internal(
                        "the rows were already read".into(),
                    ))
                }),
            )),
        }
    }
}
