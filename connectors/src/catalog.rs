//! Turns the configured sources into DataFusion catalogs and schemas:
//! source `s` with catalog `c` and schema `n` becomes `c.n.<table>`.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider};
use datafusion::prelude::SessionContext;

use crate::config::{SourceConfig, SourceKind};
use crate::files::FilesSchema;
use crate::remote_schema::RemoteSchema;
use crate::ConnectorError;

/// What registering the sources produced.
#[derive(Default)]
pub struct Registered {
    /// Sources that are partly unavailable (registered anyway; they fail per table).
    pub warnings: Vec<String>,
    /// Schemas of SQL databases, whose table lists can be refreshed.
    pub remote: Vec<Arc<RemoteSchema>>,
    /// Schemas of file sources (where writes go, when writable).
    pub files: Vec<Arc<FilesSchema>>,
    /// Schemas of Delta Lake and Iceberg sources (their snapshots for `system.snapshots`).
    pub lakehouse: Vec<Arc<crate::lakehouse::LakeSchema>>,
}

/// Registers every source on `ctx`.
pub async fn register_sources(
    ctx: &SessionContext,
    sources: &[SourceConfig],
) -> Result<Registered, ConnectorError> {
    let (mut warnings, mut remote, mut file_schemas) = (vec![], vec![], vec![]);
    let mut delta_schemas = vec![];
    let runtime = ctx.runtime_env();
    let config = ctx.copied_config();
    for source in sources {
        let (catalog_name, schema_name) = (source.catalog_name(), source.schema_name());
        let qualified = format!("{catalog_name}.{schema_name}");
        let catalog: Arc<dyn CatalogProvider> = match ctx.catalog(catalog_name) {
            Some(c) => c,
            None => {
                let c: Arc<dyn CatalogProvider> = Arc::new(MemoryCatalogProvider::new());
                ctx.register_catalog(catalog_name, c.clone());
                c
            }
        };
        if catalog.schema(schema_name).is_some() {
            return Err(ConnectorError::Source {
                source_name: source.name.clone(),
                message: format!("schema {qualified} is already defined by another source"),
            });
        }
        let schema: Arc<dyn SchemaProvider> = match &source.kind {
            SourceKind::Files(files) => {
                if files.writable && files.location.is_none() {
                    return Err(ConnectorError::Source {
                        source_name: source.name.clone(),
                        message: "writable = true needs a location: new tables and COPY targets go under it".into(),
                    });
                }
                let (schema, mut w) =
                    FilesSchema::discover(qualified, files, runtime.clone(), config.clone())
                        .await?;
                warnings.append(&mut w);
                let schema = Arc::new(schema);
                file_schemas.push(schema.clone());
                schema
            }
            SourceKind::Postgres(pg) => {
                let (schema, w) = crate::postgres::schema(&source.name, qualified, pg).await?;
                keep_remote(schema, w, &mut warnings, &mut remote)
            }
            SourceKind::Mysql(my) => {
                let (schema, w) = crate::mysql::schema(&source.name, qualified, my).await?;
                keep_remote(schema, w, &mut warnings, &mut remote)
            }
            SourceKind::Sqlite(sqlite) => {
                let (schema, w) = crate::sqlite::schema(&source.name, qualified, sqlite).await?;
                keep_remote(schema, w, &mut warnings, &mut remote)
            }
            SourceKind::FlightSql(flight) => {
                let (schema, w) =
                    crate::flight_sql::schema(&source.name, qualified, flight).await?;
                keep_remote(schema, w, &mut warnings, &mut remote)
            }
            SourceKind::Delta(delta) => {
                let (schema, mut w) = delta.discover(qualified, runtime.clone()).await?;
                warnings.append(&mut w);
                delta_schemas.push(schema.clone());
                schema
            }
            SourceKind::Iceberg(iceberg) => {
                let views = config.options().execution.parquet.schema_force_view_types;
                let (schema, mut w) = iceberg.discover(qualified, runtime.clone(), views).await?;
                warnings.append(&mut w);
                delta_schemas.push(schema.clone());
                schema
            }
        };
        catalog.register_schema(schema_name, schema)?;
    }
    Ok(Registered {
        warnings,
        remote,
        files: file_schemas,
        lakehouse: delta_schemas,
    })
}

/// Records a database schema for REFRESH and returns it for registration.
fn keep_remote(
    schema: RemoteSchema,
    mut new_warnings: Vec<String>,
    warnings: &mut Vec<String>,
    remote: &mut Vec<Arc<RemoteSchema>>,
) -> Arc<dyn SchemaProvider> {
    warnings.append(&mut new_warnings);
    let schema = Arc::new(schema);
    remote.push(schema.clone());
    schema
}
