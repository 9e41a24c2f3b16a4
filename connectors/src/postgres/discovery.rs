//! Tables, views and columns of a PostgreSQL schema, from the server's catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tokio_postgres::types::Type;

use super::types::PgKind;
use crate::remote_schema::DiscoveredTable;

const COLUMNS: &str = "
SELECT c.relname::text, a.attname::text, a.atttypid, a.atttypmod, t.typtype::text,
  (SELECT array_position(string_to_array(i.indkey::text, ' ')::int2[], a.attnum)
     FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS key_position
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum";

/// Every table and view of `schema` with its Arrow schema and primary key. Columns
/// of types Quiver cannot decode are typed as text (they are read as text).
pub async fn tables(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<BTreeMap<String, DiscoveredTable>, tokio_postgres::Error> {
    let rows = client.query(COLUMNS, &[&schema]).await?;
    let mut columns: BTreeMap<String, Vec<Field>> = BTreeMap::new();
    let mut keys: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    for row in rows {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        let oid: u32 = row.get(2);
        let typmod: i32 = row.get(3);
        let typtype: String = row.get(4);
        if let Some(position) = row.get::<_, Option<i32>>(5) {
            keys.entry(table.clone())
                .or_default()
                .push((position, column.clone()));
        }
        let data_type = match Type::from_oid(oid).and_then(|t| PgKind::of(&t, typmod)) {
            Some(kind) => kind.arrow_type(),
            // Enums arrive as their labels; anything else unknown is read as text.
            None => {
                if typtype != "e" {
                    tracing::warn!(table = %table, column = %column, oid, "unsupported PostgreSQL type, read as text");
                }
                DataType::Utf8
            }
        };
        columns
            .entry(table)
            .or_default()
            .push(Field::new(column, data_type, true));
    }
    Ok(columns
        .into_iter()
        .map(|(name, fields)| {
            let mut key = keys.remove(&name).unwrap_or_default();
            key.sort();
            let primary_key = key.into_iter().map(|(_, c)| c).collect();
            (
                name,
                DiscoveredTable {
                    schema: Arc::new(Schema::new(fields)) as SchemaRef,
                    primary_key,
                },
            )
        })
        .collect())
}
