//! Session statements clients send on connect and around queries. Quiver's
//! sessions are read-only and share one catalog, so these change nothing: `SET` is
//! acknowledged, a transaction block is accepted (every statement reads a
//! snapshot of its own), and `SHOW` answers with the values the server announced.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::Statement;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, Type};
use pgwire::error::PgWireResult;

#[derive(Clone, Debug, PartialEq)]
pub enum SessionCommand {
    Set,
    /// `SET quiver.cache = off|on`: the results cache for this session's statements.
    SetCache(bool),
    Begin,
    Commit,
    Rollback,
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`: drivers nest "transactions" with them.
    Savepoint(&'static str),
    Discard,
    Deallocate,
    Show(String),
}

impl SessionCommand {
    pub fn of(statement: &Statement) -> Option<Self> {
        Some(match statement {
            Statement::Set(datafusion::sql::sqlparser::ast::Set::SingleAssignment { variable, values, .. })
                if variable.to_string().eq_ignore_ascii_case("quiver.cache") =>
            {
                let value = values.first().map(|v| v.to_string().trim_matches('\'').to_ascii_lowercase()).unwrap_or_default();
                Self::SetCache(!matches!(value.as_str(), "off" | "false" | "0"))
            }
            Statement::Set(_) => Self::Set,
            Statement::StartTransaction { .. } => Self::Begin,
            Statement::Commit { .. } => Self::Commit,
            Statement::Rollback { savepoint: Some(_), .. } => Self::Savepoint("ROLLBACK"),
            Statement::Rollback { .. } => Self::Rollback,
            Statement::Savepoint { .. } => Self::Savepoint("SAVEPOINT"),
            Statement::ReleaseSavepoint { .. } => Self::Savepoint("RELEASE"),
            Statement::Discard { .. } => Self::Discard,
            Statement::Deallocate { .. } => Self::Deallocate,
            Statement::ShowVariable { variable } => {
                let name = variable.iter().map(|i| i.value.to_ascii_lowercase()).collect::<Vec<_>>().join(" ");
                Self::Show(name)
            }
            _ => return None,
        })
    }

    /// The value `SHOW name` answers, as PostgreSQL would for a read-only UTF-8 session.
    fn value<C: ClientInfo>(name: &str, client: &C) -> Option<String> {
        let meta = |k: &str| client.metadata().get(k).cloned();
        Some(match name {
            "server_version" => "16.6".into(),
            "server_version_num" => "160006".into(),
            "server_encoding" | "client_encoding" => "UTF8".into(),
            "transaction isolation level" | "transaction_isolation" | "default_transaction_isolation" => "read committed".into(),
            "transaction_read_only" | "default_transaction_read_only" => "on".into(),
            "standard_conforming_strings" | "integer_datetimes" => "on".into(),
            "datestyle" => "ISO, MDY".into(),
            "intervalstyle" => "postgres".into(),
            "timezone" => "UTC".into(),
            "search_path" => "\"$user\", public".into(),
            "max_identifier_length" => "63".into(),
            "is_superuser" => "off".into(),
            "lc_collate" | "lc_ctype" => "C.UTF-8".into(),
            "application_name" => meta("application_name").unwrap_or_default(),
            "session_authorization" => meta("user").unwrap_or_default(),
            _ => return None,
        })
    }

    pub fn fields(&self, format: &Format) -> Vec<FieldInfo> {
        match self {
            Self::Show(name) => {
                let column = name.rsplit(' ').next().unwrap_or(name).to_string();
                vec![FieldInfo::new(column, None, None, Type::TEXT, format.format_for(0))]
            }
            _ => vec![],
        }
    }

    pub fn respond<C: ClientInfo>(&self, client: &C, format: &Format) -> PgWireResult<Response> {
        Ok(match self {
            Self::Set | Self::SetCache(_) => Response::Execution(Tag::new("SET")),
            Self::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Self::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            Self::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
            Self::Savepoint(tag) => Response::Execution(Tag::new(tag)),
            Self::Discard => Response::Execution(Tag::new("DISCARD ALL")),
            Self::Deallocate => Response::Execution(Tag::new("DEALLOCATE")),
            Self::Show(name) => {
                let value = Self::value(name, client).ok_or_else(|| {
                    super::errors::user_error("42704", format!("unrecognized configuration parameter \"{name}\""))
                })?;
                let fields = Arc::new(self.fields(format));
                let mut row = DataRowEncoder::new(fields.clone());
                row.encode_field(&Some(value))?;
                let row = row.take_row();
                Response::Query(QueryResponse::new(fields, futures::stream::iter([Ok(row)])))
            }
        })
    }
}
