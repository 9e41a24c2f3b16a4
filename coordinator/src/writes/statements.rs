//! The statements that write, checked and planned.
//!
//! | statement | target |
//! |---|---|
//! | `COPY (query) TO 'location' [(FORMAT …, PARTITION_BY (…), …)]` | a folder or file under a writable files source |
//! | `CREATE TABLE s.t AS query` / `CREATE TABLE s.t (column type, …)` | a new folder of Parquet (or the source's format) files, or a new database table |
//! | `INSERT INTO s.t query` / `VALUES …`, `INSERT OVERWRITE`, `TRUNCATE s.t` | a file table's folder, or a database table |
//! | `DROP TABLE [IF EXISTS] s.t [CASCADE]` | a file table Quiver created |
//!
//! Temporary tables and views are the session's own ([`super::temporary`]).
//!
//! Each is allowed only on a source with `writable = true`, and for a user whose
//! first matching access rule has `write = true` (administrators always).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{internal_err, plan_err};
use datafusion::common::{ResolvedTableReference, TableReference};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    lit, DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, TableType, WriteOp,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::parser::{CopyToSource, CopyToStatement, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{ObjectType, Statement, TableObject};
use quiver_connectors::files::FilesSchema;

pub use super::context::WriteContext;
use super::context::{
    already_exists, check_quiver_made, check_write, home, message_exec, read_only, relist, resolve,
    result_schema, Home,
};

/// Whether `statement` writes (and is planned by [`plan`]).
pub fn is_write(statement: &DFStatement) -> bool {
    match statement {
        DFStatement::CopyTo(_) => true,
        DFStatement::Statement(s) => {
            matches!(
                s.as_ref(),
                Statement::Insert(_)
                    | Statement::Truncate(_)
                    | Statement::CreateTable(_)
                    | Statement::Drop {
                        object_type: ObjectType::Table,
                        ..
                    }
            ) || rename_of(s).is_some()
        }
        _ => false,
    }
}

/// Plans a statement that writes; the caller checked [`is_write`].
pub async fn plan(cx: &WriteContext<'_>, statement: DFStatement) -> Result<LogicalPlan> {
    match statement {
        DFStatement::CopyTo(copy) => plan_copy(cx, copy).await,
        DFStatement::Statement(s) => match *s {
            Statement::Insert(insert) => plan_insert(cx, insert).await,
            Statement::CreateTable(create) => plan_create(cx, create).await,
            Statement::Truncate(truncate) => plan_truncate(cx, truncate).await,
            Statement::Drop {
                object_type: ObjectType::Table,
                if_exists,
                names,
                ..
            } => plan_drop(cx, if_exists, names).await,
            other => match rename_of(&other) {
                Some((from, to)) => super::rename::plan(cx, from, to).await,
                None => internal_err!("not a write: {other}"),
            },
        },
        other => internal_err!("not a write: {other}"),
    }
}

/// `ALTER TABLE from RENAME TO to`: the two names.
fn rename_of(
    statement: &Statement,
) -> Option<(
    &datafusion::sql::sqlparser::ast::ObjectName,
    &datafusion::sql::sqlparser::ast::ObjectName,
)> {
    use datafusion::sql::sqlparser::ast::{AlterTableOperation, RenameTableNameKind};
    let Statement::AlterTable(alter) = statement else {
        return None;
    };
    match alter.operations.as_slice() {
        [AlterTableOperation::RenameTable {
            table_name: RenameTableNameKind::To(to) | RenameTableNameKind::As(to),
        }] => Some((&alter.name, to)),
        _ => None,
    }
}
/// The statement's plan, with the user's read rules applied to what it reads.
async fn planned(cx: &WriteContext<'_>, statement: DFStatement) -> Result<LogicalPlan> {
    let plan = cx.state.statement_to_plan(statement).await?;
    crate::security::enforce::enforce(plan, cx.access, cx.state)
}

async fn plan_copy(cx: &WriteContext<'_>, mut copy: CopyToStatement) -> Result<LogicalPlan> {
    let url = target_url(&copy.target)?;
    let Some(root) = cx.writes.root_for(&url) else {
        let places = cx.writes.writable_locations();
        let hint = match places.is_empty() {
            true => "no files source is writable (set writable = true on one)".to_string(),
            false => format!("writable locations: {}", places.join(", ")),
        };
        return plan_err!(
            "COPY target '{}' is not under a writable files source; {hint}",
            copy.target
        );
    };
    let (catalog, schema) = root.name().split_once('.').unwrap_or((root.name(), ""));
    let first = root
        .root()
        .and_then(|r| url.prefix().prefix_match(r.prefix()))
        .and_then(|mut parts| parts.next())
        .map(|p| p.as_ref().to_string());
    let table = first.unwrap_or_default();
    let table = table
        .strip_suffix(root.default_format().extension())
        .unwrap_or(&table)
        .to_string();
    let target = ResolvedTableReference {
        catalog: catalog.into(),
        schema: schema.into(),
        table: table.into(),
    };
    check_write(cx, &target)?;
    if copy.stored_as.is_none() && url.file_extension().is_none() {
        // A folder without FORMAT gets the source's format.
        copy.stored_as = Some(format!("{:?}", root.default_format()).to_ascii_uppercase());
    }
    copy.target = url.as_str().to_string();
    planned(cx, DFStatement::CopyTo(copy)).await
}

/// A COPY target as a URL: object-store URLs as they are, absolute paths as
/// `file://` URLs; relative paths would depend on the server's working folder.
fn target_url(target: &str) -> Result<ListingTableUrl> {
    let is_url = url::Url::parse(target).is_ok_and(|u| u.scheme().len() > 1);
    if !is_url && !std::path::Path::new(target).is_absolute() {
        return plan_err!("COPY target '{target}' must be an absolute path or a URL (s3://…)");
    }
    ListingTableUrl::parse(target)
}

async fn plan_insert(
    cx: &WriteContext<'_>,
    insert: datafusion::sql::sqlparser::ast::Insert,
) -> Result<LogicalPlan> {
    let TableObject::TableName(name) = &insert.table else {
        return Err(DataFusionError::Plan(
            "INSERT INTO a table function is not supported".into(),
        ));
    };
    let target = resolve(cx, &name.to_string());
    let home = home(cx, &target)?;
    let files = matches!(home, Home::Files(_));
    let lake = matches!(home, Home::Lake(_));
    check_write(cx, &target)?;
    let mut insert = insert;
    // DataFusion's file sinks only append: an INSERT OVERWRITE of a file table is
    // planned as an append whose commit then removes the old files.
    let overwrite = insert.overwrite && files;
    if overwrite {
        insert.overwrite = false;
    }
    let plan = planned(
        cx,
        DFStatement::Statement(Box::new(Statement::Insert(insert))),
    )
    .await?;
    if lake {
        // deltalake's sink commits once; an overwrite replaces the files in that commit.
        return Ok(plan);
    }
    if !files {
        return uncast_for_database(plan);
    }
    if !overwrite {
        return Ok(plan);
    }
    match plan {
        LogicalPlan::Dml(dml) => {
            let inner = datafusion::datasource::source_as_provider(&dml.target)?;
            let target = provider_as_source(Arc::new(super::ingest::Replacing::new(inner)));
            Ok(LogicalPlan::Dml(DmlStatement::new(
                dml.table_name,
                target,
                WriteOp::Insert(InsertOp::Append),
                dml.input,
            )))
        }
        other => Ok(other),
    }
}

/// DataFusion casts an INSERT's values to the table's types before they reach
/// the sink, and a value that does not fit fails there without naming its column
/// or row. For a database the casts are dropped: the writer converts each column
/// itself and names the column, row and value that do not fit.
fn uncast_for_database(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::logical_expr::expr::{Alias, Cast};
    use datafusion::logical_expr::Projection;
    let LogicalPlan::Dml(dml) = plan else {
        return Ok(plan);
    };
    let LogicalPlan::Projection(projection) = dml.input.as_ref() else {
        return Ok(LogicalPlan::Dml(dml));
    };
    let exprs: Vec<Expr> = projection
        .expr
        .iter()
        .map(|e| match e {
            Expr::Alias(Alias { expr, name, .. }) => match expr.as_ref() {
                Expr::Cast(Cast { expr: inner, .. })
                    if !matches!(inner.as_ref(), Expr::Literal(..)) =>
                {
                    inner.as_ref().clone().alias(name)
                }
                _ => e.clone(),
            },
            _ => e.clone(),
        })
        .collect();
    // `INSERT … VALUES`: the literals are cast to the table's types in the VALUES list too.
    let source = match projection.input.as_ref() {
        LogicalPlan::Values(values) => {
            let uncast = |e: &Expr| match e {
                Expr::Cast(Cast { expr, .. }) if matches!(expr.as_ref(), Expr::Literal(..)) => {
                    expr.as_ref().clone()
                }
                other => other.clone(),
            };
            let rows: Vec<Vec<Expr>> = values
                .values
                .iter()
                .map(|row| row.iter().map(uncast).collect())
                .collect();
            match LogicalPlanBuilder::values(rows).and_then(|b| b.build()) {
                // Literals of different types in one column keep DataFusion's casts.
                Ok(plan) if plan.schema().fields().len() == values.schema.fields().len() => {
                    Arc::new(plan)
                }
                _ => projection.input.clone(),
            }
        }
        _ => projection.input.clone(),
    };
    let input = match Projection::try_new(exprs.clone(), source) {
        Ok(p) => p,
        Err(_) => Projection::try_new(exprs, projection.input.clone())?,
    };
    Ok(LogicalPlan::Dml(DmlStatement::new(
        dml.table_name,
        dml.target,
        dml.op,
        Arc::new(LogicalPlan::Projection(input)),
    )))
}

/// `TRUNCATE [TABLE] t`: an `INSERT OVERWRITE` of no rows (dbt empties a seed's
/// table this way before loading it again).
async fn plan_truncate(
    cx: &WriteContext<'_>,
    truncate: datafusion::sql::sqlparser::ast::Truncate,
) -> Result<LogicalPlan> {
    let [table] = truncate.table_names.as_slice() else {
        return Err(DataFusionError::Plan(
            "TRUNCATE takes one table at a time".into(),
        ));
    };
    let name = &table.name;
    let sql = format!("INSERT OVERWRITE TABLE {name} SELECT * FROM {name} WHERE false");
    let statement = cx
        .state
        .sql_to_statement(&sql, &datafusion::config::Dialect::PostgreSQL)?;
    match statement {
        DFStatement::Statement(s) => match *s {
            Statement::Insert(insert) => plan_insert(cx, insert).await,
            other => internal_err!("not an insert: {other}"),
        },
        other => internal_err!("not an insert: {other}"),
    }
}

/// `CREATE TABLE t (column type, …)` as the query of no rows in those types.
fn columns_query(
    create: &datafusion::sql::sqlparser::ast::CreateTable,
    state: &SessionState,
) -> Result<Box<datafusion::sql::sqlparser::ast::Query>> {
    let columns = create
        .columns
        .iter()
        .map(|c| format!("CAST(NULL AS {}) AS {}", c.data_type, c.name))
        .collect::<Vec<_>>()
        .join(", ");
    match state.sql_to_statement(
        &format!("SELECT {columns} WHERE false"),
        &datafusion::config::Dialect::PostgreSQL,
    )? {
        DFStatement::Statement(s) => match *s {
            Statement::Query(q) => Ok(q),
            other => internal_err!("not a query: {other}"),
        },
        other => internal_err!("not a query: {other}"),
    }
}

async fn plan_create(
    cx: &WriteContext<'_>,
    create: datafusion::sql::sqlparser::ast::CreateTable,
) -> Result<LogicalPlan> {
    let target = resolve(cx, &create.name.to_string());
    let query = match (&create.query, create.columns.is_empty()) {
        (Some(q), _) => q.clone(),
        (None, false) => columns_query(&create, cx.state)?,
        (None, true) => return plan_err!("CREATE TABLE {target} needs columns or AS SELECT …"),
    };
    if create.query.is_some() && !create.columns.is_empty() {
        return Err(DataFusionError::Plan(
            "CREATE TABLE … AS with a column list is not supported; name the columns in the query"
                .into(),
        ));
    }
    if create.or_replace {
        return plan_err!("CREATE OR REPLACE TABLE is not supported; DROP TABLE {target} first, or INSERT OVERWRITE");
    }
    let home = home(cx, &target)?;
    check_write(cx, &target)?;
    let exists = match &home {
        Home::Files(files) => files.table_url(&target.table).is_some(),
        Home::Database(db) => {
            db.refresh().await?;
            datafusion::catalog::SchemaProvider::table_exist(db.as_ref(), &target.table)
        }
        Home::Lake(lake) => {
            datafusion::catalog::SchemaProvider::table_exist(lake.as_ref(), &target.table)
        }
    };
    if exists {
        if create.if_not_exists {
            return LogicalPlanBuilder::empty(true)
                .project(vec![lit(0u64).alias("count")])?
                .build();
        }
        return Err(already_exists(&target));
    }
    match home {
        Home::Files(files) => {
            let root = files
                .root()
                .map(|r| r.as_str().to_string())
                .unwrap_or_default();
            let folder = format!("{root}{}/", target.table);
            *cx.creates.lock() = Some(ListingTableUrl::parse(&folder)?.as_str().to_string());
            let copy = CopyToStatement {
                source: CopyToSource::Query(query),
                target: folder,
                partitioned_by: vec![],
                stored_as: Some(format!("{:?}", files.default_format()).to_ascii_uppercase()),
                options: vec![],
            };
            planned(cx, DFStatement::CopyTo(copy)).await
        }
        Home::Database(db) => {
            into_new_table(cx, &target, query, |schema| {
                db.new_table(&target.table, schema)
                    .ok_or_else(|| read_only(&target, db.name()))
            })
            .await
        }
        Home::Lake(lake) => {
            into_new_table(cx, &target, query, |schema| {
                lake.new_table(&target.table, schema)
                    .map_err(|e| DataFusionError::Plan(format!("CREATE TABLE {target}: {e}")))
            })
            .await
        }
    }
}

/// `CREATE TABLE … AS` into a database or lakehouse table: the query's rows go into
/// the provider `create` makes for the query's schema, whose sink creates the table.
async fn into_new_table(
    cx: &WriteContext<'_>,
    target: &ResolvedTableReference,
    query: Box<datafusion::sql::sqlparser::ast::Query>,
    create: impl FnOnce(SchemaRef) -> Result<Arc<dyn TableProvider>>,
) -> Result<LogicalPlan> {
    let input = planned(
        cx,
        DFStatement::Statement(Box::new(Statement::Query(query))),
    )
    .await?;
    let provider = create(Arc::new(input.schema().as_arrow().clone()))?;
    let dml = DmlStatement::new(
        TableReference::full(
            target.catalog.clone(),
            target.schema.clone(),
            target.table.clone(),
        ),
        provider_as_source(provider),
        WriteOp::Insert(InsertOp::Append),
        Arc::new(input),
    );
    Ok(LogicalPlan::Dml(dml))
}

async fn plan_drop(
    cx: &WriteContext<'_>,
    if_exists: bool,
    names: Vec<datafusion::sql::sqlparser::ast::ObjectName>,
) -> Result<LogicalPlan> {
    let [name] = names.as_slice() else {
        return Err(DataFusionError::Plan(
            "DROP TABLE takes one table at a time".into(),
        ));
    };
    let target = resolve(cx, &name.to_string());
    if if_exists && !exists_anywhere(cx, &target) {
        let drop = DropTable {
            target: target.to_string(),
            table: target.table.to_string(),
            files: None,
            url: None,
        };
        return LogicalPlanBuilder::scan("quiver_drop", provider_as_source(Arc::new(drop)), None)?
            .build();
    }
    let files = match home(cx, &target)? {
        Home::Files(f) => f.clone(),
        Home::Database(_) | Home::Lake(_) => {
            return plan_err!("DROP TABLE {target}: Quiver drops only file tables it created; drop database and lakehouse tables with their own tools")
        }
    };
    check_write(cx, &target)?;
    let url = files.table_url(&target.table);
    if url.is_none() && !if_exists {
        return plan_err!("table {target} not found");
    }
    let drop = DropTable {
        target: target.to_string(),
        table: target.table.to_string(),
        files: Some(files),
        url,
    };
    LogicalPlanBuilder::scan("quiver_drop", provider_as_source(Arc::new(drop)), None)?.build()
}
/// `DROP TABLE` of a file table: done when its scan is planned for execution, so
/// planning alone (a Describe) removes nothing.
#[derive(Debug)]
struct DropTable {
    target: String,
    table: String,
    files: Option<Arc<FilesSchema>>,
    url: Option<ListingTableUrl>,
}

/// Whether `t` names a table or view in any schema (`DROP TABLE IF EXISTS` of
/// none is no error, also where nothing may be written).
fn exists_anywhere(cx: &WriteContext<'_>, t: &ResolvedTableReference) -> bool {
    let Some(schema) = cx
        .state
        .catalog_list()
        .catalog(&t.catalog)
        .and_then(|c| c.schema(&t.schema))
    else {
        return false;
    };
    schema.table_exist(&t.table)
}

#[async_trait]
impl TableProvider for DropTable {
    fn schema(&self) -> SchemaRef {
        result_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _: &[Expr],
        _: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let message = match (&self.url, &self.files) {
            (Some(url), Some(files)) => {
                let store = check_quiver_made(
                    files,
                    &self.table,
                    &self.target,
                    url,
                    state,
                    "DROP TABLE",
                    "remove",
                )
                .await?;
                super::commit::remove_folder(&store, url).await;
                relist(files, state).await?;
                format!("DROP TABLE {}", self.target)
            }
            _ => format!("no table {}", self.target),
        };
        message_exec(message, projection)
    }
}
