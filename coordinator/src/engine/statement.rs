//! The path of one statement, the same through every door (Flight SQL,
//! PostgreSQL, HTTP):
//!
//! 1. [`prepare`]: the text's checks (its size, `server.max_statement_bytes`, and
//!    its nesting) and rewrites (`REFRESH ACCELERATION …`, `COPY … TO '…'
//!    (FORMAT …, PARTITION_BY …)`), before any parser sees it;
//! 2. parsing: [`super::QuerySession::parse`] in the server's dialect; the
//!    PostgreSQL door parses the prepared text with PostgreSQL's dialect and its
//!    clients' rewrites;
//! 3. [`super::QuerySession::plan_statement`]: a [`Planned`], which says what the
//!    statement is (a query, a write, a catalog command), which tables it reads
//!    (also when it is denied) and holds its plan, or why there is none;
//! 4. [`Planned::bind`]: the parameters of a prepared statement;
//! 5. `frontends::run::Tracked::execute`: admission, the results cache,
//!    execution (waiting for a worker when the pool is at zero), `system.queries`
//!    and the audit log.

use std::borrow::Cow;

use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use quiver_worker::status::from_datafusion;
use tonic::Status;

/// Checks a statement's text and rewrites it into what the parser reads.
pub fn prepare(sql: &str, max_statement_bytes: usize) -> Result<Cow<'_, str>> {
    if sql.len() > max_statement_bytes {
        return plan_err!(
            "the statement is {} bytes, over the limit of {max_statement_bytes} bytes (server.max_statement_bytes)",
            sql.len()
        );
    }
    crate::balance::check_nesting(sql)?;
    if let Some(refresh) = crate::catalog::commands::rewrite_refresh(sql) {
        return Ok(Cow::Owned(refresh));
    }
    match crate::writes::syntax::rewrite_copy_options(sql).map_err(DataFusionError::Plan)? {
        Some(copy) => Ok(Cow::Owned(copy)),
        None => Ok(Cow::Borrowed(sql)),
    }
}

/// What a statement does, as far as running it is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads: may be cached, may be handed to the workers as endpoints.
    Query,
    /// Writes (`COPY`, `CREATE TABLE … AS`, `INSERT`, `DROP TABLE`, temporary
    /// objects, bulk ingest): never cached; its one row is the count written.
    Write,
    /// Changes views or accelerations: never cached.
    Command,
}

/// A planned statement: what it is, what it reads, and its plan or the error
/// that stopped planning.
#[derive(Debug)]
pub struct Planned {
    pub kind: StatementKind,
    /// The tables it reads (`catalog.schema.table`), also when it was denied.
    pub objects: Vec<String>,
    pub plan: std::result::Result<LogicalPlan, Status>,
}

impl Planned {
    pub(super) fn new(
        kind: StatementKind,
        objects: Vec<String>,
        plan: Result<LogicalPlan>,
    ) -> Self {
        Self {
            kind,
            objects,
            plan: plan.map_err(|e| from_datafusion(&e)),
        }
    }

    /// A statement that failed before it was planned (its text did not parse).
    pub fn failed(status: Status) -> Self {
        Self {
            kind: StatementKind::Query,
            objects: vec![],
            plan: Err(status),
        }
    }

    pub fn is_write(&self) -> bool {
        self.kind == StatementKind::Write
    }

    pub fn is_command(&self) -> bool {
        self.kind == StatementKind::Command
    }

    /// Binds parameters (or makes any other change to the plan), keeping what the
    /// statement is; an error replaces the plan.
    pub fn bind(
        self,
        f: impl FnOnce(LogicalPlan) -> std::result::Result<LogicalPlan, Status>,
    ) -> Self {
        Self {
            plan: self.plan.and_then(f),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_checks_size_and_rewrites_the_text() {
        let long = format!("SELECT '{}'", "x".repeat(100));
        let err = prepare(&long, 50).expect_err("too long").to_string();
        assert!(err.contains("over the limit of 50 bytes"), "{err}");
        assert_eq!(prepare("SELECT 1", 50).expect("fits"), "SELECT 1");
        let copy = prepare("COPY t TO '/tmp/x/' (FORMAT parquet)", 1000).expect("copy");
        assert!(copy.contains("STORED AS PARQUET"), "{copy}");
        let refresh = prepare("REFRESH ACCELERATION pg.public.orders", 1000).expect("refresh");
        assert_ne!(refresh, "REFRESH ACCELERATION pg.public.orders");
        let deep = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
        assert!(prepare(&deep, 100_000).is_err());
    }

    #[test]
    fn binding_keeps_what_the_statement_is() {
        let planned = Planned::new(
            StatementKind::Write,
            vec!["quiver.s.t".into()],
            Ok(LogicalPlan::EmptyRelation(
                datafusion::logical_expr::EmptyRelation {
                    produce_one_row: true,
                    schema: std::sync::Arc::new(datafusion::common::DFSchema::empty()),
                },
            )),
        );
        let bound = planned.bind(|_| Err(Status::invalid_argument("bad parameter")));
        assert!(bound.is_write());
        assert_eq!(bound.objects, vec!["quiver.s.t".to_string()]);
        assert_eq!(bound.plan.expect_err("replaced").message(), "bad parameter");
    }
}
