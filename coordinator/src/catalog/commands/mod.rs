//! The statements that change virtual datasets, and how they run.
//!
//! | statement | what it does |
//! |---|---|
//! | `CREATE [OR REPLACE] VIEW name AS query` | stores a view |
//! | `CREATE [OR REPLACE] MATERIALIZED VIEW name [WITH (options)] AS query` | a view with an accelerated copy |
//! | `DROP [MATERIALIZED] VIEW [IF EXISTS] name` | removes a view (and its copy) |
//! | `ALTER TABLE name SET (accelerated = true, options)` | accelerates a table or view |
//! | `ALTER TABLE name SET (accelerated = false)` | stops accelerating it |
//! | `REFRESH ACCELERATION name` (or `CALL refresh_acceleration('name')`) | refreshes a copy now |
//! | `SHOW CREATE VIEW name` | the view's text |
//! | `CREATE SCHEMA [IF NOT EXISTS] name`, `DROP SCHEMA [IF EXISTS] name [CASCADE]` | a schema for views ([`super::namespaces`]) |
//!
//! Options: `refresh_secs`, `mode` (`'full'`/`'append'`), `time_column`, `sort_by`
//! (`'a, b'`). A statement is planned into a scan of a [`CommandTable`], which does
//! its work when the scan is planned for execution, so the statement goes through
//! admission, `system.queries` and the audit log like any other, and a planning
//! call alone (Flight SQL `GetFlightInfo`, a PostgreSQL Describe) changes nothing.
//!
//! [`syntax`] reads the statements into [`Command`]s; [`run`] does their work.

mod run;
mod syntax;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::config::AccelerateSpec;
use crate::catalog::Datasets;

pub use syntax::{recognize, rewrite_refresh, view_drop, view_rename};

/// A statement about virtual datasets.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    CreateView {
        name: String,
        sql: String,
        or_replace: bool,
        accelerate: Option<AccelerateSpec>,
    },
    DropView {
        name: String,
        if_exists: bool,
    },
    Accelerate {
        name: String,
        spec: Option<AccelerateSpec>,
    },
    Refresh {
        name: String,
    },
    ShowCreateView {
        name: String,
    },
    /// `ALTER TABLE v RENAME TO w` where `v` is a view (dbt renames views so).
    RenameView {
        name: String,
        to: String,
    },
    /// `CREATE SCHEMA [IF NOT EXISTS] name` ([`crate::catalog::namespaces`]).
    CreateSchema {
        name: String,
        if_not_exists: bool,
    },
    /// `DROP SCHEMA [IF EXISTS] name [CASCADE]`.
    DropSchema {
        name: String,
        if_exists: bool,
        cascade: bool,
    },
}

/// The table name the command scans are planned under.
pub const COMMAND_TABLE: &str = "quiver_command";

impl Command {
    fn schema(&self) -> SchemaRef {
        let s = |n: &str| Field::new(n, DataType::Utf8, false);
        Arc::new(match self {
            Command::Refresh { .. } => Schema::new(vec![
                s("dataset"),
                Field::new("rows_fetched", DataType::Int64, false),
                Field::new("rows", DataType::Int64, false),
                Field::new("bytes", DataType::Int64, false),
                Field::new("files", DataType::Int64, false),
                Field::new("seconds", DataType::Float64, false),
            ]),
            Command::ShowCreateView { .. } => Schema::new(vec![s("view"), s("create_statement")]),
            _ => Schema::new(vec![s("result")]),
        })
    }

    /// The dataset the command is about, unqualified as written.
    fn target(&self) -> &str {
        match self {
            Command::CreateView { name, .. }
            | Command::DropView { name, .. }
            | Command::Accelerate { name, .. }
            | Command::Refresh { name }
            | Command::ShowCreateView { name }
            | Command::RenameView { name, .. }
            | Command::CreateSchema { name, .. }
            | Command::DropSchema { name, .. } => name,
        }
    }

    /// Whether only administrators may run it (all but `SHOW CREATE VIEW`).
    pub fn changes_things(&self) -> bool {
        !matches!(self, Command::ShowCreateView { .. })
    }
}

/// Plans `command` as a scan of its [`CommandTable`]; its target (qualified) is
/// returned as the table it touches.
pub fn plan(datasets: &Arc<Datasets>, command: Command) -> Result<(LogicalPlan, String)> {
    let target = match &command {
        Command::CreateSchema { name, .. } | Command::DropSchema { name, .. } => {
            let (catalog, schema) = crate::catalog::namespaces::qualify(datasets, name)?;
            format!("{catalog}.{schema}")
        }
        other => datasets.qualify(other.target())?,
    };
    let table = Arc::new(CommandTable {
        datasets: datasets.clone(),
        command,
    });
    let plan = LogicalPlanBuilder::scan(
        COMMAND_TABLE,
        datafusion::datasource::provider_as_source(table),
        None,
    )?
    .build()?;
    Ok((plan, target))
}

/// A statement's work, done when its scan is planned for execution.
#[derive(Debug)]
pub struct CommandTable {
    datasets: Arc<Datasets>,
    command: Command,
}

#[async_trait]
impl TableProvider for CommandTable {
    fn schema(&self) -> SchemaRef {
        self.command.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _: &dyn Session,
        projection: Option<&Vec<usize>>,
        _: &[Expr],
        _: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = run::run(&self.datasets, &self.command).await?;
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}
