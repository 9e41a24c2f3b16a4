//! Runs the SQL that federation pushes down to PostgreSQL and streams the rows
//! back through binary COPY.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::unparser::dialect::{Dialect, PostgreSqlDialect};
use datafusion_federation::sql::{AstAnalyzer, SQLExecutor};
use deadpool_postgres::Pool;
use futures::{stream, StreamExt, TryStreamExt};

use super::copy::CopyDecoder;
use super::types::PgKind;

const BATCH_ROWS: usize = 8192;

/// One PostgreSQL database: every table of it shares this executor, so joins
/// between them are pushed down together.
pub struct PostgresExecutor {
    pub(crate) source: String,
    /// Identity for federation: tables with the same context run in one statement.
    pub(crate) context: String,
    pub(crate) pool: Pool,
}

impl PostgresExecutor {
    fn error(&self, what: &str, e: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::External(
            format!("source '{}' (postgres): {what}: {e}", self.source).into(),
        )
    }
}

#[async_trait]
impl SQLExecutor for PostgresExecutor {
    fn name(&self) -> &str {
        &self.source
    }

    fn compute_context(&self) -> Option<String> {
        Some(self.context.clone())
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(PostgreSqlDialect {})
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
        let pool = self.pool.clone();
        let query = query.to_string();
        let source = self.source.clone();
        let unreachable_source = source.to_string();
        let err = move |what: &str, e: &dyn std::fmt::Display| {
            DataFusionError::External(format!("source '{source}' (postgres): {what}: {e}").into())
        };
        let pg_err = {
            let err = err.clone();
            move |what: &str, e: &tokio_postgres::Error| match e.as_db_error() {
                // The server's own message ("relation ... does not exist", ...).
                Some(db) => err(what, &format!("{} ({})", db.message(), db.code().code())),
                None => err(what, e),
            }
        };
        tracing::debug!(source = %self.source, sql = %query, "pushing down");
        let open = async move {
            let client = pool.get().await.map_err(|e| {
                crate::Unreachable::error(&unreachable_source, "postgres", &crate::error_chain(&e))
            })?;
            // Prepare only to learn the result types, which binary COPY does not carry.
            let statement = client
                .prepare(&query)
                .await
                .map_err(|e| pg_err("query failed", &e))?;
            let mut kinds = vec![];
            let mut casts = vec![];
            for (i, c) in statement.columns().iter().enumerate() {
                match PgKind::of(c.type_(), c.type_modifier()) {
                    Some(k) => {
                        casts.push(format!("q.c{i}"));
                        kinds.push(k);
                    }
                    None => {
                        // No binary decoder for this type: PostgreSQL renders it as text.
                        tracing::warn!(column = c.name(), pg_type = %c.type_(), "unsupported type read as text");
                        casts.push(format!("q.c{i}::text"));
                        kinds.push(PgKind::Text);
                    }
                }
            }
            let aliases: Vec<String> = (0..kinds.len()).map(|i| format!("c{i}")).collect();
            // Positional aliases let us cast columns whatever their names (even duplicates).
            let copy = if kinds.is_empty() {
                format!("COPY ({query}) TO STDOUT (FORMAT BINARY)")
            } else {
                format!(
                    "COPY (SELECT {} FROM ({query}) AS q({})) TO STDOUT (FORMAT BINARY)",
                    casts.join(", "),
                    aliases.join(", ")
                )
            };
            let wire_schema = Arc::new(Schema::new(
                kinds
                    .iter()
                    .zip(&aliases)
                    .map(|(k, a)| Field::new(a, k.arrow_type(), true))
                    .collect::<Vec<_>>(),
            ));
            let rows = client
                .copy_out(copy.as_str())
                .await
                .map_err(|e| pg_err("query failed", &e))?;
            let decoder = CopyDecoder::new(wire_schema, kinds, BATCH_ROWS);
            // The pooled client travels with the stream, so the connection stays
            // checked out until the last row is read.
            let batches = stream::unfold(
                (
                    Box::pin(rows),
                    decoder,
                    client,
                    Vec::new().into_iter(),
                    false,
                ),
                move |(mut rows, mut decoder, client, mut ready, done)| {
                    let (err, pg_err) = (err.clone(), pg_err.clone());
                    async move {
                        loop {
                            if let Some(b) = ready.next() {
                                return Some((Ok(b), (rows, decoder, client, ready, done)));
                            }
                            if done {
                                return None;
                            }
                            match rows.next().await {
                                Some(Ok(chunk)) => match decoder.push(&chunk) {
                                    Ok(b) => ready = b.into_iter(),
                                    Err(e) => {
                                        return Some((
                                            Err(err("bad COPY data", &e)),
                                            (rows, decoder, client, ready, true),
                                        ))
                                    }
                                },
                                Some(Err(e)) => {
                                    return Some((
                                        Err(pg_err("query failed", &e)),
                                        (rows, decoder, client, ready, true),
                                    ))
                                }
                                None => match decoder.finish() {
                                    Ok(last) => {
                                        ready = last.into_iter().collect::<Vec<_>>().into_iter();
                                        return ready.next().map(|b| {
                                            (Ok(b), (rows, decoder, client, ready, true))
                                        });
                                    }
                                    Err(e) => {
                                        return Some((
                                            Err(err("bad COPY data", &e)),
                                            (rows, decoder, client, ready, true),
                                        ))
                                    }
                                },
                            }
                        }
                    }
                },
            );
            Ok::<_, DataFusionError>(batches)
        };
        let target = schema.clone();
        let stream = stream::once(open).try_flatten().and_then(move |batch| {
            let target = target.clone();
            async move { crate::remote_schema::cast_to(batch, &target) }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        Err(self.error("table listing", "tables come from Quiver's discovery"))
    }

    async fn get_table_schema(&self, table: &str) -> Result<SchemaRef> {
        Err(self.error("schema lookup", format!("no schema known for {table}")))
    }
}
