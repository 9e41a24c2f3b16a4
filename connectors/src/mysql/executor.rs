//! Runs the SQL that federation pushes down to MySQL/MariaDB and streams the rows
//! back over the binary protocol.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::unparser::dialect::{Dialect, MySqlDialect};
use datafusion_federation::sql::{AstAnalyzer, SQLExecutor};
use futures::TryStreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use tokio_stream::wrappers::ReceiverStream;

use super::types::{append, MyKind};

const BATCH_ROWS: usize = 8192;

pub struct MySqlExecutor {
    pub(crate) source: String,
    pub(crate) context: String,
    pub(crate) database: String,
    pub(crate) pool: Pool,
    /// Getting a connection longer than this fails the statement as unreachable.
    pub(crate) connect_timeout: std::time::Duration,
}

#[async_trait]
impl SQLExecutor for MySqlExecutor {
    fn name(&self) -> &str {
        &self.source
    }

    fn compute_context(&self) -> Option<String> {
        Some(self.context.clone())
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(MySqlDialect {})
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        Some(Box::new(crate::sql_fixups::repair_statement))
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<SendableRecordBatchStream> {
        let (pool, query, source) = (self.pool.clone(), query.to_string(), self.source.clone());
        let connect_timeout = self.connect_timeout;
        tracing::debug!(source = %source, sql = %query, "pushing down");
        // The result set borrows its connection, so a task owns both and hands the
        // batches over a small channel: the database is read only as fast as the
        // plan consumes, and a dropped query drops the channel and stops the task.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        tokio::spawn(async move {
            let err = |what: &str, e: &dyn std::fmt::Display| {
                DataFusionError::External(format!("source '{source}' (mysql): {what}: {e}").into())
            };
            let run = async {
                let mut conn = match tokio::time::timeout(connect_timeout, pool.get_conn()).await {
                    Ok(conn) => conn.map_err(|e| {
                        crate::Unreachable::error(&source, "mysql", &crate::error_chain(&e))
                    })?,
                    Err(_) => {
                        return Err(crate::Unreachable::error(
                            &source,
                            "mysql",
                            &format!("no connection within {connect_timeout:?}"),
                        ))
                    }
                };
                let mut result = conn
                    .exec_iter(query.as_str(), ())
                    .await
                    .map_err(|e| err("query failed", &e))?;
                let kinds: Vec<MyKind> = result.columns_ref().iter().map(MyKind::of).collect();
                let wire = Arc::new(Schema::new(
                    kinds
                        .iter()
                        .enumerate()
                        .map(|(i, k)| Field::new(format!("c{i}"), k.arrow_type(), true))
                        .collect::<Vec<_>>(),
                ));
                let mut builders: Vec<_> = kinds.iter().map(|k| k.builder(BATCH_ROWS)).collect();
                let mut rows = 0;
                while let Some(row) = result.next().await.map_err(|e| err("query failed", &e))? {
                    for (i, value) in row.unwrap_raw().iter().enumerate() {
                        if let (Some(b), Some(k)) = (builders.get_mut(i), kinds.get(i)) {
                            let value = value.as_ref().unwrap_or(&mysql_async::Value::NULL);
                            append(b.as_mut(), k, value)
                                .map_err(|e| err(&format!("column {i}"), &e))?;
                        }
                    }
                    rows += 1;
                    if rows == BATCH_ROWS {
                        rows = 0;
                        let columns: Vec<ArrayRef> =
                            builders.iter_mut().map(|b| b.finish()).collect();
                        if tx
                            .send(Ok(RecordBatch::try_new(wire.clone(), columns)?))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                }
                if rows > 0 {
                    let columns: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
                    let _ = tx.send(Ok(RecordBatch::try_new(wire, columns)?)).await;
                }
                Ok::<(), DataFusionError>(())
            };
            if let Err(e) = run.await {
                let _ = tx.send(Err(e)).await;
            }
        });
        let target = schema.clone();
        let stream = ReceiverStream::new(rx).and_then(move |batch| {
            let target = target.clone();
            async move { crate::remote_schema::cast_to(batch, &target) }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        Err(DataFusionError::Plan(
            "tables come from Quiver's discovery".into(),
        ))
    }

    async fn get_table_schema(&self, table: &str) -> Result<SchemaRef> {
        plan_err!("no schema known for {table}")
    }
}
