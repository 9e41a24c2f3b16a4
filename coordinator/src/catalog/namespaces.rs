//! `CREATE SCHEMA [IF NOT EXISTS] [catalog.]name` and `DROP SCHEMA [IF EXISTS]
//! name [CASCADE]`: schemas made from SQL, which hold views (a source's schema
//! comes from the config file, one per `[[source]]`). Kept in the metadata store,
//! so they outlive the coordinator and every coordinator sharing the store sees
//! them. Creating a schema that exists, a source's or one made before, is
//! `42P06` (or nothing, with `IF NOT EXISTS`); tools such as dbt create their
//! target schema so before every run.

use std::sync::Arc;

use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use quiver_worker::status::ErrorKind;

use super::{store_error, Datasets};

/// `catalog.schema` for a schema name as written (one part: the default catalog).
pub fn qualify(datasets: &Datasets, name: &str) -> Result<(String, String)> {
    let parts: Vec<String> = name
        .split('.')
        .map(
            |p| match p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                Some(quoted) => quoted.to_string(),
                None => p.to_ascii_lowercase(),
            },
        )
        .collect();
    match parts.as_slice() {
        [schema] => Ok((datasets.defaults.0.clone(), schema.clone())),
        [catalog, schema] => Ok((catalog.clone(), schema.clone())),
        _ => plan_err!("'{name}' is not a schema name (schema or catalog.schema)"),
    }
}

fn exists(datasets: &Datasets, catalog: &str, schema: &str) -> bool {
    let source = datasets
        .inner_catalogs()
        .and_then(|c| c.catalog(catalog))
        .is_some_and(|c| c.schema(schema).is_some());
    source
        || datasets.is_namespace(catalog, schema)
        || !datasets.views_in(catalog, schema).is_empty()
}

/// Creates the schema `name`; the statement's answer.
pub async fn create(datasets: &Arc<Datasets>, name: &str, if_not_exists: bool) -> Result<String> {
    let (catalog, schema) = qualify(datasets, name)?;
    if exists(datasets, &catalog, &schema) {
        if if_not_exists {
            return Ok(format!("schema {catalog}.{schema} exists"));
        }
        return Err(DataFusionError::External(Box::new(
            ErrorKind::DuplicateSchema.status(format!("schema {catalog}.{schema} already exists")),
        )));
    }
    let known = datasets
        .inner_catalogs()
        .map(|c| c.catalog_names())
        .unwrap_or_default();
    if !known.contains(&catalog) {
        return Err(DataFusionError::External(Box::new(
            ErrorKind::UndefinedObject.status(format!(
                "unknown catalog '{catalog}' for schema {schema} (catalogs: {})",
                known.join(", ")
            )),
        )));
    }
    if crate::reserved::is_reserved_schema(&schema) {
        return plan_err!("the schema name {schema} is reserved");
    }
    datasets
        .store()
        .put_namespace(&format!("{catalog}.{schema}"))
        .await
        .map_err(store_error)?;
    datasets.reload().await?;
    Ok(format!("CREATE SCHEMA {catalog}.{schema}"))
}

/// Drops the schema `name`, made with `CREATE SCHEMA`; with `cascade`, its views too.
pub async fn drop(
    datasets: &Arc<Datasets>,
    name: &str,
    if_exists: bool,
    cascade: bool,
) -> Result<String> {
    let (catalog, schema) = qualify(datasets, name)?;
    let source = datasets
        .inner_catalogs()
        .and_then(|c| c.catalog(&catalog))
        .is_some_and(|c| c.schema(&schema).is_some());
    if source {
        return plan_err!(
            "{catalog}.{schema} is a source's schema; remove its [[source]] from the config file instead"
        );
    }
    if !exists(datasets, &catalog, &schema) {
        if if_exists {
            return Ok(format!("no schema {catalog}.{schema}"));
        }
        return Err(DataFusionError::External(Box::new(
            ErrorKind::UndefinedObject.status(format!("schema {catalog}.{schema} does not exist")),
        )));
    }
    let views = datasets.views_in(&catalog, &schema);
    if !views.is_empty() && !cascade {
        return Err(DataFusionError::External(Box::new(
            ErrorKind::DependentObjects.status(format!(
                "schema {catalog}.{schema} holds views ({}); DROP SCHEMA … CASCADE drops them too",
                views.join(", ")
            )),
        )));
    }
    for view in views {
        let full = format!("{catalog}.{schema}.{view}");
        if datasets.acceleration(&full).is_some() {
            return plan_err!(
                "view {full} is accelerated; stop accelerating it before dropping its schema"
            );
        }
        datasets
            .store()
            .drop_view(&full)
            .await
            .map_err(store_error)?;
    }
    datasets
        .store()
        .drop_namespace(&format!("{catalog}.{schema}"))
        .await
        .map_err(store_error)?;
    datasets.reload().await?;
    Ok(format!("DROP SCHEMA {catalog}.{schema}"))
}
