//! What each [`Command`] does, when its scan is planned for execution.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{exec_err, plan_err};
use datafusion::error::{DataFusionError, Result};

use crate::catalog::acceleration::{changes, refresh};
use crate::catalog::config::{AccelerateSpec, RefreshMode};
use crate::catalog::store::{now_ms, StoredAcceleration, StoredView};
use crate::catalog::{store_error, Datasets, Origin};

use super::Command;

/// How long `ALTER TABLE … SET (accelerated = true, mode = 'changes')` waits for
/// the live copy to answer queries.
const LIVE_COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

fn text(schema: SchemaRef, message: String) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(vec![message]))],
    )?)
}

/// Does what `command` says and answers with its one-row result.
pub(super) async fn run(datasets: &Arc<Datasets>, command: &Command) -> Result<RecordBatch> {
    let schema = command.schema();
    match command {
        Command::CreateSchema {
            name,
            if_not_exists,
        } => {
            return text(
                schema,
                crate::catalog::namespaces::create(datasets, name, *if_not_exists).await?,
            )
        }
        Command::DropSchema {
            name,
            if_exists,
            cascade,
        } => {
            return text(
                schema,
                crate::catalog::namespaces::drop(datasets, name, *if_exists, *cascade).await?,
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
            crate::catalog::views::plan_body(datasets, &name, sql, true).await?;
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
    if spec.mode == RefreshMode::Changes {
        // Refused before it is recorded: a table without a key, a view, another source.
        changes::check(datasets, name, &spec).await?;
    }
    if let Some(filter) = &spec.filter {
        crate::catalog::acceleration::subset::check(datasets, name, filter).await?;
    }
    let keep = datasets
        .acceleration(name)
        .map(|a| a.info())
        .filter(|i| spec.keeps_copy_of(&i.spec));
    // A live copy that is replaced stops, and its slot goes.
    if let Some(previous) = datasets.acceleration(name) {
        if previous.with_spec(|s| s.mode) == RefreshMode::Changes && keep.is_none() {
            if let Err(e) = changes::drop_stream(datasets, &previous).await {
                tracing::warn!(dataset = %name, error = %e, "cannot drop the replaced live copy's slot");
            }
        }
    }
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
    if acc.with_spec(|s| s.mode) == RefreshMode::Changes {
        // A new definition is a new attempt, even after a feed that gave up.
        changes::stop(&acc).await;
        changes::ensure_running(datasets, &acc);
        return match changes::wait_consistent(&acc, LIVE_COPY_WAIT).await {
            Ok(copy) => Ok(format!(
                "{name} accelerated: {} rows copied, kept live from its change stream",
                copy.rows
            )),
            Err(e) => exec_err!(
                "{name} is accelerated with mode 'changes', but its copy is not ready (queries read the source until it is; system.accelerations shows the error): {}",
                e.message()
            ),
        };
    }
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
    if acc.with_spec(|s| s.mode) == RefreshMode::Changes {
        // The server keeps WAL for a slot until it is dropped: drop it first, and
        // keep the acceleration if that fails, so the slot is not forgotten.
        changes::drop_stream(datasets, &acc).await.map_err(|e| {
            DataFusionError::Execution(format!(
                "{name} stays accelerated: its replication slot could not be dropped: {e}"
            ))
        })?;
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
                    let _ = crate::catalog::acceleration::delete_folder(&store, &url).await;
                }
            }
        });
    }
    Ok(())
}
