//! Sends the statements federation pushes down to a Flight SQL service and
//! streams the answer's endpoints back.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::unparser::dialect::{
    Dialect, DuckDBDialect, MySqlDialect, PostgreSqlDialect, SqliteDialect,
};
use datafusion_federation::sql::{AstAnalyzer, SQLExecutor};
use futures::{StreamExt, TryStreamExt};

use super::remote::Remote;
use crate::config::{FlightSqlSource, SqlDialect};
use crate::ConnectorError;

/// The executor that sends statements to one service.
pub fn executor(source: &str, cfg: &FlightSqlSource) -> Result<FlightSqlExecutor, ConnectorError> {
    let remote = Remote::new(source, cfg).map_err(|message| ConnectorError::Source {
        source_name: source.to_string(),
        message,
    })?;
    Ok(FlightSqlExecutor {
        context: format!(
            "flightsql://{}/{}",
            cfg.url,
            cfg.remote_catalog.as_deref().unwrap_or_default()
        ),
        dialect: cfg.dialect,
        remote,
    })
}

/// Standard SQL with every identifier double-quoted.
struct Generic;

impl Dialect for Generic {
    fn identifier_quote_style(&self, _: &str) -> Option<char> {
        Some('"')
    }
}

pub struct FlightSqlExecutor {
    context: String,
    dialect: SqlDialect,
    pub(super) remote: Remote,
}

#[async_trait]
impl SQLExecutor for FlightSqlExecutor {
    fn name(&self) -> &str {
        &self.remote.source
    }

    fn compute_context(&self) -> Option<String> {
        Some(self.context.clone())
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        match self.dialect {
            SqlDialect::Generic => Arc::new(Generic),
            SqlDialect::Postgres => Arc::new(PostgreSqlDialect {}),
            SqlDialect::Mysql => Arc::new(MySqlDialect {}),
            SqlDialect::Sqlite => Arc::new(SqliteDialect {}),
            SqlDialect::Duckdb => Arc::new(DuckDBDialect::new()),
        }
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
        let (remote, query) = (self.remote.clone(), query.to_string());
        tracing::debug!(source = %remote.source, sql = %query, "pushing down");
        let open = async move {
            // The slot is held until the last endpoint is read.
            let permit = remote.permit().await?;
            let info = remote
                .call("query failed", |mut c| {
                    let q = query.clone();
                    async move { c.execute(q, None).await }
                })
                .await?;
            let rows = remote.read(info).await?;
            Ok::<_, DataFusionError>(rows.map(move |b| {
                let _held = &permit;
                b
            }))
        };
        let target = schema.clone();
        let stream = futures::stream::once(open)
            .try_flatten()
            .and_then(move |batch| {
                let target = target.clone();
                async move { crate::remote_schema::cast_to(batch, &target) }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        plan_err!("tables come from Quiver's discovery")
    }

    async fn get_table_schema(&self, table: &str) -> Result<SchemaRef> {
        plan_err!("no schema known for {table}")
    }
}
