//! The PostgreSQL wire protocol (v3) over the same engine, on `server.postgres_listen`:
//! simple and extended queries (prepared statements with `$n` parameters), login
//! against the same users ([`auth`]), TLS with the server's certificate, cancel
//! requests, `pg_catalog` for clients that introspect ([`catalog`]) and SQLSTATEs
//! ([`errors`]). Statements are parsed with PostgreSQL's dialect and the rewrites
//! `datafusion-pg-catalog` applies for psql's and drivers' catalog queries.
//!
//! Values are encoded by `arrow-pg` (Arrow type to PostgreSQL type: see
//! docs/clients.md). Writes (`INSERT`, `CREATE TABLE … AS`, `COPY … TO '…'`,
//! `DROP TABLE`, temporary tables) answer with PostgreSQL's command tags and row
//! counts; `COPY … TO STDOUT` streams rows in the COPY format ([`copy_out`]).
//! `SET`, `RESET` and `SHOW` work on the connection's settings ([`settings`]:
//! `search_path` moves where unqualified names resolve); `BEGIN`, `COMMIT`,
//! `ROLLBACK`, `DISCARD` and `DEALLOCATE` are accepted (each write commits on its
//! own, see [`session`]). Every statement takes the path of
//! `crate::engine::statement`.

mod auth;
mod catalog;
mod catalog_relations;
mod catalog_types;
mod compat;
mod copy_out;
mod errors;
mod listener;
mod parameters;
mod protocol;
mod session;
mod settings;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::Schema;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;
use futures::{StreamExt, TryStreamExt};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::Format;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::types::format::FormatOptions;
use quiver_worker::status::from_datafusion;
use tonic::Status;

use crate::engine::QueryEngine;
use crate::frontends::run::{self, Caller};
use crate::security::access::UserAccess;
use crate::security::authn::Authenticator;
use parameters::parameter_types;
use session::SessionCommand;

pub use listener::{serve, tls_acceptor};

/// One logged-in connection.
pub struct Connection {
    caller: Caller,
    access: Arc<UserAccess>,
    /// The user's catalogs with `pg_catalog`.
    state: SessionState,
    /// What `SET` changed: the search path, the cache, ...
    settings: Arc<settings::Settings>,
    /// The id of the query it runs now, for cancel requests.
    current: Mutex<Option<String>>,
}

impl Connection {
    /// Who runs the next statement, with the session's cache setting.
    fn caller(&self) -> Caller {
        // A statement's text may mean another table once the session has temporary ones.
        Caller {
            no_cache: self.settings.cache_off() || crate::writes::temporary::any(&self.state),
            ..self.caller.clone()
        }
    }

    /// The state the next statement plans on: unqualified names resolve in the
    /// schema `search_path` chose.
    fn state(&self) -> SessionState {
        let schema = self.settings.current_schema();
        let mut state = self.state.clone();
        if state.config().options().catalog.default_schema != schema {
            state.config_mut().options_mut().catalog.default_schema = schema;
        }
        state
    }
}

/// A connection's cancel key: its process id and secret, as BackendKeyData sent them.
type CancelKey = (i32, Vec<u8>);

/// What every connection shares.
pub struct Frontend {
    engine: Arc<QueryEngine>,
    auth: Option<Authenticator>,
    /// Logged-in connections by (pid, secret key), for cancel requests.
    connections: Mutex<HashMap<CancelKey, Arc<Connection>>>,
    /// pgwire's own cancel signals (they interrupt a query still planning).
    manager: Arc<ConnectionManager>,
    parser: datafusion_pg_catalog::sql::PostgresCompatibilityParser,
    /// With TLS configured, plaintext connections are refused.
    require_tls: bool,
}

/// Removes a connection from the cancel registry when it closes.
struct Registration {
    frontend: Arc<Frontend>,
    key: (i32, Vec<u8>),
    _pgwire: pgwire::api::ConnectionGuard,
}

impl Drop for Registration {
    fn drop(&mut self) {
        {
            let mut c = self.frontend.connections.lock();
            c.remove(&self.key);
        }
    }
}

impl Frontend {
    fn register(
        self: &Arc<Self>,
        pid: i32,
        secret: &pgwire::messages::startup::SecretKey,
        c: Arc<Connection>,
    ) -> Registration {
        let key = (pid, secret.to_bytes().to_vec());
        {
            let mut map = self.connections.lock();
            map.insert(key.clone(), c);
        }
        let (_handle, guard) = self.manager.register(pid, secret.clone());
        Registration {
            frontend: self.clone(),
            key,
            _pgwire: guard,
        }
    }
}

struct Handlers {
    startup: Arc<auth::Startup>,
    queries: Arc<Queries>,
    cancel: Arc<Cancel>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        tracing::debug!(client = %client.socket_addr(), %error, "PostgreSQL error sent");
    }
}

struct Cancel {
    frontend: Arc<Frontend>,
}

#[async_trait]
impl CancelHandler for Cancel {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let connection = self.frontend.connections.lock().get(&key).cloned();
        let Some(connection) = connection else { return };
        // A query already streaming rows stops through its cancel signal; one still
        // planning or waiting for its first batch through pgwire's.
        let id = connection.current.lock().clone();
        if let Some(id) = id {
            tracing::info!(query = %id, "query cancelled by the PostgreSQL client");
            self.frontend.engine.queries().cancel(&id);
        }
        self.frontend
            .manager
            .cancel(request.pid, &request.secret_key)
            .await;
    }
}

/// A parsed statement of the extended protocol.
#[derive(Clone, Debug)]
pub enum Parsed {
    /// A session statement (`SET`, `BEGIN`, `SHOW`, ...), answered here.
    Session(SessionCommand),
    /// A query, with the types and columns planning gave it (for Describe).
    Query {
        sql: String,
        statement: Box<Statement>,
        parameters: Vec<Type>,
        fields: Arc<Schema>,
    },
    /// `COPY … TO STDOUT`: rows in a COPY format, no row description.
    Copy {
        sql: String,
        copy: Box<copy_out::CopyOut>,
    },
}

/// What an empty portal holds (pgwire builds portals from a default).
impl Default for Parsed {
    fn default() -> Self {
        Parsed::Session(SessionCommand::SetOther)
    }
}

struct Queries {
    frontend: Arc<Frontend>,
}

fn connection_of<C: ClientInfo>(client: &C) -> PgWireResult<Arc<Connection>> {
    client
        .session_extensions()
        .get::<Arc<Connection>>()
        .map(|c| (*c).clone())
        .ok_or_else(|| errors::user_error("28000", "the connection has not logged in"))
}

impl Queries {
    fn engine(&self) -> &QueryEngine {
        &self.frontend.engine
    }

    /// Prepares the text as every door does (`crate::engine::statement::prepare`),
    /// then parses it with PostgreSQL's dialect and the client-compatibility
    /// rewrites; a syntax error comes from the plain parser, which knows where it is.
    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        let prepared = self
            .frontend
            .engine
            .prepare(sql)
            .map_err(|e| errors::to_pg(&from_datafusion(&e), Some(sql)))?;
        let original = sql;
        let sql: &str = &prepared;
        let mut statements = self.frontend.parser.parse(sql).map_err(|_| {
            if copy_out::is_copy_to_file(original) {
                return copy_out::to_file_refused();
            }
            // The position is the one in the text the client sent.
            let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
            let message =
                match datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, original) {
                    Err(e) => format!("SQL error: {e}"),
                    Ok(_) => "SQL error: the statement cannot be parsed".to_string(),
                };
            errors::to_pg(
                &quiver_worker::status::ErrorKind::SyntaxError.status(message),
                Some(original),
            )
        })?;
        statements.iter_mut().for_each(compat::rewrite);
        Ok(statements)
    }

    /// Plans `statement` for `connection` in a throwaway session (for Describe).
    /// A statement that does not plan is recorded in `system.queries` (and the
    /// audit log) as failed, as when it is executed.
    async fn describe(
        &self,
        connection: &Connection,
        sql: &str,
        statement: &Statement,
    ) -> PgWireResult<(Vec<Type>, Arc<Schema>)> {
        let session = self
            .engine()
            .planning_session_on(connection.access.clone(), &connection.state());
        let planned = session
            .plan_statement(datafusion::sql::parser::Statement::Statement(Box::new(
                statement.clone(),
            )))
            .await;
        let write = planned.is_write();
        let plan = match planned.plan {
            Ok(p) => p,
            Err(status) => {
                let status = run::begin(self.engine(), session, &connection.caller, sql)
                    .fail(status, &planned.objects);
                return Err(errors::to_pg(&status, Some(sql)));
            }
        };
        let declared = compat::oid_parameters(statement);
        let parameters = parameter_types(&plan)?
            .iter()
            .enumerate()
            .map(|(i, t)| match declared.get(&(i + 1)) {
                Some(oid_type) => oid_type.clone(),
                None => t
                    .as_ref()
                    .map(|t| arrow_pg::datatypes::into_pg_type(t).unwrap_or(Type::UNKNOWN))
                    .unwrap_or(Type::UNKNOWN),
            })
            .collect();
        if write {
            // A write answers with a command tag, as in PostgreSQL, not with rows.
            return Ok((parameters, Arc::new(Schema::empty())));
        }
        Ok((
            parameters,
            Arc::new(quiver_proto::client_types::flight_schema(
                plan.schema().as_arrow(),
            )),
        ))
    }

    /// Runs a query and answers with its rows as they come.
    async fn query(
        &self,
        connection: &Arc<Connection>,
        sql: &str,
        statement: Statement,
        bind: impl FnOnce(&LogicalPlan) -> PgWireResult<Option<datafusion::common::ParamValues>>,
        format: &Format,
        options: Arc<FormatOptions>,
    ) -> PgWireResult<Response> {
        let engine = self.engine();
        let tag = write_tag(&statement);
        let session = engine.session_on(connection.access.clone(), &connection.state());
        let tracked = run::begin(engine, session, &connection.caller(), sql);
        let planned = tracked
            .session()
            .plan_statement(datafusion::sql::parser::Statement::Statement(Box::new(
                statement,
            )))
            .await;
        let mut bind_error = None;
        let planned = planned.bind(|plan| match bind(&plan) {
            Ok(None) => Ok(plan),
            Ok(Some(values)) => tracked
                .session()
                .bind(plan, values)
                .map_err(|e| from_datafusion(&e)),
            Err(e) => {
                bind_error = Some(e);
                Err(Status::invalid_argument("invalid parameters"))
            }
        });
        *connection.current.lock() = Some(tracked.id().to_string());
        let write = planned.is_write();
        let running = match tracked.execute(planned).await {
            Ok(r) => r,
            Err(status) => {
                return Err(bind_error.unwrap_or_else(|| errors::to_pg(&status, Some(sql))))
            }
        };
        if let (true, Some(tag)) = (write, tag) {
            let batches: Vec<_> = running
                .batches
                .try_collect()
                .await
                .map_err(|e| errors::to_pg(&from_datafusion(&e), Some(sql)))?;
            let rows = batches.iter().map(crate::writes::rows_written).sum::<u64>() as usize;
            return Ok(Response::Execution(tag.with_rows(rows)));
        }
        let schema = quiver_proto::client_types::flight_schema(&running.schema);
        let fields = Arc::new(pg_fields(&schema, format, Some(options))?);
        let mut batches = running.batches;
        // The first batch before the answer: an error that comes at once (most do)
        // is then an error response, not a broken row stream.
        let first = batches.next().await;
        let first = match first {
            Some(Err(e)) => return Err(errors::to_pg(&from_datafusion(&e), Some(sql))),
            other => other,
        };
        let rows_fields = fields.clone();
        let sql = sql.to_string();
        let rows = futures::stream::iter(first)
            .chain(batches)
            .flat_map(move |batch| {
                let rows: Box<
                    dyn Iterator<Item = PgWireResult<pgwire::messages::data::DataRow>>
                        + Send
                        + Sync,
                > = match batch.and_then(|b| {
                    quiver_proto::client_types::to_client_types(b).map_err(Into::into)
                }) {
                    Ok(b) => Box::new(arrow_pg::datatypes::encode_recordbatch(
                        rows_fields.clone(),
                        b,
                    )),
                    Err(e) => Box::new(std::iter::once(Err(errors::to_pg(
                        &from_datafusion(&e),
                        Some(&sql),
                    )))),
                };
                futures::stream::iter(rows)
            });
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }
}

impl Queries {
    /// Runs the query of a `COPY … TO STDOUT` and streams its rows in the COPY format.
    async fn copy_out(
        &self,
        connection: &Arc<Connection>,
        sql: &str,
        copy: &copy_out::CopyOut,
        options: Arc<FormatOptions>,
    ) -> PgWireResult<Response> {
        let engine = self.engine();
        let session = engine.session_on(connection.access.clone(), &connection.state());
        let tracked = run::begin(engine, session, &connection.caller(), sql);
        let planned = tracked
            .session()
            .plan_statement(datafusion::sql::parser::Statement::Statement(Box::new(
                copy.query.clone(),
            )))
            .await;
        *connection.current.lock() = Some(tracked.id().to_string());
        let running = tracked
            .execute(planned)
            .await
            .map_err(|status| errors::to_pg(&status, Some(sql)))?;
        let schema = quiver_proto::client_types::flight_schema(&running.schema);
        let fields = Arc::new(pg_fields(&schema, &Format::UnifiedText, Some(options))?);
        let sql = sql.to_string();
        let batches = running.batches.map(move |b| {
            b.and_then(|b| quiver_proto::client_types::to_client_types(b).map_err(Into::into))
                .map_err(|e| errors::to_pg(&from_datafusion(&e), Some(&sql)))
        });
        Ok(Response::CopyOut(copy.respond(fields, batches)))
    }
}

/// The command tag PostgreSQL answers a write with (`INSERT 0 n`, `SELECT n` for
/// `CREATE TABLE … AS`), without its row count.
fn write_tag(statement: &Statement) -> Option<Tag> {
    match statement {
        Statement::Insert(_) => Some(Tag::new("INSERT").with_oid(0)),
        Statement::CreateTable(_) => Some(Tag::new("SELECT")),
        Statement::Drop { .. } => Some(Tag::new("DROP TABLE")),
        Statement::AlterTable(_) => Some(Tag::new("ALTER TABLE")),
        _ => None,
    }
}

/// The row description of `schema`, by arrow-pg, except that an OID alias tag
/// counts only on integers, and an integer array named `…oids` (asyncpg's type introspection selects `attrtypoids`) is `oid[]`:
/// asyncpg decodes `oid[]` without introspecting, while an `int4[]` there would
/// send it introspecting the introspection query's own types forever.
fn pg_fields(
    schema: &datafusion::arrow::datatypes::Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    use datafusion::arrow::datatypes::DataType;
    // An OID alias tag that outlived a cast to text (`elemtype::regtype::text`)
    // would announce text as an OID.
    let cleaned = datafusion::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let tagged = f
                    .metadata()
                    .contains_key(arrow_pg::datatypes::PG_OID_ALIAS_KEY);
                if tagged && !matches!(f.data_type(), DataType::Int32 | DataType::UInt32) {
                    let mut metadata = f.metadata().clone();
                    metadata.remove(arrow_pg::datatypes::PG_OID_ALIAS_KEY);
                    Arc::new(f.as_ref().clone().with_metadata(metadata))
                } else {
                    f.clone()
                }
            })
            .collect::<Vec<_>>(),
    );
    let fields = arrow_pg::datatypes::arrow_schema_to_pg_fields(&cleaned, format, options)?;
    Ok(fields
        .into_iter()
        .zip(schema.fields())
        .map(|(info, field)| {
            let oids = field.name().ends_with("oids")
                && matches!(field.data_type(), DataType::List(item) | DataType::LargeList(item)
                    if matches!(item.data_type(), DataType::Int32 | DataType::UInt32));
            if !oids {
                return info;
            }
            FieldInfo::new(
                info.name().to_string(),
                info.table_id(),
                info.column_id(),
                Type::OID_ARRAY,
                info.format(),
            )
            .with_format_options(info.format_options().clone())
        })
        .collect())
}
