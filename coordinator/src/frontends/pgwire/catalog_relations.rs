//! `pg_tables`, `pg_views` and `pg_matviews` as PostgreSQL has them: base tables
//! in the first, views (with their text) in the second. datafusion-pg-catalog
//! lists views among the tables and leaves `pg_views` empty, while dbt's relation
//! cache and SQLAlchemy's `get_view_names` read these to tell the kinds apart.
//!
//! Each is built when scanned, from the `information_schema` of the session that
//! scans it, so it lists exactly what that session sees (its temporary tables too).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

#[derive(Debug)]
pub struct Relations {
    sql: &'static str,
    schema: SchemaRef,
}

impl Relations {
    /// The table called `name`, if it is `pg_tables`, `pg_views` or `pg_matviews`.
    pub fn named(name: &str) -> Option<Self> {
        let text = |n: &str| Field::new(n, DataType::Utf8, true);
        let flag = |n: &str| Field::new(n, DataType::Boolean, true);
        let (sql, fields) = match name {
            "pg_tables" => (
                "SELECT table_schema, table_name, 'quiver' AS o, CAST(NULL AS VARCHAR) AS s, \
                 false AS a, false AS b, false AS c, false AS d \
                 FROM information_schema.tables WHERE table_type <> 'VIEW' \
                 ORDER BY table_schema, table_name",
                vec![
                    text("schemaname"),
                    text("tablename"),
                    text("tableowner"),
                    text("tablespace"),
                    flag("hasindexes"),
                    flag("hasrules"),
                    flag("hastriggers"),
                    flag("rowsecurity"),
                ],
            ),
            "pg_views" => (
                "SELECT t.table_schema, t.table_name, 'quiver' AS o, v.definition \
                 FROM information_schema.tables t LEFT JOIN information_schema.views v \
                 ON v.table_catalog = t.table_catalog AND v.table_schema = t.table_schema AND v.table_name = t.table_name \
                 WHERE t.table_type = 'VIEW' ORDER BY t.table_schema, t.table_name",
                vec![
                    text("schemaname"),
                    text("viewname"),
                    text("viewowner"),
                    text("definition"),
                ],
            ),
            // Quiver's materialized views are views with an accelerated copy; they are listed as views.
            "pg_matviews" => (
                "SELECT CAST(NULL AS VARCHAR) AS a, CAST(NULL AS VARCHAR) AS b, CAST(NULL AS VARCHAR) AS c, \
                 CAST(NULL AS VARCHAR) AS d, CAST(NULL AS BOOLEAN) AS e, CAST(NULL AS BOOLEAN) AS f, \
                 CAST(NULL AS VARCHAR) AS g WHERE false",
                vec![
                    text("schemaname"),
                    text("matviewname"),
                    text("matviewowner"),
                    text("tablespace"),
                    flag("hasindexes"),
                    flag("ispopulated"),
                    text("definition"),
                ],
            ),
            _ => return None,
        };
        Some(Self {
            sql,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

#[async_trait]
impl TableProvider for Relations {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        _: &[Expr],
        _: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = session
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("pg_catalog scanned outside a session".into())
            })?;
        let ctx = SessionContext::new_with_state(state.clone());
        let batches = ctx.sql(self.sql).await?.collect().await?;
        let batches = batches
            .into_iter()
            .map(|b| {
                let columns = b
                    .columns()
                    .iter()
                    .zip(self.schema.fields())
                    .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                RecordBatch::try_new(self.schema.clone(), columns)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
