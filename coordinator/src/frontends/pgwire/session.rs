//! Session statements clients send on connect and around queries: `SET`,
//! `RESET` and `SHOW` read and change the connection's [`Settings`] (where
//! `search_path` and `quiver.cache` take effect); a transaction block is accepted
//! (every statement reads a snapshot of its own, and writes commit one by one:
//! `ROLLBACK` undoes nothing, see docs/clients.md).

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{Expr, Reset, Set, Statement, Value};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::Type;
use pgwire::error::PgWireResult;

use super::settings::Settings;

#[derive(Clone, Debug, PartialEq)]
pub enum SessionCommand {
    /// `SET name = value` / `SET name TO value` / `SET TIME ZONE value`.
    Set {
        name: String,
        value: String,
    },
    /// Other `SET` forms (`SET ROLE`, `SET SESSION AUTHORIZATION`, ...): acknowledged.
    SetOther,
    /// `RESET name`, `RESET ALL` (None).
    Reset(Option<String>),
    Begin,
    Commit,
    Rollback,
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`: drivers nest "transactions" with them.
    Savepoint(&'static str),
    Discard,
    Deallocate,
    Show(String),
}

/// A `SET` value as PostgreSQL keeps it: identifiers and strings as their text,
/// several values joined by `, ` (`SET search_path = a, b`).
fn value_text(values: &[Expr]) -> String {
    values
        .iter()
        .map(|v| match v {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(i) if i.quote_style.is_some() => format!("\"{}\"", i.value),
            Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl SessionCommand {
    pub fn of(statement: &Statement) -> Option<Self> {
        Some(match statement {
            Statement::Set(Set::SingleAssignment {
                variable, values, ..
            }) => Self::Set {
                name: variable.to_string().to_ascii_lowercase(),
                value: value_text(values),
            },
            Statement::Set(Set::SetTimeZone { value, .. }) => Self::Set {
                name: "timezone".into(),
                value: value_text(std::slice::from_ref(value)),
            },
            Statement::Set(_) => Self::SetOther,
            Statement::Reset(r) => match &r.reset {
                Reset::ALL => Self::Reset(None),
                Reset::ConfigurationParameter(name) => {
                    Self::Reset(Some(name.to_string().to_ascii_lowercase()))
                }
            },
            Statement::StartTransaction { .. } => Self::Begin,
            Statement::Commit { .. } => Self::Commit,
            Statement::Rollback {
                savepoint: Some(_), ..
            } => Self::Savepoint("ROLLBACK"),
            Statement::Rollback { .. } => Self::Rollback,
            Statement::Savepoint { .. } => Self::Savepoint("SAVEPOINT"),
            Statement::ReleaseSavepoint { .. } => Self::Savepoint("RELEASE"),
            Statement::Discard { .. } => Self::Discard,
            Statement::Deallocate { .. } => Self::Deallocate,
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(" ");
                Self::Show(name)
            }
            _ => return None,
        })
    }

    /// Applies the statement to the connection's settings.
    pub fn apply(&self, settings: &Settings) {
        match self {
            Self::Set { name, value } if value.eq_ignore_ascii_case("default") => {
                settings.reset(Some(name))
            }
            Self::Set { name, value } => settings.set(name, value),
            Self::Reset(name) => settings.reset(name.as_deref()),
            Self::Discard => settings.reset(None),
            _ => {}
        }
    }

    pub fn fields(&self, format: &Format) -> Vec<FieldInfo> {
        match self {
            Self::Show(name) => {
                let column = name.rsplit(' ').next().unwrap_or(name).to_string();
                vec![FieldInfo::new(
                    column,
                    None,
                    None,
                    Type::TEXT,
                    format.format_for(0),
                )]
            }
            _ => vec![],
        }
    }

    pub fn respond(&self, settings: &Settings, format: &Format) -> PgWireResult<Response> {
        Ok(match self {
            Self::Set { .. } | Self::SetOther => Response::Execution(Tag::new("SET")),
            Self::Reset(_) => Response::Execution(Tag::new("RESET")),
            Self::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Self::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            Self::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
            Self::Savepoint(tag) => Response::Execution(Tag::new(tag)),
            Self::Discard => Response::Execution(Tag::new("DISCARD ALL")),
            Self::Deallocate => Response::Execution(Tag::new("DEALLOCATE")),
            Self::Show(name) => {
                let value = settings.get(name).ok_or_else(|| {
                    super::errors::user_error(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn of(sql: &str) -> Option<SessionCommand> {
        SessionCommand::of(&Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses")[0])
    }

    #[test]
    fn set_reset_and_show_are_recognized() {
        assert_eq!(
            of("SET search_path = \"system\""),
            Some(SessionCommand::Set {
                name: "search_path".into(),
                value: "\"system\"".into()
            })
        );
        assert_eq!(
            of("SET search_path TO tpch, public"),
            Some(SessionCommand::Set {
                name: "search_path".into(),
                value: "tpch, public".into()
            })
        );
        assert_eq!(
            of("SET application_name = 'dbt'"),
            Some(SessionCommand::Set {
                name: "application_name".into(),
                value: "dbt".into()
            })
        );
        assert_eq!(of("RESET ALL"), Some(SessionCommand::Reset(None)));
        assert_eq!(
            of("RESET application_name"),
            Some(SessionCommand::Reset(Some("application_name".into())))
        );
        assert_eq!(
            of("SHOW search_path"),
            Some(SessionCommand::Show("search_path".into()))
        );
        assert_eq!(of("SELECT 1"), None);
    }
}
