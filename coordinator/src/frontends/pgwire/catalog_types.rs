//! `pg_catalog` columns in PostgreSQL's types where tools read them as such.
//!
//! datafusion-pg-catalog keeps `pg_index.indkey`, `pg_constraint.conkey` and the
//! like as text (`'1 2'`, `'[1, 2]'`). SQLAlchemy's inspector (so Superset's
//! dataset editor), dbt and JDBC's `DatabaseMetaData` apply `unnest`, `= ANY` and
//! `generate_subscripts` to them, which need arrays; and `pg_class.reloptions`,
//! which SQLAlchemy's index reflection selects, is missing. Each of those tables
//! is served as a view over the crate's table with the columns retyped (and the
//! missing ones added as NULL), so the rows stay the crate's.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::ViewTable;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;

/// `(table, [(column, SQL over the crate's column, or None to add it)])`.
const RETYPED: &[(&str, &[(&str, &str)])] = &[
    (
        "pg_index",
        &[
            ("indkey", "TRY_CAST(string_to_array(indkey, ' ') AS SMALLINT[])"),
            ("indoption", "TRY_CAST(string_to_array(indoption, ' ') AS SMALLINT[])"),
            ("indclass", "TRY_CAST(string_to_array(indclass, ' ') AS INT[])"),
            ("indcollation", "TRY_CAST(string_to_array(indcollation, ' ') AS INT[])"),
            ("indnullsnotdistinct", "CAST(false AS BOOLEAN)"),
        ],
    ),
    (
        "pg_constraint",
        &[
            ("conkey", "TRY_CAST(string_to_array(regexp_replace(conkey, '[\\[\\]{} ]', '', 'g'), ',') AS SMALLINT[])"),
            ("confkey", "TRY_CAST(string_to_array(regexp_replace(confkey, '[\\[\\]{} ]', '', 'g'), ',') AS SMALLINT[])"),
            ("conpfeqop", "TRY_CAST(string_to_array(regexp_replace(conpfeqop, '[\\[\\]{} ]', '', 'g'), ',') AS INT[])"),
            ("conppeqop", "TRY_CAST(string_to_array(regexp_replace(conppeqop, '[\\[\\]{} ]', '', 'g'), ',') AS INT[])"),
            ("conffeqop", "TRY_CAST(string_to_array(regexp_replace(conffeqop, '[\\[\\]{} ]', '', 'g'), ',') AS INT[])"),
            ("conexclop", "TRY_CAST(string_to_array(regexp_replace(conexclop, '[\\[\\]{} ]', '', 'g'), ',') AS INT[])"),
        ],
    ),
    ("pg_class", &[("reloptions", "CAST(NULL AS VARCHAR[])")]),
];

/// `pg_catalog` with the tables of [`RETYPED`] served as views.
#[derive(Debug)]
pub struct Retyped {
    inner: Arc<dyn SchemaProvider>,
}

impl Retyped {
    pub fn new(inner: Arc<dyn SchemaProvider>) -> Self {
        Self { inner }
    }
}

/// The view's SQL over `t`: every column of `columns` in order, retyped where
/// `changes` says, then the added columns.
fn view_sql(columns: &[String], changes: &[(&str, &str)]) -> String {
    let retyped: HashMap<&str, &str> = changes.iter().copied().collect();
    let mut items: Vec<String> = columns
        .iter()
        .map(|c| match retyped.get(c.as_str()) {
            Some(sql) => format!("{sql} AS \"{c}\""),
            None => format!("\"{}\"", c.replace('"', "\"\"")),
        })
        .collect();
    for (name, sql) in changes {
        if !columns.iter().any(|c| c == name) {
            items.push(format!("{sql} AS \"{name}\""));
        }
    }
    format!("SELECT {} FROM t", items.join(", "))
}

#[async_trait]
impl SchemaProvider for Retyped {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(relations) = super::catalog_relations::Relations::named(name) {
            return Ok(Some(Arc::new(relations)));
        }
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let Some((_, changes)) = RETYPED.iter().find(|(t, _)| *t == name) else {
            return Ok(Some(table));
        };
        let columns: Vec<String> = table
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let ctx = SessionContext::new();
        ctx.register_table("t", table)?;
        let plan = ctx
            .sql(&view_sql(&columns, changes))
            .await?
            .into_unoptimized_plan();
        Ok(Some(Arc::new(ViewTable::new(plan, None))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_keep_the_column_order_and_add_what_is_missing() {
        let sql = view_sql(
            &["a".into(), "indkey".into()],
            &[("indkey", "X(indkey)"), ("extra", "NULL")],
        );
        assert_eq!(
            sql,
            "SELECT \"a\", X(indkey) AS \"indkey\", NULL AS \"extra\" FROM t"
        );
    }
}
