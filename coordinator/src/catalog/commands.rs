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

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{exec_err, plan_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::{self, ObjectType, ShowCreateObject, SqlOption, Statement};

use super::acceleration::refresh;
use super::config::{AccelerateSpec, RefreshMode};
use super::store::{now_ms, StoredAcceleration, StoredView};
use super::{store_error, Datasets, Origin};

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
    /// `CREATE SCHEMA [IF NOT EXISTS] name` ([`super::namespaces`]).
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

/// `DROP TABLE [IF EXISTS] v [CASCADE]` when `v` is a view of `datasets`: dbt
/// drops relations by the kind its cache read from `pg_tables`, where views are
/// listed too, so a view it drops "as a table" is dropped as the view it is.
pub fn view_drop(statement: &Statement, datasets: &Datasets) -> Option<Command> {
    let Statement::Drop {
        object_type: ast::ObjectType::Table,
        names,
        if_exists,
        ..
    } = statement
    else {
        return None;
    };
    let [one] = names.as_slice() else { return None };
    datasets.view(&datasets.qualify(&one.to_string()).ok()?)?;
    Some(Command::DropView {
        name: one.to_string(),
        if_exists: *if_exists,
    })
}

/// `ALTER TABLE v RENAME TO w` when `v` is a view of `datasets`.
pub fn view_rename(statement: &Statement, datasets: &Datasets) -> Option<Command> {
    let Statement::AlterTable(alter) = statement else {
        return None;
    };
    let [ast::AlterTableOperation::RenameTable {
        table_name: ast::RenameTableNameKind::To(to) | ast::RenameTableNameKind::As(to),
    }] = alter.operations.as_slice()
    else {
        return None;
    };
    datasets.view(&datasets.qualify(&alter.name.to_string()).ok()?)?;
    Some(Command::RenameView {
        name: alter.name.to_string(),
        to: to.to_string(),
    })
}

/// The command `statement` is, if it is one (None: an ordinary statement).
pub fn recognize(statement: &Statement) -> Option<Result<Command>> {
    Some(match statement {
        Statement::CreateView(v) => create_view(v),
        Statement::CreateSchema {
            schema_name,
            if_not_exists,
            ..
        } => match schema_name {
            ast::SchemaName::Simple(name) => Ok(Command::CreateSchema {
                name: name.to_string(),
                if_not_exists: *if_not_exists,
            }),
            _ => Err(DataFusionError::Plan(
                "CREATE SCHEMA … AUTHORIZATION is not supported: Quiver's users and rights come from its config".into(),
            )),
        },
        Statement::Drop {
            object_type: ObjectType::Schema,
            if_exists,
            names,
            cascade,
            ..
        } => match names.as_slice() {
            [one] => Ok(Command::DropSchema {
                name: one.to_string(),
                if_exists: *if_exists,
                cascade: *cascade,
            }),
            _ => Err(DataFusionError::Plan(
                "DROP SCHEMA takes one schema at a time".into(),
            )),
        },
        Statement::Drop {
            object_type: ObjectType::View | ObjectType::MaterializedView,
            if_exists,
            names,
            ..
        } => match names.as_slice() {
            [one] => Ok(Command::DropView {
                name: one.to_string(),
                if_exists: *if_exists,
            }),
            _ => Err(DataFusionError::Plan(
                "DROP VIEW takes one view at a time".into(),
            )),
        },
        Statement::AlterTable(alter) => {
            let [ast::AlterTableOperation::SetOptionsParens { options }] =
                alter.operations.as_slice()
            else {
                return None;
            };
            if !options.iter().any(|o| matches!(o, SqlOption::KeyValue { key, .. } if key.value.eq_ignore_ascii_case("accelerated"))) {
                return None;
            }
            accelerate(alter.name.to_string(), options)
        }
        Statement::ShowCreate {
            obj_type: ShowCreateObject::View,
            obj_name,
        } => Ok(Command::ShowCreateView {
            name: obj_name.to_string(),
        }),
        Statement::Call(f)
            if f.name
                .to_string()
                .eq_ignore_ascii_case("refresh_acceleration") =>
        {
            refresh_call(f)
        }
        _ => return None,
    })
}

/// `REFRESH ACCELERATION name` in the equivalent form the SQL parser reads
/// (`CALL refresh_acceleration('name')`), or None for any other text.
pub fn rewrite_refresh(sql: &str) -> Option<String> {
    let text = sql.trim().trim_end_matches(';').trim();
    let mut words = text.split_whitespace();
    let (first, second) = (words.next()?, words.next()?);
    if !(first.eq_ignore_ascii_case("refresh") && second.eq_ignore_ascii_case("acceleration")) {
        return None;
    }
    let name = words.collect::<Vec<_>>().join(" ");
    Some(format!(
        "CALL refresh_acceleration('{}')",
        name.replace('\'', "''")
    ))
}

fn create_view(v: &ast::CreateView) -> Result<Command> {
    if !v.columns.is_empty() {
        return Err(DataFusionError::Plan(
            "CREATE VIEW with a column list is not supported; name the columns in the query".into(),
        ));
    }
    if v.temporary {
        return Err(DataFusionError::Plan(
            "temporary views are not supported: views are shared by every session".into(),
        ));
    }
    let options = match &v.options {
        ast::CreateTableOptions::None => vec![],
        ast::CreateTableOptions::With(o) | ast::CreateTableOptions::Options(o) => o.clone(),
        _ => return plan_err!("view options go in WITH (…)"),
    };
    let accelerate = match (v.materialized, options.is_empty()) {
        (true, _) => Some(spec_of(&options, false)?),
        (false, true) => None,
        (false, false) => {
            return Err(DataFusionError::Plan(
                "WITH (…) options are for MATERIALIZED views".into(),
            ))
        }
    };
    if v.if_not_exists && v.or_replace {
        return Err(DataFusionError::Plan(
            "use OR REPLACE or IF NOT EXISTS, not both".into(),
        ));
    }
    Ok(Command::CreateView {
        name: v.name.to_string(),
        sql: v.query.to_string(),
        or_replace: v.or_replace,
        accelerate,
    })
}

fn accelerate(name: String, options: &[SqlOption]) -> Result<Command> {
    let on = options.iter().find_map(|o| match o {
        SqlOption::KeyValue { key, value } if key.value.eq_ignore_ascii_case("accelerated") => {
            Some(value.to_string())
        }
        _ => None,
    });
    match on
        .as_deref()
        .map(|v| v.trim_matches('\'').to_ascii_lowercase())
    {
        Some(v) if v == "false" || v == "off" => {
            if options.len() > 1 {
                return Err(DataFusionError::Plan(
                    "SET (accelerated = false) takes no other options".into(),
                ));
            }
            Ok(Command::Accelerate { name, spec: None })
        }
        Some(v) if v == "true" || v == "on" => Ok(Command::Accelerate {
            name,
            spec: Some(spec_of(options, true)?),
        }),
        other => plan_err!(
            "accelerated must be true or false, not {}",
            other.unwrap_or_default()
        ),
    }
}

/// Reads `refresh_secs`, `mode`, `time_column` and `sort_by` (and, with
/// `allow_flag`, `accelerated`); anything else is an error that names it.
fn spec_of(options: &[SqlOption], allow_flag: bool) -> Result<AccelerateSpec> {
    let mut spec = AccelerateSpec {
        refresh_secs: 0,
        mode: RefreshMode::Full,
        time_column: None,
        sort_by: vec![],
    };
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return plan_err!("unsupported option {option}");
        };
        let text = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
                ast::Value::Number(n, _) => n.clone(),
                ast::Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            },
            ast::Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        };
        match key.value.to_ascii_lowercase().as_str() {
            "accelerated" if allow_flag => {}
            "refresh_secs" => {
                spec.refresh_secs = text.parse().map_err(|_| DataFusionError::Plan(format!("refresh_secs must be a whole number of seconds, not {text}")))?
            }
            "mode" => {
                spec.mode = match text.to_ascii_lowercase().as_str() {
                    "full" => RefreshMode::Full,
                    "append" => RefreshMode::Append,
                    _ => return plan_err!("mode must be 'full' or 'append', not '{text}'"),
                }
            }
            "time_column" => spec.time_column = Some(text),
            "sort_by" => spec.sort_by = text.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect(),
            other => {
                return plan_err!(
                    "unknown acceleration option '{other}' (known: refresh_secs, mode, time_column, sort_by)"
                )
            }
        }
    }
    spec.validate("the dataset")
        .map_err(DataFusionError::Plan)?;
    Ok(spec)
}

fn refresh_call(f: &ast::Function) -> Result<Command> {
    let usage = || {
        DataFusionError::Plan(
            "usage: REFRESH ACCELERATION name (or CALL refresh_acceleration('name'))".into(),
        )
    };
    let ast::FunctionArguments::List(list) = &f.args else {
        return Err(usage());
    };
    let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v)))] =
        list.args.as_slice()
    else {
        return Err(usage());
    };
    match &v.value {
        ast::Value::SingleQuotedString(s) if !s.trim().is_empty() => Ok(Command::Refresh {
            name: s.trim().to_string(),
        }),
        _ => Err(usage()),
    }
}

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
            let (catalog, schema) = super::namespaces::qualify(datasets, name)?;
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
        let batch = run(&self.datasets, &self.command).await?;
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

fn text(schema: SchemaRef, message: String) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(vec![message]))],
    )?)
}

/// Does what `command` says and answers with its one-row result.
async fn run(datasets: &Arc<Datasets>, command: &Command) -> Result<RecordBatch> {
    let schema = command.schema();
    match command {
        Command::CreateSchema {
            name,
            if_not_exists,
        } => {
            return text(
                schema,
                super::namespaces::create(datasets, name, *if_not_exists).await?,
            )
        }
        Command::DropSchema {
            name,
            if_exists,
            cascade,
        } => {
            return text(
                schema,
                super::namespaces::drop(datasets, name, *if_exists, *cascade).await?,
            )
        }
        _ => {}
    }
    let name = datasets.qualify(command.target())?;
    match command {
        Command::CreateView {
            sql,
            or_replace,
            accelerate,
            ..
        } => {
            check_view_target(datasets, &name)?;
            if let Some(existing) = datasets.view(&name) {
                if existing.origin == Origin::Config {
                    return plan_err!("view {name} is declared in the config file and cannot be replaced from SQL");
                }
                if !or_replace {
                    return plan_err!("view {name} already exists (use CREATE OR REPLACE VIEW)");
                }
            } else if datasets.inner_table_exists(&name).await {
                return plan_err!("{name} is a table of a source; a view cannot take its name");
            }
            // The body must plan now, and must not reach the view itself.
            super::views::plan_body(datasets, &name, sql, true).await?;
            let now = now_ms();
            let view = StoredView {
                name: name.clone(),
                sql: sql.clone(),
                created_ms: now,
                updated_ms: now,
            };
            datasets
                .store()
                .put_view(&view, *or_replace)
                .await
                .map_err(store_error)?;
            datasets.reload().await?;
            let mut message = format!("CREATE VIEW {name}");
            if let Some(spec) = accelerate {
                message = accelerate_now(datasets, &name, spec.clone())
                    .await
                    .map(|m| format!("{message}; {m}"))?;
            }
            text(schema, message)
        }
        Command::DropView { if_exists, .. } => {
            match datasets.view(&name) {
                None if *if_exists => return text(schema, format!("no view {name}")),
                None => return plan_err!("view {name} not found"),
                Some(v) if v.origin == Origin::Config => {
                    return plan_err!(
                        "view {name} is declared in the config file and cannot be dropped from SQL"
                    )
                }
                Some(_) => {}
            }
            if datasets.acceleration(&name).is_some() {
                stop_accelerating(datasets, &name).await?;
            }
            datasets
                .store()
                .drop_view(&name)
                .await
                .map_err(store_error)?;
            datasets.reload().await?;
            text(schema, format!("DROP VIEW {name}"))
        }
        Command::CreateSchema { .. } | Command::DropSchema { .. } => Err(
            DataFusionError::Internal("schema commands run above".into()),
        ),
        Command::RenameView { to, .. } => {
            let view = datasets
                .view(&name)
                .ok_or_else(|| DataFusionError::Plan(format!("view {name} not found")))?;
            if view.origin == Origin::Config {
                return plan_err!("view {name} is declared in the config file; rename it there");
            }
            if datasets.acceleration(&name).is_some() {
                return plan_err!(
                    "view {name} is accelerated; stop accelerating it before renaming it"
                );
            }
            // The new name stays in the view's schema (PostgreSQL's RENAME TO takes a bare name).
            let identifier = datafusion::common::TableReference::parse_str(to)
                .table()
                .to_string();
            let home = name.rsplit_once('.').map(|(s, _)| s).unwrap_or_default();
            let new_name = format!("{home}.{identifier}");
            if datasets.view(&new_name).is_some() || datasets.inner_table_exists(&new_name).await {
                return Err(DataFusionError::External(Box::new(
                    quiver_worker::status::ErrorKind::DuplicateTable
                        .status(format!("{new_name} already exists")),
                )));
            }
            let stored = StoredView {
                name: new_name.clone(),
                sql: view.sql.clone(),
                created_ms: view.created_ms,
                updated_ms: now_ms(),
            };
            datasets
                .store()
                .put_view(&stored, false)
                .await
                .map_err(store_error)?;
            datasets
                .store()
                .drop_view(&name)
                .await
                .map_err(store_error)?;
            datasets.reload().await?;
            text(schema, format!("ALTER VIEW {name} RENAME TO {new_name}"))
        }
        Command::Accelerate {
            spec: Some(spec), ..
        } => {
            if datasets.view(&name).is_none() && !datasets.inner_table_exists(&name).await {
                return plan_err!("no table or view named {name} to accelerate");
            }
            let message = accelerate_now(datasets, &name, spec.clone()).await?;
            text(schema, message)
        }
        Command::Accelerate { spec: None, .. } => {
            stop_accelerating(datasets, &name).await?;
            text(schema, format!("{name} is no longer accelerated"))
        }
        Command::Refresh { .. } => {
            let acc = datasets
                .acceleration(&name)
                .ok_or_else(|| DataFusionError::Plan(format!("{name} is not accelerated")))?;
            let r = refresh::refresh_detached(datasets, &acc).await?;
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![r.dataset])),
                Arc::new(Int64Array::from(vec![r.rows_fetched as i64])),
                Arc::new(Int64Array::from(vec![r.copy.rows as i64])),
                Arc::new(Int64Array::from(vec![r.copy.bytes as i64])),
                Arc::new(Int64Array::from(vec![r.copy.files as i64])),
                Arc::new(Float64Array::from(vec![r.seconds])),
            ];
            Ok(RecordBatch::try_new(schema, columns)?)
        }
        Command::ShowCreateView { .. } => {
            let view = datasets
                .view(&name)
                .ok_or_else(|| DataFusionError::Plan(format!("view {name} not found")))?;
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![name.clone()])),
                Arc::new(StringArray::from(vec![view.create_statement()])),
            ];
            Ok(RecordBatch::try_new(schema, columns)?)
        }
    }
}

/// A view may go in any schema of a catalog that exists.
fn check_view_target(datasets: &Datasets, name: &str) -> Result<()> {
    let catalog = name.split('.').next().unwrap_or_default();
    let known = datasets
        .inner_catalogs()
        .map(|c| c.catalog_names())
        .unwrap_or_default();
    if !known.iter().any(|c| c == catalog) {
        return plan_err!(
            "unknown catalog '{catalog}' for view {name} (catalogs: {})",
            known.join(", ")
        );
    }
    if name.split('.').nth(1) == Some(crate::reserved::SYSTEM_SCHEMA) {
        return plan_err!("the schema {catalog}.system is reserved for Quiver's system tables");
    }
    Ok(())
}

/// Records the acceleration and builds its first copy (waiting for it).
async fn accelerate_now(
    datasets: &Arc<Datasets>,
    name: &str,
    spec: AccelerateSpec,
) -> Result<String> {
    if let Some(existing) = datasets.acceleration(name) {
        if existing.origin() == Origin::Config {
            return plan_err!("the acceleration of {name} is declared in the config file and cannot be changed from SQL");
        }
    }
    let keep = datasets
        .acceleration(name)
        .map(|a| a.info())
        .filter(|i| spec.keeps_copy_of(&i.spec));
    let stored = StoredAcceleration {
        dataset: name.to_string(),
        origin: Origin::Sql.as_str().into(),
        spec,
        copy: keep.as_ref().and_then(|i| i.copy.clone()),
        last_refresh: keep.and_then(|i| i.last),
    };
    datasets
        .store()
        .put_acceleration(&stored)
        .await
        .map_err(store_error)?;
    datasets.reload().await?;
    let acc = datasets
        .acceleration(name)
        .ok_or_else(|| DataFusionError::Internal(format!("acceleration of {name} vanished")))?;
    match refresh::refresh_detached(datasets, &acc).await {
        Ok(r) => Ok(format!("{name} accelerated: {} rows copied", r.copy.rows)),
        Err(e) => exec_err!(
            "{name} is accelerated, but its first refresh failed (queries read the source until one succeeds): {}",
            e.message()
        ),
    }
}

async fn stop_accelerating(datasets: &Arc<Datasets>, name: &str) -> Result<()> {
    let acc = datasets
        .acceleration(name)
        .ok_or_else(|| DataFusionError::Plan(format!("{name} is not accelerated")))?;
    if acc.origin() == Origin::Config {
        return plan_err!("the acceleration of {name} is declared in the config file and cannot be removed from SQL");
    }
    let segments = acc.segments();
    datasets
        .store()
        .drop_acceleration(name)
        .await
        .map_err(store_error)?;
    datasets.reload().await?;
    // Queries already reading the copy get a minute to finish before its files go.
    if let Some(state) = datasets.base_state().cloned() {
        let store = datasets.copies().store(&state)?;
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            for s in segments {
                if let Ok(url) = url::Url::parse(&s) {
                    let _ = super::acceleration::delete_folder(&store, &url).await;
                }
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Option<Result<Command>> {
        let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
        let statements =
            datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).expect("parses");
        recognize(&statements[0])
    }

    #[test]
    fn statements_become_commands() {
        let c = parse("CREATE OR REPLACE VIEW s.v AS SELECT a FROM t WHERE a > 1")
            .expect("a command")
            .expect("valid");
        assert_eq!(
            c,
            Command::CreateView {
                name: "s.v".into(),
                sql: "SELECT a FROM t WHERE a > 1".into(),
                or_replace: true,
                accelerate: None
            }
        );
        let c = parse("CREATE MATERIALIZED VIEW v WITH (refresh_secs = 60, mode = 'append', time_column = 'ts', sort_by = 'a, b') AS SELECT 1")
            .expect("a command")
            .expect("valid");
        let Command::CreateView {
            accelerate: Some(spec),
            ..
        } = c
        else {
            panic!("materialized view expected")
        };
        assert_eq!(
            (spec.refresh_secs, spec.mode, spec.sort_by.len()),
            (60, RefreshMode::Append, 2)
        );
        assert_eq!(
            parse("DROP VIEW IF EXISTS v").expect("cmd").expect("ok"),
            Command::DropView {
                name: "v".into(),
                if_exists: true
            }
        );
        let c = parse("ALTER TABLE pg.public.orders SET (accelerated = true, refresh_secs = 300)")
            .expect("cmd")
            .expect("ok");
        assert!(matches!(
            c,
            Command::Accelerate {
                spec: Some(AccelerateSpec {
                    refresh_secs: 300,
                    ..
                }),
                ..
            }
        ));
        let c = parse("ALTER TABLE t SET (accelerated = false)")
            .expect("cmd")
            .expect("ok");
        assert_eq!(
            c,
            Command::Accelerate {
                name: "t".into(),
                spec: None
            }
        );
        assert!(parse("SELECT 1").is_none());
        assert!(
            parse("ALTER TABLE t SET (fillfactor = 70)").is_none(),
            "other ALTERs stay refused as DDL"
        );
        let sql = rewrite_refresh("refresh  acceleration pg.public.orders;").expect("rewritten");
        assert_eq!(
            parse(&sql).expect("cmd").expect("ok"),
            Command::Refresh {
                name: "pg.public.orders".into()
            }
        );
        assert!(rewrite_refresh("REFRESH pg").is_none());
    }

    proptest::proptest! {
        /// Whatever the name, `REFRESH ACCELERATION name` becomes a refresh of exactly that
        /// name: quotes in it cannot end the string it is put in.
        #[test]
        fn refresh_names_survive_the_rewrite(name in "[A-Za-z0-9_.'\"`;()-]{1,24}") {
            let sql = rewrite_refresh(&format!("REFRESH ACCELERATION {name}")).expect("rewritten");
            let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
            let statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, &sql).expect("parses");
            proptest::prop_assert_eq!(statements.len(), 1);
            let expected = name.trim_end_matches(';').trim().to_string();
            match recognize(&statements[0]) {
                Some(Ok(Command::Refresh { name: got })) => proptest::prop_assert_eq!(got, expected),
                other => proptest::prop_assert!(expected.is_empty(), "{other:?}"),
            }
        }
    }

    #[test]
    fn bad_options_name_the_problem() {
        let e = parse("ALTER TABLE t SET (accelerated = true, mode = 'append')")
            .expect("cmd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("time_column"), "{e}");
        let e = parse("ALTER TABLE t SET (accelerated = true, refresh = 3)")
            .expect("cmd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown acceleration option 'refresh'"), "{e}");
        let e = parse("CREATE VIEW v WITH (refresh_secs = 1) AS SELECT 1")
            .expect("cmd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("MATERIALIZED"), "{e}");
    }
}
