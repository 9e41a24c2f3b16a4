//! `ALTER TABLE s.t RENAME TO u`: a files table Quiver created gets a new name
//! in the same source. dbt's `table` materialization builds `t__dbt_tmp`, then
//! renames it over the old table.
//!
//! On local disk the folder is renamed in one step, so readers see the old name
//! or the new one, never half a table. On an object store each file is copied to
//! the new folder and then deleted (object stores have no rename); readers may
//! see both for a moment. The new name must be free (`42P07`); the table must
//! have the `_quiver_table` marker, as for `DROP TABLE`. Done when the statement
//! runs, not when it is planned (a Describe renames nothing).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::plan_err;
use datafusion::common::ResolvedTableReference;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::ObjectName;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use quiver_connectors::files::FilesSchema;

use super::context::{
    already_exists, check_quiver_made, check_write, home, message_exec, relist, resolve,
    result_schema, Home, WriteContext,
};

/// Plans `ALTER TABLE from RENAME TO to` (the name may be qualified only by `from`'s own schema).
pub(super) async fn plan(
    cx: &WriteContext<'_>,
    from: &ObjectName,
    to: &ObjectName,
) -> Result<LogicalPlan> {
    let source = resolve(cx, &from.to_string());
    let new_name = match to.0.as_slice() {
        [one] => one.to_string().trim_matches('"').to_string(),
        _ => {
            let target = resolve(cx, &to.to_string());
            if (target.catalog.as_ref(), target.schema.as_ref())
                != (source.catalog.as_ref(), source.schema.as_ref())
            {
                return plan_err!("ALTER TABLE {source} RENAME TO {target}: a table keeps its schema; name only the new table");
            }
            target.table.to_string()
        }
    };
    let files = match home(cx, &source)? {
        Home::Files(f) => f.clone(),
        Home::Database(_) | Home::Lake(_) => {
            return plan_err!(
                "ALTER TABLE {source} RENAME: rename database and lakehouse tables with their own tools"
            )
        }
    };
    check_write(cx, &source)?;
    let Some(url) = files.table_url(&source.table) else {
        return Err(DataFusionError::External(Box::new(
            quiver_worker::status::ErrorKind::UndefinedTable
                .status(format!("table {source} not found")),
        )));
    };
    if files.table_url(&new_name).is_some() {
        return Err(already_exists(&format!(
            "{}.{}.{new_name}",
            source.catalog, source.schema
        )));
    }
    let rename = RenameTable {
        source,
        new_name,
        files,
        url,
    };
    LogicalPlanBuilder::scan("quiver_rename", provider_as_source(Arc::new(rename)), None)?.build()
}

#[derive(Debug)]
struct RenameTable {
    source: ResolvedTableReference,
    new_name: String,
    files: Arc<FilesSchema>,
    url: ListingTableUrl,
}

impl RenameTable {
    async fn run(&self, state: &dyn Session) -> Result<String> {
        let target = self.source.to_string();
        let store = check_quiver_made(
            &self.files,
            &self.source.table,
            &target,
            &self.url,
            state,
            "ALTER TABLE",
            "rename",
        )
        .await?;
        let root = self.files.root().ok_or_else(|| {
            DataFusionError::Internal("a writable source without a location".into())
        })?;
        let to = ListingTableUrl::parse(format!("{}{}/", root.as_str(), self.new_name))?;
        match (
            super::commit::local_path(&self.url),
            super::commit::local_path(&to),
        ) {
            (Some(from_path), Some(to_path)) => {
                if tokio::fs::try_exists(&to_path).await.unwrap_or(true) {
                    return Err(already_exists(&format!(
                        "{}.{}.{}",
                        self.source.catalog, self.source.schema, self.new_name
                    )));
                }
                tokio::fs::rename(&from_path, &to_path).await.map_err(|e| {
                    DataFusionError::Execution(format!(
                        "cannot rename {} to {}: {e}",
                        from_path.display(),
                        to_path.display()
                    ))
                })?;
            }
            _ => {
                let objects: Vec<_> = store
                    .list(Some(self.url.prefix()))
                    .try_collect()
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                for o in &objects {
                    let Some(rel) = o.location.prefix_match(self.url.prefix()) else {
                        continue;
                    };
                    let dest = object_store::path::Path::from_iter(to.prefix().parts().chain(rel));
                    store
                        .copy(&o.location, &dest)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                }
                for o in &objects {
                    store
                        .delete(&o.location)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                }
            }
        }
        relist(&self.files, state).await?;
        Ok(format!(
            "ALTER TABLE {} RENAME TO {}",
            self.source, self.new_name
        ))
    }
}

#[async_trait]
impl TableProvider for RenameTable {
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
        message_exec(self.run(state).await?, projection)
    }
}
