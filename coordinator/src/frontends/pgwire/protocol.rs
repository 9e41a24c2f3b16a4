//! The protocol's two ways to run a statement, for [`Queries`]: the simple query
//! (one text, maybe several statements, results in text) and the extended one
//! (Parse, Bind, Describe, Execute: prepared statements with `$n` parameters and
//! binary results).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, Response,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use quiver_worker::status::from_datafusion;

use super::parameters::{decode_parameters, parameter_types};
use super::session::SessionCommand;
use super::{connection_of, copy_out, errors, pg_fields, Parsed, Queries};

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let connection = connection_of(client)?;
        let statements = self.parse(query)?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let single = statements.len() == 1;
        let mut out = vec![];
        for statement in statements {
            if let Some(cmd) = SessionCommand::of(&statement) {
                cmd.apply(&connection.settings);
                out.push(cmd.respond(&connection.settings, &Format::UnifiedText)?);
                continue;
            }
            let text = if single {
                query.to_string()
            } else {
                statement.to_string()
            };
            if let Some(copy) = copy_out::CopyOut::of(&statement) {
                out.push(
                    self.copy_out(&connection, &text, &copy?, options.clone())
                        .await?,
                );
                continue;
            }
            out.push(
                self.query(
                    &connection,
                    &text,
                    statement,
                    |_| Ok(None),
                    &Format::UnifiedText,
                    options.clone(),
                )
                .await?,
            );
        }
        Ok(out)
    }
}

#[async_trait]
impl QueryParser for Queries {
    type Statement = Parsed;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Parsed>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let connection = connection_of(client)?;
        let mut statements = self.parse(sql)?;
        if statements.len() > 1 {
            return Err(errors::user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        if let Some(cmd) = SessionCommand::of(&statement) {
            return Ok(Some(Parsed::Session(cmd)));
        }
        if let Some(copy) = copy_out::CopyOut::of(&statement) {
            return Ok(Some(Parsed::Copy {
                sql: sql.to_string(),
                copy: Box::new(copy?),
            }));
        }
        let (parameters, fields) = self.describe(&connection, sql, &statement).await?;
        Ok(Some(Parsed::Query {
            sql: sql.to_string(),
            statement: Box::new(statement),
            parameters,
            fields,
        }))
    }

    fn get_parameter_types(&self, stmt: &Parsed) -> PgWireResult<Vec<Type>> {
        Ok(match stmt {
            Parsed::Query { parameters, .. } => parameters.clone(),
            Parsed::Session(_) | Parsed::Copy { .. } => vec![],
        })
    }

    fn get_result_schema(
        &self,
        stmt: &Parsed,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match stmt {
            Parsed::Query { fields, .. } => {
                pg_fields(fields, format.unwrap_or(&Format::UnifiedText), None)
            }
            Parsed::Session(cmd) => Ok(cmd.fields(format.unwrap_or(&Format::UnifiedText))),
            Parsed::Copy { .. } => Ok(vec![]),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Parsed;
    type QueryParser = Queries;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(Queries {
            frontend: self.frontend.clone(),
        })
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Parsed>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Parsed>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let server = self.get_parameter_types(&target.statement)?;
        let n = server.len().max(target.parameter_types.len());
        let parameters = (0..n)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| server.get(i).cloned())
                    .unwrap_or(Type::UNKNOWN)
            })
            .collect();
        Ok(DescribeStatementResponse::new(
            parameters,
            self.get_result_schema(&target.statement, None)?,
        ))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Parsed>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Parsed>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // A column whose type only its parameter decides (`SELECT $1`) is described as bound.
        if let (
            Parsed::Query {
                sql,
                statement,
                fields,
                ..
            },
            true,
        ) = (&target.statement.statement, target.parameter_len() > 0)
        {
            if fields
                .fields()
                .iter()
                .any(|f| f.data_type() == &datafusion::arrow::datatypes::DataType::Null)
            {
                let connection = connection_of(client)?;
                let session = self
                    .engine()
                    .planning_session_on(connection.access.clone(), &connection.state());
                let plan = session
                    .plan_statement(datafusion::sql::parser::Statement::Statement(
                        statement.clone(),
                    ))
                    .await
                    .plan
                    .map_err(|status| errors::to_pg(&status, Some(sql)))?;
                let values = decode_parameters(target, &parameter_types(&plan)?)?;
                let plan = session
                    .bind(plan, values)
                    .map_err(|e| errors::to_pg(&from_datafusion(&e), Some(sql)))?;
                let schema = quiver_proto::client_types::flight_schema(plan.schema().as_arrow());
                return Ok(DescribePortalResponse::new(pg_fields(
                    &schema,
                    &target.result_column_format,
                    None,
                )?));
            }
        }
        Ok(DescribePortalResponse::new(self.get_result_schema(
            &target.statement.statement,
            Some(&target.result_column_format),
        )?))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Parsed>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Parsed>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let connection = connection_of(client)?;
        match &portal.statement.statement {
            Parsed::Session(cmd) => {
                cmd.apply(&connection.settings);
                cmd.respond(&connection.settings, &portal.result_column_format)
            }
            Parsed::Query { sql, statement, .. } => {
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                let bind =
                    |plan: &LogicalPlan| -> PgWireResult<Option<datafusion::common::ParamValues>> {
                        if portal.parameter_len() == 0 {
                            return Ok(None);
                        }
                        decode_parameters(portal, &parameter_types(plan)?).map(Some)
                    };
                self.query(
                    &connection,
                    sql,
                    (**statement).clone(),
                    bind,
                    &portal.result_column_format,
                    options,
                )
                .await
            }
            Parsed::Copy { sql, copy } => {
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                self.copy_out(&connection, sql, copy, options).await
            }
        }
    }
}
