//! Writes into lakehouse tables (`writable = true` on a Delta source): the table
//! providers that plan them.
//!
//! `INSERT` and `INSERT OVERWRITE` into a table, and `CREATE TABLE … AS` of a new
//! one, become write tasks on the workers and one commit on the coordinator
//! ([`super::delta_write`]). After a write, the next query reads the table's new
//! snapshot.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::plan_err;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use url::Url;

use super::delta_write::{file_schema, DeltaCommit, DeltaCommitExec, DeltaWriteExec, Mode};
use super::LakeSchema;

/// A writable table: reads as `inner`; writes become write tasks and a commit.
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
        let fail = |e: String| {
            DataFusionError::External(format!("Delta table {}: {e}", self.table).into())
        };
        let store = super::store_for(lake.runtime(), &self.handle)
            .map_err(fail)?
            .1;
        // The partition columns decide the files' folders and values.
        let table = deltalake_core::DeltaTableBuilder::from_url(self.handle.clone())
            .map_err(|e| fail(e.to_string()))?
            .with_storage_backend(store.clone(), self.handle.clone())
            .load()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let partitions = table
            .snapshot()
            .map_err(|e| fail(e.to_string()))?
            .metadata()
            .partition_columns()
            .to_vec();
        let commit = DeltaCommit {
            name: self.table.clone(),
            url: self.handle.clone(),
            store,
            schema: file_schema(&self.inner.schema()),
            mode,
            lake: self.lake.clone(),
        };
        Ok(write_plan(input, commit, partitions))
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
        plan_err!("{} is being created", self.name)
    }
    async fn insert_into(
        &self,
        _: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let commit = DeltaCommit {
            name: self.name.clone(),
            url: self.url.clone(),
            store: self.store.clone(),
            schema: file_schema(&self.schema),
            mode: Mode::Create,
            lake: self.lake.clone(),
        };
        Ok(write_plan(input, commit, vec![]))
    }
}

/// One write task per partition of `input`, then the commit.
fn write_plan(
    input: Arc<dyn ExecutionPlan>,
    commit: DeltaCommit,
    partition_columns: Vec<String>,
) -> Arc<dyn ExecutionPlan> {
    let write = DeltaWriteExec::new(
        input,
        commit.url.clone(),
        commit.schema.clone(),
        partition_columns,
    );
    Arc::new(DeltaCommitExec::new(Arc::new(write), Arc::new(commit)))
}
