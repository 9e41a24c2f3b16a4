//! Database tables that take writes (`writable = true` on a PostgreSQL or MySQL
//! source). Reads still go through federation; an `INSERT` plans a
//! [`DataSinkExec`] over [`DatabaseSink`], which hands the rows to the source's
//! [`TableWriter`] (binary COPY for PostgreSQL, batched INSERTs for MySQL), in one
//! transaction per statement.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{internal_err, not_impl_err};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::ExecutionPlan;

/// What a write does to the table first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Adds rows.
    Append,
    /// Empties the table, then adds rows (in the same transaction).
    Replace,
    /// Creates the table from the rows' schema, then adds them.
    Create,
}

/// Writes a stream of rows into one table of a database, all or nothing.
#[async_trait]
pub trait TableWriter: Send + Sync + fmt::Debug {
    /// Writes `data` (whose columns are named as the table's) into `table`; returns the rows written.
    async fn write(
        &self,
        table: &str,
        mode: WriteMode,
        schema: SchemaRef,
        data: SendableRecordBatchStream,
    ) -> Result<u64>;
}

/// `CREATE TABLE qualified (…)` for `schema`, with each Arrow type mapped by
/// `column_type` and names quoted by `quote`; the error names a column that has no type.
pub fn create_table_sql(
    qualified: &str,
    schema: &SchemaRef,
    column_type: impl Fn(&datafusion::arrow::datatypes::DataType) -> Option<String>,
    quote: impl Fn(&str) -> String,
    database: &str,
) -> std::result::Result<String, String> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match column_type(f.data_type()) {
            Some(ty) => Ok(format!("{} {ty}", quote(f.name()))),
            None => Err(format!(
                "column {} has type {}, which has no {database} type here",
                f.name(),
                f.data_type()
            )),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(format!("CREATE TABLE {qualified} ({})", columns.join(", ")))
}

/// A database table as the target of a write.
#[derive(Debug)]
pub struct WritableTable {
    /// `catalog.schema.table`, for messages.
    display: String,
    /// The table's name in the database.
    name: String,
    schema: SchemaRef,
    writer: Arc<dyn TableWriter>,
    /// True for a table that does not exist yet (`CREATE TABLE … AS`, ingest).
    create: bool,
    /// Called once a write succeeded (a new table makes the schema list its tables again).
    after: Option<AfterWrite>,
}

/// What to do after a successful write.
#[derive(Clone)]
pub struct AfterWrite(pub Arc<dyn Fn() + Send + Sync>);

impl fmt::Debug for AfterWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AfterWrite")
    }
}

impl WritableTable {
    pub fn new(
        display: String,
        name: String,
        schema: SchemaRef,
        writer: Arc<dyn TableWriter>,
        create: bool,
    ) -> Self {
        Self {
            display,
            name,
            schema,
            writer,
            create,
            after: None,
        }
    }

    /// Calls `after` once a write succeeded.
    pub fn with_after(mut self, after: AfterWrite) -> Self {
        self.after = Some(after);
        self
    }
}

#[async_trait]
impl TableProvider for WritableTable {
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
        // Reads are federated before they get here.
        internal_err!("{} is read through its database, not scanned", self.display)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mode = match (self.create, op) {
            (true, _) => WriteMode::Create,
            (false, InsertOp::Append) => WriteMode::Append,
            (false, InsertOp::Overwrite) => WriteMode::Replace,
            (false, InsertOp::Replace) => {
                return not_impl_err!(
                    "REPLACE INTO {} (rows by key) is not supported",
                    self.display
                )
            }
        };
        let sink = DatabaseSink {
            display: self.display.clone(),
            table: self.name.clone(),
            mode,
            schema: self.schema.clone(),
            writer: self.writer.clone(),
            after: self.after.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// The sink of a database write.
#[derive(Debug)]
pub struct DatabaseSink {
    display: String,
    table: String,
    mode: WriteMode,
    schema: SchemaRef,
    writer: Arc<dyn TableWriter>,
    after: Option<AfterWrite>,
}

impl DisplayAs for DatabaseSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DatabaseSink: table={}, mode={:?}",
            self.display, self.mode
        )
    }
}

#[async_trait]
impl DataSink for DatabaseSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let rows = self
            .writer
            .write(&self.table, self.mode, self.schema.clone(), data)
            .await?;
        if let Some(after) = &self.after {
            (after.0)();
        }
        Ok(rows)
    }
}
