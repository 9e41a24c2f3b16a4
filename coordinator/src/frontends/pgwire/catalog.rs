//! The catalogs a PostgreSQL connection sees: the user's view of the virtual
//! schema, plus a `pg_catalog` schema in the default catalog (from
//! `datafusion-pg-catalog`) that lists exactly that view, so psql's `\dt`, JDBC's
//! `getTables` and SQLAlchemy's inspector show what the user may read.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;

use super::settings::Settings;
use crate::engine::QueryEngine;
use crate::security::access::UserAccess;

/// The session state a connection plans its statements on, and its settings
/// (whose functions are registered on that state).
pub fn connection_state(
    engine: &QueryEngine,
    access: Arc<UserAccess>,
    user: String,
    startup: HashMap<String, String>,
) -> Result<(SessionState, Arc<Settings>)> {
    let (catalog, schema) = engine.defaults();
    let overlay = Arc::new(Overlay {
        inner: engine.catalogs_for(access),
        added: RwLock::default(),
    });
    let ctx = SessionContext::new_with_state(engine.state_builder(overlay.clone()).build());
    datafusion_pg_catalog::pg_catalog::setup_pg_catalog(&ctx, &catalog, EmptyContextProvider)
        .map_err(|e| DataFusionError::Plan(format!("cannot set up pg_catalog: {e}")))?;
    ctx.register_udf(version());
    ctx.register_udf(to_regtype());
    ctx.register_udf(always_true("pg_type_is_visible"));
    ctx.register_udf(always_true("pg_function_is_visible"));
    // Another session's temporary schema is never listed.
    ctx.register_udf(constant_bool("pg_is_other_temp_schema", false));
    for name in [
        "pg_get_indexdef",
        "pg_get_function_result",
        "pg_get_function_arguments",
        "pg_get_function_identity_arguments",
        "col_description",
        "obj_description",
        "shobj_description",
    ] {
        ctx.register_udf(null_text(name));
    }
    // Array columns as arrays (SQLAlchemy's and dbt's reflection unnest them).
    if let Some(c) = ctx.catalog(&catalog) {
        if let Some(pg) = c.schema("pg_catalog") {
            c.register_schema(
                "pg_catalog",
                Arc::new(super::catalog_types::Retyped::new(pg)),
            )?;
        }
    }
    // The connection's own temporary tables and views (gone when it closes).
    if let Some(c) = ctx.catalog(&catalog) {
        c.register_schema(
            crate::reserved::TEMP_SCHEMA,
            crate::writes::temporary::new_schema(),
        )?;
    }
    let settings = Settings::new(user, startup, catalog, schema, overlay);
    settings.register(&ctx);
    Ok((ctx.state(), settings))
}

/// `version()` as PostgreSQL words it: drivers (SQLAlchemy's dialect) parse the
/// server version out of it.
fn version() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    let text = format!(
        "PostgreSQL 16.6 (Quiver {}) on {}, compiled by rustc",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    datafusion::logical_expr::create_udf(
        "version",
        vec![],
        datafusion::arrow::datatypes::DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(
                datafusion::scalar::ScalarValue::Utf8(Some(text.clone())),
            ))
        }),
    )
}

/// A catalog list whose catalogs take extra schemas (only `pg_catalog` is added),
/// kept here and not in the shared catalogs, which other users see.
#[derive(Debug)]
struct Overlay {
    inner: Arc<dyn CatalogProviderList>,
    added: RwLock<HashMap<String, Arc<Added>>>,
}

#[derive(Debug, Default)]
struct Added {
    schemas: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl CatalogProviderList for Overlay {
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
        let added = {
            let mut map = self.added.write();
            map.entry(name.to_string()).or_default().clone()
        };
        Some(Arc::new(WithAdded { inner, added }))
    }
}

#[derive(Debug)]
struct WithAdded {
    inner: Arc<dyn CatalogProvider>,
    added: Arc<Added>,
}

impl CatalogProvider for WithAdded {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.inner.schema_names();
        {
            let added = self.added.schemas.read();
            names.extend(
                added
                    .keys()
                    .filter(|k| !names.contains(k))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(s) = self.added.schemas.read().get(name).cloned() {
            return Some(s);
        }
        self.inner.schema(name)
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        let mut added = self.added.schemas.write();
        Ok(added.insert(name.to_string(), schema))
    }
}

/// The OIDs of the built-in types a client may look up by name.
const TYPE_OIDS: &[(&str, i32)] = &[
    ("bool", 16),
    ("boolean", 16),
    ("bytea", 17),
    ("char", 18),
    ("name", 19),
    ("int8", 20),
    ("bigint", 20),
    ("int2", 21),
    ("smallint", 21),
    ("int4", 23),
    ("int", 23),
    ("integer", 23),
    ("text", 25),
    ("oid", 26),
    ("json", 114),
    ("float4", 700),
    ("real", 700),
    ("float8", 701),
    ("double precision", 701),
    ("varchar", 1043),
    ("character varying", 1043),
    ("date", 1082),
    ("time", 1083),
    ("timestamp", 1114),
    ("timestamp without time zone", 1114),
    ("timestamptz", 1184),
    ("timestamp with time zone", 1184),
    ("interval", 1186),
    ("numeric", 1700),
    ("decimal", 1700),
    ("uuid", 2950),
    ("jsonb", 3802),
];

/// `to_regtype(name)`: the OID of a built-in type, NULL for any other (psycopg
/// asks for `hstore` on connect, which Quiver does not have).
fn to_regtype() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    let lookup = |name: Option<&str>| -> Option<i32> {
        let name = name?
            .trim()
            .trim_start_matches("pg_catalog.")
            .trim_matches('"')
            .to_ascii_lowercase();
        TYPE_OIDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, oid)| *oid)
    };
    datafusion::logical_expr::create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("to_regtype: not text".into()))?;
            let oids: Int32Array = (0..names.len())
                .map(|i| lookup((!names.is_null(i)).then(|| names.value(i))))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
        }),
    )
}

/// A function of any arguments answering NULL text: catalog functions about
/// objects Quiver never lists (indexes, functions in `pg_proc`).
fn null_text(name: &str) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{
        ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
    };
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct NullText(String, Signature);
    impl ScalarUDFImpl for NullText {
        fn name(&self) -> &str {
            &self.0
        }
        fn signature(&self) -> &Signature {
            &self.1
        }
        fn return_type(&self, _: &[DataType]) -> Result<DataType> {
            Ok(DataType::Utf8)
        }
        fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
            Ok(ColumnarValue::Scalar(
                datafusion::scalar::ScalarValue::Utf8(None),
            ))
        }
    }
    datafusion::logical_expr::ScalarUDF::new_from_impl(NullText(
        name.to_string(),
        Signature::variadic_any(Volatility::Stable),
    ))
}

/// A visibility check that holds for everything the connection can list
/// (`pg_type_is_visible`: every type Quiver reports is a built-in one).
fn always_true(name: &str) -> datafusion::logical_expr::ScalarUDF {
    constant_bool(name, true)
}

/// A check of one OID that gives `value` for every non-NULL one.
fn constant_bool(name: &str, value: bool) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, BooleanArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    datafusion::logical_expr::create_udf(
        name,
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let out: BooleanArray = (0..arrays[0].len())
                .map(|i| (!arrays[0].is_null(i)).then_some(value))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}
