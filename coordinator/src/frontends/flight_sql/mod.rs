//! The client endpoint: an Arrow Flight SQL service over the query engine.

mod actions;
mod handles;
mod metadata;
mod results;
mod updates;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::logical_expr::LogicalPlan;
use futures::{stream, Stream, TryStreamExt};
use prost::Message;
use quiver_worker::status::from_datafusion;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

pub use crate::security::authn::{Authenticator, User};
pub use actions::ACTION_PROGRESS;
use actions::{refresh_schema, refresh_statement};
use handles::{decode_params, encode_params, QueryHandle};
use results::{encode, flight_schema};

use crate::engine::{Planned, QueryEngine, QuerySession};
use crate::frontends::run::{self, Caller};
use crate::security::access::TableName;

type DoGetStream = <QuiverFlightSql as FlightService>::DoGetStream;

pub struct QuiverFlightSql {
    engine: Arc<QueryEngine>,
    auth: Option<Authenticator>,
    /// Prepared statement id -> its bound parameter row, for clients that keep
    /// using the original handle after binding.
    prepared: Mutex<HashMap<String, Vec<u8>>>,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
}

impl QuiverFlightSql {
    pub fn new(engine: Arc<QueryEngine>, auth: Option<Authenticator>) -> Result<Self, Status> {
        Ok(Self {
            engine,
            auth,
            prepared: Mutex::default(),
            sql_info: metadata::sql_info()?,
            xdbc: metadata::xdbc_type_info()?,
        })
    }

    /// Plans a handle's SQL with its parameters bound, if any.
    async fn plan(&self, session: &QuerySession, handle: &QueryHandle) -> Planned {
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

    async fn flight_info(
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
    async fn run(
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
        let running = tracked.execute(plan).await?;
        Ok(Response::new(encode(running.batches, handle.string_views)))
    }

    /// The catalogs as the caller may see them.
    fn metadata_context<T>(&self, request: &Request<T>) -> datafusion::prelude::SessionContext {
        self.engine
            .metadata_context(self.engine.access(caller_of(request).user.as_ref()))
    }

    fn batch_response(batch: Result<RecordBatch, Status>) -> Result<Response<DoGetStream>, Status> {
        let batch = batch?;
        let schema = batch.schema();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(stream::once(async { Ok(batch) }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The inferred type of each positional parameter `$1..$n` (None where unknown).
fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, Status> {
    crate::placeholders::positional_types(plan).map_err(|e| from_datafusion(&e))
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| {
            Status::internal(format!("cannot encode schema: {e}"))
        })?;
    Ok(bytes)
}

fn metadata_info(
    schema: &SchemaRef,
    command: impl ProstMessageExt,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// The request header with which a client asks for results with string and binary
/// views (`Utf8View`, `BinaryView`) as DataFusion makes them, rather than `Utf8`.
pub const STRING_VIEWS_HEADER: &str = "x-quiver-string-views";

/// Whether the request carries [`STRING_VIEWS_HEADER`] set to `true`/`on`/`1`.
fn string_views<T>(request: &Request<T>) -> bool {
    request
        .metadata()
        .get(STRING_VIEWS_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "true" | "on" | "1" | "yes"
            )
        })
}

/// Who is calling, from a request the authenticator let through.
fn caller_of<T>(request: &Request<T>) -> Caller {
    let no_cache = run::cache_off(
        request
            .metadata()
            .get(run::CACHE_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    Caller {
        user: request.extensions().get::<User>().cloned(),
        client: request.remote_addr().map(|a| a.to_string()),
        no_cache,
    }
}

/// The query id a client chose (`x-quiver-query-id`, a UUID), so it can follow the
/// query's progress in `system.queries` while it waits for the result.
fn chosen_query_id<T>(request: &Request<T>) -> Option<String> {
    let value = request.metadata().get(QUERY_ID_HEADER)?.to_str().ok()?;
    uuid::Uuid::parse_str(value).ok().map(|u| u.to_string())
}

/// The header a client names its query's id in.
pub const QUERY_ID_HEADER: &str = "x-quiver-query-id";

#[tonic::async_trait]
impl FlightSqlService for QuiverFlightSql {
    type FlightService = QuiverFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = match &self.auth {
            None => String::new(),
            Some(auth) => {
                let user = caller_of(&request)
                    .user
                    .ok_or_else(|| Status::unauthenticated("handshake needs Basic credentials"))?;
                auth.issue(&user)?
            }
        };
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(stream::iter([Ok(reply)])));
        if !token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("cannot encode token"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = QueryHandle {
            id: String::new(),
            sql: query.query,
            params: vec![],
            string_views: string_views(&request),
        };
        let ticket = TicketStatementQuery {
            statement_handle: handle.to_bytes(),
        };
        let ticket = Ticket::new(ticket.as_any().encode_to_vec());
        let (caller, id) = (caller_of(&request), chosen_query_id(&request));
        Ok(Response::new(
            self.flight_info(&handle, ticket, request.into_inner(), caller, id)
                .await?,
        ))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = QueryHandle::from_bytes(&cmd.prepared_statement_handle)?;
        let ticket = Ticket::new(cmd.as_any().encode_to_vec());
        let (caller, id) = (caller_of(&request), chosen_query_id(&request));
        Ok(Response::new(
            self.flight_info(&handle, ticket, request.into_inner(), caller, id)
                .await?,
        ))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.run(
            QueryHandle::from_bytes(&ticket.statement_handle)?,
            caller_of(&request),
            chosen_query_id(&request),
        )
        .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.run(
            QueryHandle::from_bytes(&query.prepared_statement_handle)?,
            caller_of(&request),
            chosen_query_id(&request),
        )
        .await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = self
            .engine
            .session(self.engine.access(caller_of(&request).user.as_ref()));
        let plan = session.plan(&query.query).await.plan?;
        let parameters: Vec<Field> = parameter_types(&plan)?
            .into_iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("${}", i + 1), t.unwrap_or(DataType::Null), true))
            .collect();
        let id = uuid::Uuid::new_v4().to_string();
        self.prepared.lock().insert(id.clone(), vec![]);
        let handle = QueryHandle {
            id,
            sql: query.query,
            params: vec![],
            string_views: string_views(&request),
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.to_bytes(),
            dataset_schema: schema_bytes(&flight_schema(
                plan.schema().as_arrow(),
                handle.string_views,
            ))?,
            parameter_schema: schema_bytes(&Schema::new(parameters))?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut handle = QueryHandle::from_bytes(&query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request
                    .into_inner()
                    .map_err(|s| FlightError::Tonic(Box::new(s))),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read parameters: {e}")))?;
        let batch = match batches.as_slice() {
            [b] => b,
            [] => return Err(Status::invalid_argument("no parameters were sent")),
            _ => {
                return Err(Status::invalid_argument(
                    "parameters must come as one batch of one row",
                ))
            }
        };
        handle.params = encode_params(batch)?;
        if !handle.id.is_empty() {
            let mut prepared = self.prepared.lock();
            if let Some(slot) = prepared.get_mut(&handle.id) {
                *slot = handle.params.clone();
            }
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.to_bytes()),
        })
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = caller_of(&request);
        self.update(
            QueryHandle {
                id: String::new(),
                sql: command.query,
                params: vec![],
                string_views: false,
            },
            caller,
        )
        .await
    }

    async fn do_put_prepared_statement_update(
        &self,
        command: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = caller_of(&request);
        let mut handle = QueryHandle::from_bytes(&command.prepared_statement_handle)?;
        // Parameters, if any, come as one batch of one row.
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request
                    .into_inner()
                    .map_err(|s| FlightError::Tonic(Box::new(s))),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read parameters: {e}")))?;
        match batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] => {}
            [b] if b.num_rows() == 1 => handle.params = encode_params(b)?,
            _ => {
                return Err(Status::invalid_argument(
                    "parameters of an update must come as one row; run it once per row",
                ))
            }
        }
        self.update(handle, caller).await
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = caller_of(&request);
        self.ingest(command, request.into_inner(), caller).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let handle = QueryHandle::from_bytes(&query.prepared_statement_handle)?;
        self.prepared.lock().remove(&handle.id);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&metadata::catalogs_schema(), query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Self::batch_response(metadata::catalogs(&self.metadata_context(&request), query))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Self::batch_response(metadata::db_schemas(
            &self.metadata_context(&request),
            query,
        ))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Self::batch_response(
            metadata::tables(
                &self.metadata_context(&request),
                query,
                string_views(&request),
            )
            .await,
        )
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut b = query.into_builder();
        for t in ["LOCAL TEMPORARY", "TABLE", "VIEW"] {
            b.append(t);
        }
        Self::batch_response(b.build().map_err(|e| Status::internal(e.to_string())))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&self.sql_info.schema(), query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Self::batch_response(
            query
                .into_builder(&self.sql_info)
                .build()
                .map_err(|e| Status::internal(e.to_string())),
        )
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&self.xdbc.schema(), query, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Self::batch_response(
            query
                .into_builder(&self.xdbc)
                .build()
                .map_err(|e| Status::internal(e.to_string())),
        )
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(
            &metadata::primary_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let access = self.engine.access(caller_of(&request).user.as_ref());
        let mut keys = self.engine.primary_keys(
            query.catalog.as_deref(),
            query.db_schema.as_deref(),
            &query.table,
        );
        keys.retain(|(catalog, schema, table, _)| {
            access.decide(TableName {
                catalog,
                schema,
                table,
            }) != crate::security::access::Decision::Deny
        });
        Self::batch_response(metadata::primary_keys(keys))
    }

    async fn do_action_fallback(
        &self,
        request: Request<arrow_flight::Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        self.action(request).await
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<arrow_flight::ActionType, Status>>> {
        Some(actions::custom_actions())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
