//! How a statement runs through Flight SQL: planned with its bound parameters,
//! announced as a `FlightInfo` (its schema, one endpoint, or one per partition on
//! the workers with `workers.client_endpoints`), and streamed to the client.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use futures::{stream, TryStreamExt};
use quiver_worker::status::from_datafusion;
use tonic::{Request, Response, Status};

use super::actions::{refresh_schema, refresh_statement};
use super::handles::{decode_params, QueryHandle};
use super::requests::caller_of;
use super::results::{encode, flight_schema, relay};
use super::{parameter_types, DoGetStream, QuiverFlightSql};
use crate::engine::{Planned, QuerySession};
use crate::frontends::run::{self, Caller};

impl QuiverFlightSql {
    /// Plans a handle's SQL with its parameters bound, if any.
    pub(super) async fn plan(&self, session: &QuerySession, handle: &QueryHandle) -> Planned {
        let planned = session.plan(&handle.sql).await;
        let params = if handle.params.is_empty() && !handle.id.is_empty() {
            self.prepared.lock().get(&handle.id).cloned()
        } else {
            Some(handle.params.clone())
        };
        // An empty row means "nothing bound yet".
        let Some(params) = params.filter(|p| !p.is_empty()) else {
            return planned;
        };
        planned.bind(|plan| {
            let values = decode_params(&params, &parameter_types(&plan)?)?;
            session.bind(plan, values).map_err(|e| from_datafusion(&e))
        })
    }

    pub(super) async fn flight_info(
        &self,
        handle: &QueryHandle,
        ticket: Ticket,
        descriptor: FlightDescriptor,
        caller: Caller,
        query_id: Option<String>,
    ) -> Result<FlightInfo, Status> {
        let cached = (handle.is_plain() && !caller.no_cache)
            .then(|| {
                crate::cache::text_key(
                    caller.user_name(),
                    &handle.sql,
                    self.engine.datasets().generation(),
                )
            })
            .and_then(|k| self.engine.cache().peek_by_text(&k));
        let mut on_workers = None;
        let schema = match refresh_statement(&handle.sql) {
            Some(_) => refresh_schema(),
            // A statement answered from the cache is not planned again to learn its schema.
            None if cached.is_some() => flight_schema(
                cached.as_deref().unwrap_or(&Schema::empty()),
                handle.string_views,
            ),
            None => {
                // The client's query id, if it chose one: a query that fails here, or is
                // handed to the workers, is recorded under it.
                let session = self
                    .engine
                    .session_with_id(self.engine.access(caller.user.as_ref()), query_id);
                let planned = self.plan(&session, handle).await;
                match &planned.plan {
                    Ok(plan) => {
                        let schema = flight_schema(plan.schema().as_arrow(), handle.string_views);
                        // Workers serve endpoints in plain string types only.
                        if !handle.string_views {
                            on_workers = run::client_endpoints(
                                &self.engine,
                                session,
                                &caller,
                                &handle.sql,
                                &planned,
                            )
                            .await;
                        }
                        schema
                    }
                    Err(status) => {
                        // Most bad statements end here, before DoGet: keep them in system.queries.
                        return Err(run::begin(&self.engine, session, &caller, &handle.sql)
                            .fail(status.clone(), &planned.objects));
                    }
                }
            }
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?
            .with_descriptor(descriptor);
        // Otherwise the coordinator serves the one endpoint, over the same connection.
        Ok(info.with_endpoints(
            on_workers.unwrap_or_else(|| vec![FlightEndpoint::new().with_ticket(ticket)]),
        ))
    }

    /// Admits, plans and runs a query, streaming its batches to the client as they come.
    pub(super) async fn run(
        &self,
        handle: QueryHandle,
        caller: Caller,
        query_id: Option<String>,
    ) -> Result<Response<DoGetStream>, Status> {
        if let Some(target) = refresh_statement(&handle.sql) {
            self.require_admin(&caller, "REFRESH")?;
            return Self::batch_response(self.refresh(target.as_deref()).await);
        }
        let session = self
            .engine
            .session_with_id(self.engine.access(caller.user.as_ref()), query_id);
        let mut tracked = run::begin(&self.engine, session, &caller, &handle.sql);
        if handle.is_plain() {
            tracked = match tracked.by_text(&handle.sql).cached() {
                Ok(running) => {
                    return Ok(Response::new(encode(running.batches, handle.string_views)))
                }
                Err(t) => t,
            };
        }
        tracing::debug!(id = tracked.id(), sql = %handle.sql, "query starts");
        let plan = self.plan(tracked.session(), &handle).await;
        Ok(Response::new(
            match tracked
                .execute_for_flight(plan, handle.string_views)
                .await?
            {
                run::Output::Batches(running) => encode(running.batches, handle.string_views),
                run::Output::Relayed(relayed) => relay(relayed),
            },
        ))
    }

    /// The catalogs as the caller may see them.
    pub(super) fn metadata_context<T>(
        &self,
        request: &Request<T>,
    ) -> datafusion::prelude::SessionContext {
        self.engine
            .metadata_context(self.engine.access(caller_of(request).user.as_ref()))
    }

    pub(super) fn batch_response(
        batch: Result<RecordBatch, Status>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = batch?;
        let schema = batch.schema();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(stream::once(async { Ok(batch) }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }
}
