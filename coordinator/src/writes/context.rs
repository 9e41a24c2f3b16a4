//! The vocabulary every write statement is planned with: the context it is
//! planned in, where a table's writes go ([`Home`]), the checks (a writable source,
//! the user's `write` right, a table Quiver made) and the one-row answer of a
//! statement done at scan time. Used by `statements`, `rename`, `ingest`,
//! `temporary` and `commit`; uses none of them.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::plan_err;
use datafusion::common::{ResolvedTableReference, TableReference};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStoreExt;
use quiver_connectors::files::FilesSchema;
use quiver_connectors::remote_schema::RemoteSchema;

use super::Writes;
use crate::security::access::{TableName, UserAccess};

/// What a write statement needs to be planned.
pub struct WriteContext<'a> {
    pub writes: &'a Writes,
    pub access: &'a UserAccess,
    pub state: &'a SessionState,
    /// Where a `CREATE TABLE … AS` into a files source records the folder it
    /// creates (the session then carries it as [`super::CreateTarget`]).
    pub creates: &'a parking_lot::Mutex<Option<String>>,
}

fn denied(cx: &WriteContext<'_>, what: &str) -> DataFusionError {
    let who = cx.access.user().unwrap_or("anonymous");
    DataFusionError::External(Box::new(tonic::Status::permission_denied(format!(
        "access denied: user '{who}' may not write {what} (no access rule with write = true matches)"
    ))))
}

pub(super) fn check_write(cx: &WriteContext<'_>, t: &ResolvedTableReference) -> Result<()> {
    let name = TableName {
        catalog: &t.catalog,
        schema: &t.schema,
        table: &t.table,
    };
    if cx.access.may_write(name) {
        Ok(())
    } else {
        Err(denied(cx, &t.to_string()))
    }
}

pub(super) fn resolve(cx: &WriteContext<'_>, name: &str) -> ResolvedTableReference {
    let o = cx.state.config().options();
    TableReference::parse_str(name).resolve(&o.catalog.default_catalog, &o.catalog.default_schema)
}

/// Where a table's writes go.
pub(super) enum Home<'a> {
    Files(&'a Arc<FilesSchema>),
    Database(&'a Arc<RemoteSchema>),
    Lake(&'a Arc<quiver_connectors::lakehouse::LakeSchema>),
}

/// The writable source of `catalog.schema`, or an error saying why it is not one.
pub(super) fn home<'a>(cx: &'a WriteContext<'_>, t: &ResolvedTableReference) -> Result<Home<'a>> {
    let qualified = format!("{}.{}", t.catalog, t.schema);
    if let Some(files) = cx.writes.files_schema(&qualified) {
        if files.is_writable() {
            return Ok(Home::Files(files));
        }
        return Err(read_only(t, &qualified));
    }
    if let Some(db) = cx.writes.remote_schema(&qualified) {
        if db.is_writable() {
            return Ok(Home::Database(db));
        }
        return Err(read_only(t, &qualified));
    }
    if let Some(lake) = cx.writes.lake_schema(&qualified) {
        if lake.is_writable() {
            return Ok(Home::Lake(lake));
        }
        if lake.format() == "iceberg" {
            return plan_err!(
                "{t} is read-only: Quiver reads Iceberg tables but does not write them yet"
            );
        }
        return Err(read_only(t, &qualified));
    }
    plan_err!("{t}: there is no source mounted as {qualified} to write to")
}

pub(super) fn read_only(t: &ResolvedTableReference, qualified: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "{t} is read-only: the source mounted as {qualified} is not writable (set writable = true in its [[source]] to allow writes)"
    ))
}

/// SQLSTATE 42P07.
pub(super) fn already_exists(target: &impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(Box::new(
        quiver_worker::status::ErrorKind::DuplicateTable
            .status(format!("table {target} already exists")),
    ))
}

pub(super) fn result_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "result",
        DataType::Utf8,
        false,
    )]))
}

/// Refuses to change a table Quiver did not create: one declared in the config
/// file (`fix` says what to do there instead), or a folder without the marker
/// file. Returns the table's store.
pub(super) async fn check_quiver_made(
    files: &FilesSchema,
    table: &str,
    target: &str,
    url: &ListingTableUrl,
    state: &dyn Session,
    statement: &str,
    fix: &str,
) -> Result<Arc<dyn object_store::ObjectStore>> {
    if !files.is_discovered_folder(table) {
        return plan_err!("{target} is declared in the config file; {fix} it there");
    }
    let store = state.runtime_env().object_store(url)?;
    if store
        .head(&super::join_url(url, super::MARKER))
        .await
        .is_err()
    {
        return plan_err!(
            "{target} was not created by Quiver (its folder has no {} file), so {statement} leaves it alone",
            super::MARKER
        );
    }
    Ok(store)
}

/// Lists the source again after its folders changed (the listing cache first).
pub(super) async fn relist(files: &FilesSchema, state: &dyn Session) -> Result<()> {
    if let Some(cache) = state.runtime_env().cache_manager.get_list_files_cache() {
        cache.clear();
    }
    files.rediscover().await
}

/// The one-row text answer of a statement done at scan time, as its scan.
pub(super) fn message_exec(
    message: String,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let batch = RecordBatch::try_new(
        result_schema(),
        vec![Arc::new(StringArray::from(vec![message]))],
    )?;
    MemorySourceConfig::try_new_exec(&[vec![batch]], result_schema(), projection.cloned())
        .map(|e| e as Arc<dyn ExecutionPlan>)
}
