//! The catalog list sessions read: the sources' catalogs, with views added to any
//! schema (existing or not) and accelerated datasets answered from their copies
//! once a copy exists. A refresh reads through the same overlay with copies
//! bypassed, so it fetches from the source.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::acceleration::subset::{is_copy_of_subset, SubsetOrSource};
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::TableType;

use super::Datasets;

#[derive(Debug)]
pub struct VirtualCatalogList {
    inner: Arc<dyn CatalogProviderList>,
    datasets: Arc<Datasets>,
    bypass_copies: bool,
}

impl VirtualCatalogList {
    pub fn new(
        inner: Arc<dyn CatalogProviderList>,
        datasets: Arc<Datasets>,
        bypass_copies: bool,
    ) -> Self {
        Self {
            inner,
            datasets,
            bypass_copies,
        }
    }
}

impl CatalogProviderList for VirtualCatalogList {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.inner.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let inner = self.inner.catalog(name)?;
        Some(Arc::new(VirtualCatalog {
            name: name.to_string(),
            inner,
            datasets: self.datasets.clone(),
            bypass_copies: self.bypass_copies,
        }))
    }
}

#[derive(Debug)]
struct VirtualCatalog {
    name: String,
    inner: Arc<dyn CatalogProvider>,
    datasets: Arc<Datasets>,
    bypass_copies: bool,
}

impl CatalogProvider for VirtualCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.inner.schema_names().into_iter().collect();
        names.extend(self.datasets.view_schemas(&self.name));
        names.into_iter().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name);
        if inner.is_none()
            && self.datasets.views_in(&self.name, name).is_empty()
            && !self.datasets.is_namespace(&self.name, name)
        {
            return None;
        }
        Some(Arc::new(VirtualSchema {
            catalog: self.name.clone(),
            schema: name.to_string(),
            inner,
            datasets: self.datasets.clone(),
            bypass_copies: self.bypass_copies,
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }
}

#[derive(Debug)]
struct VirtualSchema {
    catalog: String,
    schema: String,
    /// The source's schema, if one has this name.
    inner: Option<Arc<dyn SchemaProvider>>,
    datasets: Arc<Datasets>,
    bypass_copies: bool,
}

impl VirtualSchema {
    fn qualified(&self, table: &str) -> String {
        format!("{}.{}.{}", self.catalog, self.schema, table)
    }

    /// `name` as its view or source table defines it, never its copy.
    async fn source(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(view) = self.datasets.view(&self.qualified(name)) {
            return super::views::provider(&self.datasets, &view, self.bypass_copies)
                .await
                .map(Some);
        }
        match &self.inner {
            Some(inner) => inner.table(name).await,
            None => Ok(None),
        }
    }

    /// The copy of `name`, when it is accelerated, has one, and copies are read.
    fn copy(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        if self.bypass_copies {
            return None;
        }
        self.datasets
            .acceleration(&self.qualified(name))?
            .current_table()
    }
}

#[async_trait]
impl SchemaProvider for VirtualSchema {
    fn owner_name(&self) -> Option<&str> {
        self.inner.as_ref().and_then(|s| s.owner_name())
    }

    fn table_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self
            .inner
            .as_ref()
            .map(|s| s.table_names())
            .unwrap_or_default()
            .into_iter()
            .collect();
        names.extend(self.datasets.views_in(&self.catalog, &self.schema));
        names.into_iter().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let copy = self.copy(name);
        let subset = copy
            .as_ref()
            .filter(|c| is_copy_of_subset(c.as_ref()))
            .cloned();
        match (copy, subset) {
            // A copy of a subset answers only the queries it covers: a planner rule decides.
            (Some(_), Some(subset)) => {
                let source = self.source(name).await?;
                Ok(source.map(|source| {
                    Arc::new(SubsetOrSource {
                        dataset: self.qualified(name),
                        copy: subset,
                        source,
                    }) as Arc<dyn TableProvider>
                }))
            }
            (Some(copy), None) => Ok(Some(copy)),
            (None, _) => self.source(name).await,
        }
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        if self.datasets.view(&self.qualified(name)).is_some() {
            return Ok(Some(TableType::View));
        }
        match &self.inner {
            Some(inner) => inner.table_type(name).await,
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.datasets.view(&self.qualified(name)).is_some()
            || self.inner.as_ref().is_some_and(|s| s.table_exist(name))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        match &self.inner {
            Some(inner) => inner.register_table(name, table),
            None => plan_err!("{}.{} holds only views", self.catalog, self.schema),
        }
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match &self.inner {
            Some(inner) => inner.deregister_table(name),
            None => Ok(None),
        }
    }
}
