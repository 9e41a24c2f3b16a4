//! Bulk ingest (Flight SQL `CommandStatementIngest`, ADBC's `adbc_ingest`): a
//! client's Arrow stream written into a writable table, which is created,
//! appended to or replaced as the request says. The stream is read once, as it
//! arrives, by the same writes a statement plans (file commit, PostgreSQL COPY,
//! MySQL INSERTs).

use parking_lot::Mutex;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::plan_err;
use datafusion::common::{ResolvedTableReference, ScalarValue, TableReference};
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::provider_as_source;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{cast, col, lit, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::ExecutionPlan;

use super::context::{check_write, home, Home, WriteContext};

/// What to do when the table exists, or does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Fail,
    Append,
    Replace,
}

/// An ingest request.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub catalog: Option<String>,
    pub schema: Option<String>,
    pub table: String,
    /// Create the table when it does not exist (else fail).
    pub create: bool,
    pub if_exists: IfExists,
}

impl IngestRequest {
    /// How it shows in `system.queries` and the audit log.
    pub fn describe(&self) -> String {
        let name = [
            self.catalog.as_deref(),
            self.schema.as_deref(),
            Some(self.table.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(".");
        format!(
            "INGEST INTO {name} (create = {}, if_exists = {:?})",
            self.create, self.if_exists
        )
    }
}

/// The client's stream, read once.
struct Incoming {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish()
    }
}

impl PartitionStream for Incoming {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().take();
        taken.unwrap_or_else(|| {
            let error = DataFusionError::Execution("the ingested stream was already read".into());
            Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async { Err(error) }),
            ))
        })
    }
}

/// Plans writing `data` as `request` says.
pub async fn plan(
    cx: &WriteContext<'_>,
    request: &IngestRequest,
    data: SendableRecordBatchStream,
) -> Result<LogicalPlan> {
    let o = cx.state.config().options();
    let catalog = request
        .catalog
        .clone()
        .unwrap_or_else(|| o.catalog.default_catalog.clone());
    let schema = request
        .schema
        .clone()
        .unwrap_or_else(|| o.catalog.default_schema.clone());
    let target = ResolvedTableReference {
        catalog: catalog.into(),
        schema: schema.into(),
        table: request.table.clone().into(),
    };
    let home = home(cx, &target)?;
    check_write(cx, &target)?;
    let incoming = Arc::new(Incoming {
        schema: data.schema(),
        stream: Mutex::new(Some(data)),
    });
    let input_schema = incoming.schema.clone();
    let table = StreamingTable::try_new(input_schema.clone(), vec![incoming])?;
    let input =
        LogicalPlanBuilder::scan("ingest", provider_as_source(Arc::new(table)), None)?.build()?;
    let existing = cx
        .state
        .catalog_list()
        .catalog(&target.catalog)
        .and_then(|c| c.schema(&target.schema));
    let existing = match existing {
        Some(s) => s.table(&target.table).await?,
        None => None,
    };
    let reference = TableReference::full(
        target.catalog.clone(),
        target.schema.clone(),
        target.table.clone(),
    );
    match (existing, request.if_exists) {
        (Some(_), IfExists::Fail) => {
            plan_err!("table {target} already exists (ingest mode create)")
        }
        (Some(provider), mode) => {
            let projected = conform(input, &provider.schema(), &target)?;
            let (provider, op): (Arc<dyn TableProvider>, _) = match (mode, &home) {
                (IfExists::Replace, Home::Files(_)) => {
                    (Arc::new(Replacing { inner: provider }), InsertOp::Append)
                }
                (IfExists::Replace, Home::Database(_) | Home::Lake(_)) => {
                    (provider, InsertOp::Overwrite)
                }
                _ => (provider, InsertOp::Append),
            };
            LogicalPlanBuilder::insert_into(projected, reference, provider_as_source(provider), op)?
                .build()
        }
        (None, _) if !request.create => plan_err!("table {target} not found (ingest mode append)"),
        (None, _) => match home {
            Home::Files(files) => {
                let root = files
                    .root()
                    .map(|r| r.as_str().to_string())
                    .unwrap_or_default();
                let ext = format!("{:?}", files.default_format()).to_ascii_lowercase();
                let factory = cx
                    .state
                    .get_file_format_factory(&ext)
                    .ok_or_else(|| DataFusionError::Plan(format!("no writer for {ext}")))?;
                LogicalPlanBuilder::copy_to(
                    input,
                    format!("{root}{}/", target.table),
                    format_as_file_type(factory),
                    Default::default(),
                    vec![],
                )?
                .build()
            }
            Home::Lake(lake) => {
                let provider = lake
                    .new_table(&target.table, input_schema)
                    .map_err(|e| DataFusionError::Plan(format!("{target}: {e}")))?;
                LogicalPlanBuilder::insert_into(
                    input,
                    reference,
                    provider_as_source(provider),
                    InsertOp::Append,
                )?
                .build()
            }
            Home::Database(db) => {
                let provider = db
                    .new_table(&target.table, input_schema)
                    .ok_or_else(|| DataFusionError::Plan(format!("{target} is read-only")))?;
                LogicalPlanBuilder::insert_into(
                    input,
                    reference,
                    provider_as_source(provider),
                    InsertOp::Append,
                )?
                .build()
            }
        },
    }
}

/// A file table whose write replaces its files (see `quiver_worker::write::replacing`).
#[derive(Debug)]
pub(super) struct Replacing {
    inner: Arc<dyn TableProvider>,
}

impl Replacing {
    pub(super) fn new(inner: Arc<dyn TableProvider>) -> Self {
        Self { inner }
    }
}

#[async_trait::async_trait]
impl TableProvider for Replacing {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        self.inner.table_type()
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
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self
            .inner
            .insert_into(state, input, InsertOp::Append)
            .await?;
        match plan.as_ref().downcast_ref::<DataSinkExec>() {
            Some(sink) => Ok(Arc::new(quiver_worker::write::replacing(sink)?)),
            None => Err(DataFusionError::NotImplemented(
                "replacing this table's rows".into(),
            )),
        }
    }
}

/// The ingested columns as the table's, by name (then ignoring case), cast to its
/// types; a table column the stream lacks is NULL, a stream column the table lacks an error.
fn conform(
    input: LogicalPlan,
    table: &SchemaRef,
    target: &ResolvedTableReference,
) -> Result<LogicalPlan> {
    let given = input.schema().as_arrow().clone();
    for f in given.fields() {
        if !table
            .fields()
            .iter()
            .any(|t| t.name().eq_ignore_ascii_case(f.name()))
        {
            return plan_err!("column {} is not in table {target}", f.name());
        }
    }
    let exprs: Vec<Expr> = table
        .fields()
        .iter()
        .map(|t| {
            let found = given
                .fields()
                .iter()
                .find(|f| f.name() == t.name())
                .or_else(|| {
                    given
                        .fields()
                        .iter()
                        .find(|f| f.name().eq_ignore_ascii_case(t.name()))
                });
            let value = match found {
                Some(f) => cast(
                    col(datafusion::common::Column::new_unqualified(f.name())),
                    t.data_type().clone(),
                ),
                None => cast(lit(ScalarValue::Null), t.data_type().clone()),
            };
            value.alias(t.name())
        })
        .collect();
    LogicalPlanBuilder::from(input).project(exprs)?.build()
}
