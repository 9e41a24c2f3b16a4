//! One user's view of the catalogs: listings (Flight SQL metadata calls,
//! `information_schema`, `SHOW TABLES`) show only what the user may read. Looking a
//! table up by name still finds it, so a query that names a table the user may not
//! read fails with a permission error naming it (see [`super::enforce`]) rather
//! than "not found".

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::Result;

use super::access::{Decision, TableName, UserAccess};

/// The catalog list as `access` sees it.
#[derive(Debug)]
pub struct CatalogView {
    inner: Arc<dyn CatalogProviderList>,
    access: Arc<UserAccess>,
}

impl CatalogView {
    pub fn new(inner: Arc<dyn CatalogProviderList>, access: Arc<UserAccess>) -> Self {
        Self { inner, access }
    }
}

impl CatalogProviderList for CatalogView {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.inner
            .catalog_names()
            .into_iter()
            .filter(|c| self.access.sees_catalog(c))
            .collect()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let inner = self.inner.catalog(name)?;
        Some(Arc::new(CatalogViewOf {
            name: name.to_string(),
            inner,
            access: self.access.clone(),
        }))
    }
}

#[derive(Debug)]
struct CatalogViewOf {
    name: String,
    inner: Arc<dyn CatalogProvider>,
    access: Arc<UserAccess>,
}

impl CatalogProvider for CatalogViewOf {
    fn schema_names(&self) -> Vec<String> {
        self.inner
            .schema_names()
            .into_iter()
            .filter(|s| self.access.sees_schema(&self.name, s))
            .collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        Some(Arc::new(SchemaView {
            catalog: self.name.clone(),
            schema: name.to_string(),
            inner,
            access: self.access.clone(),
        }))
    }
}

#[derive(Debug)]
struct SchemaView {
    catalog: String,
    schema: String,
    inner: Arc<dyn SchemaProvider>,
    access: Arc<UserAccess>,
}

#[async_trait]
impl SchemaProvider for SchemaView {
    fn owner_name(&self) -> Option<&str> {
        self.inner.owner_name()
    }

    fn table_names(&self) -> Vec<String> {
        let (catalog, schema) = (self.catalog.as_str(), self.schema.as_str());
        self.inner
            .table_names()
            .into_iter()
            .filter(|table| {
                self.access.decide(TableName {
                    catalog,
                    schema,
                    table,
                }) != Decision::Deny
            })
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.inner.table(name).await
    }

    async fn table_type(&self, name: &str) -> Result<Option<datafusion::logical_expr::TableType>> {
        self.inner.table_type(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}
