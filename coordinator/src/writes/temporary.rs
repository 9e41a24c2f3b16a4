//! Session-scoped temporary relations: `CREATE TEMP[ORARY] TABLE t AS query`,
//! `CREATE TEMP[ORARY] VIEW v AS query`, `INSERT INTO t …` and `DROP TABLE|VIEW t`.
//!
//! They live in the coordinator's memory, in a `pg_temp` schema that only
//! sessions outliving one statement have (the PostgreSQL port's connections, see
//! [`new_schema`]): other sessions never see them, they go when the session ends,
//! and no file is written. As in PostgreSQL, an unqualified name finds a temporary
//! relation before anything in the search path ([`qualify`]). dbt's incremental
//! models stage their new rows this way.
//!
//! A temporary table is filled when its statement runs, not when it is planned
//! (a Describe creates nothing).

use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::memory::MemorySchemaProvider;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::common::{internal_err, plan_err};
use datafusion::datasource::memory::MemTable;
use datafusion::datasource::provider_as_source;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::view::ViewTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, TableType, WriteOp,
};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use datafusion::sql::sqlparser::ast::{
    visit_relations_mut, Ident, ObjectName, ObjectNamePart, ObjectType, Query, Statement,
    TableObject, Visit, Visitor,
};
use futures::TryStreamExt;
use quiver_worker::status::ErrorKind;

use crate::reserved::TEMP_SCHEMA;
use crate::security::access::UserAccess;

/// A new, empty temporary schema, for a session to register as [`TEMP_SCHEMA`] in
/// its default catalog.
pub fn new_schema() -> Arc<dyn SchemaProvider> {
    Arc::new(MemorySchemaProvider::new())
}

/// The temporary schema of the session `state` belongs to, if it has one.
pub fn schema_of(state: &SessionState) -> Option<Arc<dyn SchemaProvider>> {
    let o = state.config().options();
    state
        .catalog_list()
        .catalog(&o.catalog.default_catalog)?
        .schema(TEMP_SCHEMA)
}

/// Whether the session has temporary relations now.
pub fn any(state: &SessionState) -> bool {
    schema_of(state).is_some_and(|s| !s.table_names().is_empty())
}

/// Unqualified relation names that name a temporary relation become
/// `pg_temp.name` (common table expressions of the same name are left alone).
pub fn qualify(statement: &mut Statement, temp: &dyn SchemaProvider) {
    let names = temp.table_names();
    if names.is_empty() {
        return;
    }
    let mut ctes = CteNames::default();
    let _ = statement.visit(&mut ctes);
    let _ = visit_relations_mut(statement, |name: &mut ObjectName| {
        if let [part] = name.0.as_slice() {
            let bare = part.to_string();
            let bare = unquoted(&bare);
            if names.contains(&bare) && !ctes.0.contains(&bare) {
                name.0
                    .insert(0, ObjectNamePart::Identifier(Ident::new(TEMP_SCHEMA)));
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// An identifier's text as a table name: quoted as written, folded to lower case if not.
fn unquoted(ident: &str) -> String {
    match ident.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => ident.to_ascii_lowercase(),
    }
}

#[derive(Default)]
struct CteNames(HashSet<String>);

impl Visitor for CteNames {
    type Break = ();
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.0.insert(unquoted(&cte.alias.name.to_string()));
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether `name` (as written) is in the temporary schema: `pg_temp.t`, or `t`
/// with `temporary` set (a CREATE TEMPORARY).
fn temp_name(name: &ObjectName, temporary: bool) -> Result<Option<String>> {
    match name.0.as_slice() {
        [schema, table] if unquoted(&schema.to_string()) == TEMP_SCHEMA => {
            Ok(Some(unquoted(&table.to_string())))
        }
        [table] if temporary => Ok(Some(unquoted(&table.to_string()))),
        _ if temporary => Err(DataFusionError::External(Box::new(
            ErrorKind::InvalidStatement.status(format!(
                "cannot create temporary relation {name} in a non-temporary schema: name it without a schema"
            )),
        ))),
        _ => Ok(None),
    }
}

fn no_session() -> DataFusionError {
    DataFusionError::External(Box::new(ErrorKind::FeatureNotSupported.status(
        "temporary tables and views belong to a session, and only connections to the PostgreSQL port keep one",
    )))
}

/// Plans `statement` if it is about temporary relations (names already
/// [`qualify`]-ed); None for any other statement.
pub async fn plan(
    statement: &Statement,
    state: &SessionState,
    access: &UserAccess,
) -> Option<Result<LogicalPlan>> {
    let temp = schema_of(state);
    match statement {
        Statement::CreateTable(create) if create.temporary => Some(
            async {
                let temp = temp.ok_or_else(no_session)?;
                let name = temp_name(&create.name, true)?.unwrap_or_default();
                let Some(query) = &create.query else {
                    return plan_err!(
                        "CREATE TEMPORARY TABLE {name} needs AS SELECT …: temporary tables are made from a query"
                    );
                };
                if temp.table_exist(&name) {
                    if create.if_not_exists {
                        return LogicalPlanBuilder::empty(false).build();
                    }
                    return Err(exists(&name));
                }
                let input = read(state, access, query).await?;
                let schema: SchemaRef = Arc::new(input.schema().as_arrow().clone());
                let target = NewTempTable { temp, name: name.clone(), schema };
                Ok(LogicalPlan::Dml(DmlStatement::new(
                    TableReference::partial(TEMP_SCHEMA, name),
                    provider_as_source(Arc::new(target)),
                    WriteOp::Insert(InsertOp::Append),
                    Arc::new(input),
                )))
            }
            .await,
        ),
        Statement::CreateView(view) if view.temporary => Some(
            async {
                let temp = temp.ok_or_else(no_session)?;
                let name = temp_name(&view.name, true)?.unwrap_or_default();
                if temp.table_exist(&name) && !view.or_replace {
                    return Err(exists(&name));
                }
                let query = read(state, access, &view.query).await?;
                let action = Action::CreateView {
                    temp,
                    name,
                    query,
                    sql: view.query.to_string(),
                };
                action.plan()
            }
            .await,
        ),
        Statement::Drop {
            object_type: ObjectType::Table | ObjectType::View,
            names,
            if_exists,
            ..
        } => {
            let temp = temp?;
            // `DROP TABLE t` drops a temporary `t` first, as in PostgreSQL.
            let mut dropped = Vec::new();
            for n in names {
                let name = match temp_name(n, false).ok().flatten() {
                    Some(name) => name,
                    None => match n.0.as_slice() {
                        [one] if temp.table_exist(&unquoted(&one.to_string())) => {
                            unquoted(&one.to_string())
                        }
                        _ => return None,
                    },
                };
                dropped.push(name);
            }
            Some((|| {
                for name in &dropped {
                    if !temp.table_exist(name) && !if_exists {
                        return Err(DataFusionError::External(Box::new(
                            ErrorKind::UndefinedTable
                                .status(format!("table {TEMP_SCHEMA}.{name} does not exist")),
                        )));
                    }
                }
                Action::Drop {
                    temp,
                    names: dropped,
                }
                .plan()
            })())
        }
        Statement::Insert(insert) => {
            let TableObject::TableName(table) = &insert.table else {
                return None;
            };
            temp_name(table, false).ok().flatten()?;
            Some(
                async {
                    let plan = state
                        .statement_to_plan(datafusion::sql::parser::Statement::Statement(
                            Box::new(statement.clone()),
                        ))
                        .await?;
                    crate::security::enforce::enforce(plan, access, state)
                }
                .await,
            )
        }
        _ => None,
    }
}

/// The plan of `query`, with the user's read rules applied.
async fn read(state: &SessionState, access: &UserAccess, query: &Query) -> Result<LogicalPlan> {
    let plan = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            Statement::Query(Box::new(query.clone())),
        )))
        .await?;
    crate::security::enforce::enforce(plan, access, state)
}

fn exists(name: &str) -> DataFusionError {
    super::context::already_exists(&format!("{TEMP_SCHEMA}.{name}"))
}

/// The target of `CREATE TEMPORARY TABLE … AS`: registered when its rows are in.
#[derive(Debug)]
struct NewTempTable {
    temp: Arc<dyn SchemaProvider>,
    name: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for NewTempTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _: &dyn Session,
        _: Option<&Vec<usize>>,
        _: &[Expr],
        _: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        internal_err!(
            "{TEMP_SCHEMA}.{} is being created and cannot be read yet",
            self.name
        )
    }

    async fn insert_into(
        &self,
        _: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let sink = TempSink {
            temp: self.temp.clone(),
            name: self.name.clone(),
            schema: self.schema.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

#[derive(Debug)]
struct TempSink {
    temp: Arc<dyn SchemaProvider>,
    name: String,
    schema: SchemaRef,
}

impl DisplayAs for TempSink {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TemporaryTable: {TEMP_SCHEMA}.{}", self.name)
    }
}

#[async_trait]
impl DataSink for TempSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _: &Arc<TaskContext>,
    ) -> Result<u64> {
        let batches: Vec<_> = data.try_collect().await?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        // Batches in the announced types (a plan may stream a wider one).
        let batches = batches
            .into_iter()
            .map(|b| {
                datafusion::arrow::record_batch::RecordBatch::try_new(
                    self.schema.clone(),
                    b.columns().to_vec(),
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let table = MemTable::try_new(self.schema.clone(), vec![batches])?;
        if self.temp.table_exist(&self.name) {
            return Err(exists(&self.name));
        }
        self.temp
            .register_table(self.name.clone(), Arc::new(table))?;
        Ok(rows)
    }
}

/// What a statement about temporary relations does when it runs.
#[derive(Debug)]
enum Action {
    CreateView {
        temp: Arc<dyn SchemaProvider>,
        name: String,
        query: LogicalPlan,
        sql: String,
    },
    Drop {
        temp: Arc<dyn SchemaProvider>,
        names: Vec<String>,
    },
}

impl Action {
    fn plan(self) -> Result<LogicalPlan> {
        LogicalPlanBuilder::scan("quiver_temporary", provider_as_source(Arc::new(self)), None)?
            .build()
    }

    fn run(&self) -> Result<String> {
        match self {
            Action::CreateView {
                temp,
                name,
                query,
                sql,
            } => {
                let view = ViewTable::new(query.clone(), Some(sql.clone()));
                temp.deregister_table(name)?;
                temp.register_table(name.clone(), Arc::new(view))?;
                Ok(format!("CREATE VIEW {TEMP_SCHEMA}.{name}"))
            }
            Action::Drop { temp, names } => {
                for name in names {
                    temp.deregister_table(name)?;
                }
                Ok("DROP TABLE".into())
            }
        }
    }
}

#[async_trait]
impl TableProvider for Action {
    fn schema(&self) -> SchemaRef {
        super::context::result_schema()
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
        super::context::message_exec(self.run()?, projection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::{DFParser, Statement as DFStatement};

    fn statement(sql: &str) -> Statement {
        match DFParser::parse_sql(sql).expect("parses").pop_front() {
            Some(DFStatement::Statement(s)) => *s,
            other => panic!("not a statement: {other:?}"),
        }
    }

    #[tokio::test]
    async fn unqualified_names_find_temporary_tables_first_but_not_over_ctes() -> Result<()> {
        let temp = new_schema();
        let table = MemTable::try_new(
            Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            vec![vec![]],
        )?;
        temp.register_table("t".into(), Arc::new(table))?;
        let mut s =
            statement("SELECT * FROM t JOIN lake.t ON true JOIN u ON true JOIN \"T\" ON true");
        qualify(&mut s, temp.as_ref());
        assert_eq!(
            s.to_string(),
            "SELECT * FROM pg_temp.t JOIN lake.t ON true JOIN u ON true JOIN \"T\" ON true"
        );
        let mut s = statement("WITH t AS (SELECT 1) SELECT * FROM t");
        qualify(&mut s, temp.as_ref());
        assert_eq!(s.to_string(), "WITH t AS (SELECT 1) SELECT * FROM t");
        let mut s = statement("INSERT INTO lake.x SELECT * FROM T");
        qualify(&mut s, temp.as_ref());
        assert_eq!(s.to_string(), "INSERT INTO lake.x SELECT * FROM pg_temp.T");
        Ok(())
    }

    #[test]
    fn temporary_relations_take_no_other_schema() {
        let name = |s: &str| match statement(&format!("DROP TABLE {s}")) {
            Statement::Drop { names, .. } => names[0].clone(),
            _ => unreachable!(),
        };
        assert_eq!(temp_name(&name("x"), true).ok().flatten(), Some("x".into()));
        assert_eq!(
            temp_name(&name("pg_temp.X"), false).ok().flatten(),
            Some("x".into())
        );
        assert_eq!(temp_name(&name("lake.x"), false).ok().flatten(), None);
        let e = temp_name(&name("lake.x"), true)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.is_some_and(|e| e.contains("non-temporary schema")),
            "refused"
        );
    }
}
