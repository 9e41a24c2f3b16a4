//! The client endpoint's custom Flight actions (`refresh`, `scale`, `health`,
//! `progress`), and `REFRESH` run as a statement.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::stream;
use quiver_worker::status::from_datafusion;
use tonic::{Request, Response, Status};

use super::{caller_of, QuiverFlightSql};
use crate::frontends::run::Caller;

type DoActionStream = <QuiverFlightSql as FlightService>::DoActionStream;

/// Flight action that rediscovers the tables of SQL-database sources.
pub const ACTION_REFRESH: &str = "refresh";
/// Flight action that pins the worker pool's size (body: a number, or "auto").
pub const ACTION_SCALE: &str = "scale";
/// Flight action that tells how far a query has come (body: its id; answer: JSON).
pub const ACTION_PROGRESS: &str = "progress";

impl QuiverFlightSql {
    /// Refuses `what` to users without an admin role (when users log in at all).
    pub(super) fn require_admin(&self, caller: &Caller, what: &str) -> Result<(), Status> {
        match &caller.user {
            Some(user) if !self.engine.access(Some(user)).is_admin() => Err(Status::permission_denied(format!(
                "access denied: {what} is for administrators (a role in access.admin_roles); user '{}' has none",
                user.name
            ))),
            _ => Ok(()),
        }
    }

    /// A query's progress as JSON: state, rows and bytes so far, elapsed seconds,
    /// and its stage tasks and fragments finished of those started. Users see
    /// their own queries; administrators everyone's.
    fn progress(&self, caller: &Caller, id: &str) -> Result<String, Status> {
        let record = self.engine.queries().get(id).filter(|q| {
            caller.user.is_none()
                || q.user.as_deref() == caller.user_name()
                || self.engine.access(caller.user.as_ref()).is_admin()
        });
        let Some(q) = record else {
            return Err(Status::not_found(format!("no query '{id}'")));
        };
        let fragments: Vec<_> = self
            .engine
            .fragments()
            .snapshot()
            .into_iter()
            .filter(|f| f.query_id == id)
            .collect();
        let done = fragments.iter().filter(|f| f.state == "finished").count();
        let stages: std::collections::BTreeSet<u32> = fragments.iter().map(|f| f.stage).collect();
        Ok(serde_json::json!({
            "id": q.id, "state": q.state, "rows": q.rows, "bytes": q.bytes, "elapsed_secs": q.elapsed(),
            "fragments_done": done, "fragments": fragments.len(), "stages": stages.len(), "error": q.error,
        })
        .to_string())
    }

    /// Rediscovers database tables; one row per schema refreshed.
    pub(super) async fn refresh(&self, target: Option<&str>) -> Result<RecordBatch, Status> {
        let refreshed = self
            .engine
            .refresh(target)
            .await
            .map_err(|e| from_datafusion(&e))?;
        tracing::info!(?refreshed, "table lists refreshed");
        let names = datafusion::arrow::array::StringArray::from_iter_values(
            refreshed.iter().map(|(n, _)| n.as_str()),
        );
        let counts = datafusion::arrow::array::Int64Array::from_iter_values(
            refreshed.iter().map(|(_, c)| *c as i64),
        );
        RecordBatch::try_new(
            Arc::new(refresh_schema()),
            vec![Arc::new(names), Arc::new(counts)],
        )
        .map_err(|e| Status::internal(e.to_string()))
    }

    /// Serves a custom action (anything but the Flight SQL protocol's own).
    pub(super) async fn action(
        &self,
        request: Request<arrow_flight::Action>,
    ) -> Result<Response<DoActionStream>, Status> {
        let caller = caller_of(&request);
        let action = request.into_inner();
        if action.r#type == ACTION_PROGRESS {
            let id = String::from_utf8_lossy(&action.body).trim().to_string();
            let body = self.progress(&caller, &id)?;
            return Ok(Response::new(Box::pin(stream::iter([Ok(
                arrow_flight::Result { body: body.into() },
            )]))));
        }
        if action.r#type != quiver_proto::ACTION_HEALTH {
            self.require_admin(&caller, &format!("the '{}' action", action.r#type))?;
        }
        let body = String::from_utf8(action.body.to_vec())
            .map_err(|_| Status::invalid_argument("action body is not UTF-8"))?;
        let one = |text: String| -> Result<Response<DoActionStream>, Status> {
            Ok(Response::new(Box::pin(stream::iter([Ok(
                arrow_flight::Result { body: text.into() },
            )]))))
        };
        match action.r#type.as_str() {
            ACTION_REFRESH => {}
            quiver_proto::ACTION_HEALTH => return one("ok".into()),
            ACTION_SCALE => {
                let size = match body.trim() {
                    "auto" => None,
                    n => Some(n.parse::<usize>().map_err(|_| {
                        Status::invalid_argument(format!(
                            "scale takes a worker count or 'auto', not '{n}'"
                        ))
                    })?),
                };
                self.engine
                    .pool()
                    .set_target(size)
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                tracing::info!(?size, "worker pool size set on request");
                return one(match size {
                    Some(n) => format!("scaling to {n} workers"),
                    None => "the autoscaler sizes the pool".into(),
                });
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action '{other}'"
                )))
            }
        }
        let target = body;
        let target = Some(target.trim()).filter(|t| !t.is_empty());
        let refreshed = self
            .engine
            .refresh(target)
            .await
            .map_err(|e| from_datafusion(&e))?;
        let results: Vec<Result<arrow_flight::Result, Status>> = refreshed
            .into_iter()
            .map(|(name, tables)| {
                Ok(arrow_flight::Result {
                    body: format!("{name}: {tables} tables").into(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(stream::iter(results))))
    }
}

/// `REFRESH` or `REFRESH <schema>`: rediscover the tables of SQL-database sources.
/// Returns the optional schema name, or None when the statement is something else.
pub(super) fn refresh_statement(sql: &str) -> Option<Option<String>> {
    let mut words = sql.trim().trim_end_matches(';').split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("refresh") {
        return None;
    }
    let target = words.next().map(|w| w.trim_matches('"').to_string());
    match words.next() {
        Some(_) => None,
        None => Some(target),
    }
}

pub(super) fn refresh_schema() -> Schema {
    Schema::new(vec![
        Field::new("schema_name", DataType::Utf8, false),
        Field::new("tables", DataType::Int64, false),
    ])
}

/// The custom actions, as `ListActions` shows them.
pub(super) fn custom_actions() -> Vec<Result<arrow_flight::ActionType, Status>> {
    vec![
        Ok(arrow_flight::ActionType {
            r#type: ACTION_REFRESH.into(),
            description:
                "Rediscover the tables of SQL-database sources; body: optional schema name".into(),
        }),
        Ok(arrow_flight::ActionType {
            r#type: ACTION_SCALE.into(),
            description:
                "Pin the number of Docker workers; body: a count, or 'auto' for the autoscaler"
                    .into(),
        }),
        Ok(arrow_flight::ActionType {
            r#type: quiver_proto::ACTION_HEALTH.into(),
            description: "Answers 'ok'".into(),
        }),
        Ok(arrow_flight::ActionType {
            r#type: ACTION_PROGRESS.into(),
            description: "How far a query has come; body: its id (x-quiver-query-id); answer: JSON"
                .into(),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::refresh_statement;

    #[test]
    fn refresh_statements() {
        assert_eq!(refresh_statement("REFRESH"), Some(None));
        assert_eq!(
            refresh_statement(" refresh quiver.pg ; "),
            Some(Some("quiver.pg".into()))
        );
        assert_eq!(
            refresh_statement("refresh \"crm\""),
            Some(Some("crm".into()))
        );
        assert_eq!(refresh_statement("SELECT 1"), None);
        assert_eq!(refresh_statement("refresh a b"), None);
        assert_eq!(refresh_statement(""), None);
    }
}
