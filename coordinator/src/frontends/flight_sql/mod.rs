//! The client endpoint: an Arrow Flight SQL service over the query engine.

mod actions;
mod handles;
mod metadata;
mod requests;
mod results;
mod statements;
mod updates;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

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

pub use crate::security::authn::Authenticator;
pub use actions::ACTION_PROGRESS;
use handles::{encode_params, QueryHandle};
pub use requests::QUERY_ID_HEADER;
use requests::{caller_of, chosen_query_id, string_views};
use results::flight_schema;

use crate::engine::QueryEngine;
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
