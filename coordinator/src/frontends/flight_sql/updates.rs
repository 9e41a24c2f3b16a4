//! Statements that change things, over Flight SQL's DoPut: `CommandStatementUpdate`
//! (and its prepared form) runs a write or a dataset command and answers with the
//! rows it wrote; `CommandStatementIngest` (ADBC's `adbc_ingest`) writes the
//! client's Arrow stream into a table (see `crate::writes::ingest`).

use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use datafusion::arrow::array::RecordBatch;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use quiver_worker::status::from_datafusion;
use tonic::Status;

use super::handles::QueryHandle;
use super::QuiverFlightSql;
use crate::frontends::run::{self, Caller};
use crate::writes::ingest::{IfExists, IngestRequest};

/// The rows a finished statement wrote: the sum of its `count` column, if it has one.
fn rows_written(batches: &[RecordBatch]) -> i64 {
    batches.iter().map(crate::writes::rows_written).sum::<u64>() as i64
}

impl QuiverFlightSql {
    /// Runs a statement to its end and answers with the rows it wrote.
    pub(super) async fn update(&self, handle: QueryHandle, caller: Caller) -> Result<i64, Status> {
        let session = self
            .engine
            .session(self.engine.access(caller.user.as_ref()));
        let tracked = run::begin(&self.engine, session, &caller, &handle.sql);
        let plan = self.plan(tracked.session(), &handle).await;
        let running = tracked.execute(plan).await?;
        let batches: Vec<RecordBatch> = running
            .batches
            .try_collect()
            .await
            .map_err(|e| from_datafusion(&e))?;
        Ok(rows_written(&batches))
    }

    /// Writes the client's stream into the table the command names.
    pub(super) async fn ingest(
        &self,
        command: CommandStatementIngest,
        stream: PeekableFlightDataStream,
        caller: Caller,
    ) -> Result<i64, Status> {
        let options = command.table_definition_options.unwrap_or_default();
        let create = match TableNotExistOption::try_from(options.if_not_exist) {
            Ok(TableNotExistOption::Create) => true,
            Ok(TableNotExistOption::Fail) => false,
            _ => {
                return Err(Status::invalid_argument(
                    "ingest: if_not_exist must be CREATE or FAIL",
                ))
            }
        };
        let if_exists = match TableExistsOption::try_from(options.if_exists) {
            Ok(TableExistsOption::Fail) => IfExists::Fail,
            Ok(TableExistsOption::Append) => IfExists::Append,
            Ok(TableExistsOption::Replace) => IfExists::Replace,
            _ => {
                return Err(Status::invalid_argument(
                    "ingest: if_exists must be FAIL, APPEND or REPLACE",
                ))
            }
        };
        if command.temporary {
            return Err(Status::invalid_argument(
                "ingest: temporary tables are not supported; every session shares one catalog",
            ));
        }
        if command.transaction_id.is_some() {
            return Err(Status::invalid_argument(
                "ingest: transactions are not supported; each ingest is its own transaction",
            ));
        }
        let request = IngestRequest {
            catalog: command.catalog,
            schema: command.schema,
            table: command.table,
            create,
            if_exists,
        };
        let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            stream.map_err(|s| FlightError::Tonic(Box::new(s))),
        );
        // The schema comes with the first message; a first batch read to learn it goes back in front.
        let first =
            batches.next().await.transpose().map_err(|e| {
                Status::invalid_argument(format!("ingest: cannot read the data: {e}"))
            })?;
        let schema = match (&first, batches.schema()) {
            (Some(b), _) => b.schema(),
            (None, Some(s)) => s.clone(),
            (None, None) => {
                return Err(Status::invalid_argument(
                    "ingest: the stream carries no schema",
                ))
            }
        };
        let rest = batches.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
        let data = futures::stream::iter(first.map(Ok)).chain(rest);
        let data = Box::pin(RecordBatchStreamAdapter::new(schema, data));
        let session = self
            .engine
            .session(self.engine.access(caller.user.as_ref()));
        let tracked = run::begin(&self.engine, session, &caller, &request.describe());
        let planned = tracked.session().plan_ingest(&request, data).await;
        let running = tracked.execute(planned).await?;
        let out: Vec<RecordBatch> = running
            .batches
            .try_collect()
            .await
            .map_err(|e| from_datafusion(&e))?;
        Ok(rows_written(&out))
    }
}
