//! Names the coordinator owns and answers alone: the `system` schema and its
//! tables, a session's temporary schema, and the catalog schemas clients read
//! (`information_schema`, `pg_catalog`). A leaf module: every other one may ask it.

/// Quiver's own tables (`crate::observe::system`).
pub const SYSTEM_SCHEMA: &str = "system";
/// A PostgreSQL session's temporary tables and views (`crate::writes::temporary`).
pub const TEMP_SCHEMA: &str = "pg_temp";
pub const SYSTEM_TABLES: [&str; 8] = [
    "workers",
    "scaling_events",
    "queries",
    "fragments",
    "usage",
    "views",
    "accelerations",
    "snapshots",
];

/// Whether `catalog.schema.table` names a system table.
pub fn is_system_table(name: &str) -> bool {
    let mut parts = name.split('.');
    parts.nth(1) == Some(SYSTEM_SCHEMA) && parts.next().is_some_and(|t| SYSTEM_TABLES.contains(&t))
}

/// `information_schema` and `pg_catalog`: the schemas clients read to list objects.
pub fn is_catalog_schema(schema: &str) -> bool {
    schema == "information_schema" || schema == "pg_catalog"
}

/// Schemas no view, table or `CREATE SCHEMA` may take.
pub fn is_reserved_schema(schema: &str) -> bool {
    schema == SYSTEM_SCHEMA || is_catalog_schema(schema) || schema.starts_with(TEMP_SCHEMA)
}

/// Tables the coordinator answers alone, without a worker or a source: system
/// tables, the catalog schemas and the session's temporary objects.
pub fn is_catalog_table(name: &str) -> bool {
    is_system_table(name)
        || name
            .split('.')
            .nth(1)
            .is_some_and(|s| is_catalog_schema(s) || s == TEMP_SCHEMA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_apart() {
        assert!(is_system_table("quiver.system.queries"));
        assert!(!is_system_table("quiver.system.nope"));
        assert!(!is_system_table("quiver.tpch.queries"));
        assert!(is_catalog_table("quiver.pg_catalog.pg_class"));
        assert!(is_catalog_table("quiver.information_schema.tables"));
        assert!(is_catalog_table("quiver.pg_temp.t"));
        assert!(is_catalog_table("quiver.system.workers"));
        assert!(!is_catalog_table("quiver.tpch.lineitem"));
        assert!(is_reserved_schema("pg_temp_3"));
        assert!(is_reserved_schema("system"));
        assert!(!is_reserved_schema("sales"));
    }
}
