//! A connection's settings: what `SET`, `RESET` and `set_config()` change and
//! `SHOW` and `current_setting()` read, and the settings with a meaning here:
//! `search_path` decides where unqualified table names resolve (and what
//! `current_schema()` says), `quiver.cache` turns the results cache off.
//!
//! The functions that read them (`current_setting`, `set_config`,
//! `current_schema`, `current_user`/`session_user`) are registered on the
//! connection's own session state, so they see its settings and its user.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::CatalogProviderList;
use datafusion::common::exec_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

/// One connection's settings.
#[derive(Debug)]
pub struct Settings {
    /// Values set in this session (lower-case names).
    set: Mutex<HashMap<String, String>>,
    /// Values the client sent at startup (`application_name`, ...): what `RESET` returns to.
    startup: HashMap<String, String>,
    /// The user the connection logged in as (the startup user without authentication).
    user: String,
    catalog: String,
    /// The server's default schema, where unqualified names resolve without a search_path.
    default_schema: String,
    catalogs: Arc<dyn CatalogProviderList>,
}

impl Settings {
    pub fn new(
        user: String,
        startup: HashMap<String, String>,
        catalog: String,
        default_schema: String,
        catalogs: Arc<dyn CatalogProviderList>,
    ) -> Arc<Self> {
        let startup = startup
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Arc::new(Self {
            set: Mutex::default(),
            startup,
            user,
            catalog,
            default_schema,
            catalogs,
        })
    }

    /// `SET name = value` (and `set_config`).
    pub fn set(&self, name: &str, value: &str) {
        self.lock()
            .insert(name.to_ascii_lowercase(), value.to_string());
    }

    /// `RESET name`, or `RESET ALL` with None.
    pub fn reset(&self, name: Option<&str>) {
        match name {
            Some(n) => {
                self.lock().remove(&n.to_ascii_lowercase());
            }
            None => self.lock().clear(),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, String>> {
        // A panic while holding the map cannot leave it half-written: use it as it is.
        self.set.lock()
    }

    /// What `SHOW name` and `current_setting(name)` answer: a value set in this
    /// session, else the server's, as PostgreSQL would for a UTF-8 session.
    pub fn get(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        if let Some(v) = self.lock().get(&name).or_else(|| self.startup.get(&name)) {
            return Some(v.clone());
        }
        Some(match name.as_str() {
            "server_version" => "16.6".into(),
            "server_version_num" => "160006".into(),
            "server_encoding" | "client_encoding" => "UTF8".into(),
            "transaction isolation level"
            | "transaction_isolation"
            | "default_transaction_isolation" => "read committed".into(),
            "transaction_read_only" | "default_transaction_read_only" => "on".into(),
            "standard_conforming_strings" | "integer_datetimes" => "on".into(),
            "datestyle" => "ISO, MDY".into(),
            "intervalstyle" => "postgres".into(),
            "timezone" | "time zone" => "UTC".into(),
            "search_path" => quote_ident(&self.default_schema),
            "max_identifier_length" => "63".into(),
            "is_superuser" => "off".into(),
            "lc_collate" | "lc_ctype" | "lc_messages" | "lc_monetary" | "lc_numeric"
            | "lc_time" => "C.UTF-8".into(),
            "application_name" => String::new(),
            "session_authorization" => self.user.clone(),
            "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => {
                "0".into()
            }
            "quiver.cache" => "on".into(),
            _ => return None,
        })
    }

    /// The schema unqualified names resolve in: the first schema of `search_path`
    /// that exists in the default catalog, else the server's default schema.
    pub fn current_schema(&self) -> String {
        let path = self
            .lock()
            .get("search_path")
            .cloned()
            .or_else(|| self.startup.get("search_path").cloned());
        let Some(path) = path else {
            return self.default_schema.clone();
        };
        let schemas = self
            .catalogs
            .catalog(&self.catalog)
            .map(|c| c.schema_names())
            .unwrap_or_default();
        search_path(&path)
            .into_iter()
            .find(|s| schemas.iter().any(|e| e == s))
            .unwrap_or_else(|| self.default_schema.clone())
    }

    /// Whether the results cache is off for this session.
    pub fn cache_off(&self) -> bool {
        self.lock().get("quiver.cache").is_some_and(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "off" | "false" | "0" | "no"
            )
        })
    }

    /// Registers the functions that read and change these settings on `ctx`.
    pub fn register(self: &Arc<Self>, ctx: &SessionContext) {
        ctx.register_udf(current_setting(self.clone()));
        ctx.register_udf(set_config(self.clone()));
        let me = self.clone();
        ctx.register_udf(text_constant("current_schema", move || me.current_schema()));
        for name in ["session_user", "current_user", "user", "current_role"] {
            let me = self.clone();
            ctx.register_udf(text_constant(name, move || me.user.clone()));
        }
    }
}

/// The schema names of a `search_path` value, in order, without `$user` and `pg_catalog`.
pub fn search_path(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim())
        .map(
            |s| match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => s.trim_matches('\'').to_ascii_lowercase(),
            },
        )
        .filter(|s| !s.is_empty() && s != "$user" && s != "pg_catalog")
        .collect()
}

fn quote_ident(name: &str) -> String {
    match name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.is_empty()
    {
        true => name.to_string(),
        false => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// A function of no arguments answering text computed when it runs (each statement).
fn text_constant(name: &str, value: impl Fn() -> String + Send + Sync + 'static) -> ScalarUDF {
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(value()))))),
    )
}

fn texts(arg: &ColumnarValue, rows: usize) -> Result<StringArray> {
    let array: ArrayRef = arg.clone().into_array(rows)?;
    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("expected text".into()))
}

fn rows_of(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

/// `current_setting(name [, missing_ok])`: like `SHOW name`; an unknown name is an
/// error, or NULL with `missing_ok`.
fn current_setting(settings: Arc<Settings>) -> ScalarUDF {
    use datafusion::logical_expr::{Signature, TypeSignature};
    let signature = Signature::one_of(
        vec![
            TypeSignature::Exact(vec![DataType::Utf8]),
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
        ],
        Volatility::Stable,
    );
    ScalarUDF::new_from_impl(CurrentSetting {
        settings: SettingsRef(settings),
        signature,
    })
}

/// The settings as a UDF holds them (a UDF must compare and hash: by identity).
#[derive(Debug)]
struct SettingsRef(Arc<Settings>);

impl PartialEq for SettingsRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for SettingsRef {}
impl std::hash::Hash for SettingsRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    settings: SettingsRef,
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        call: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> Result<ColumnarValue> {
        let args = &call.args;
        let rows = call.number_rows.max(rows_of(args));
        let names = texts(&args[0], rows)?;
        let missing_ok = match args.get(1) {
            Some(a) => {
                let a = a.clone().into_array(rows)?;
                let a = datafusion::arrow::compute::cast(&a, &DataType::Boolean)?;
                a.as_any().downcast_ref::<BooleanArray>().cloned()
            }
            None => None,
        };
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            if names.is_null(i) {
                out.push(None);
                continue;
            }
            let tolerate = missing_ok
                .as_ref()
                .is_some_and(|m| !m.is_null(i) && m.value(i));
            match (self.settings.0.get(names.value(i)), tolerate) {
                (Some(v), _) => out.push(Some(v)),
                (None, true) => out.push(None),
                (None, false) => {
                    return exec_err!(
                        "unrecognized configuration parameter \"{}\"",
                        names.value(i)
                    )
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `set_config(name, value, is_local)`: sets for the session (`is_local` is
/// taken as false: a session has no transactions) and returns the value.
fn set_config(settings: Arc<Settings>) -> ScalarUDF {
    create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let (names, values) = (texts(&args[0], rows)?, texts(&args[1], rows)?);
            let mut out = Vec::with_capacity(rows);
            for i in 0..rows {
                if names.is_null(i) {
                    return Err(DataFusionError::Execution(
                        "set_config: the parameter name cannot be NULL".into(),
                    ));
                }
                let value = if values.is_null(i) {
                    String::new()
                } else {
                    values.value(i).to_string()
                };
                settings.set(names.value(i), &value);
                out.push(Some(value));
            }
            Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_paths_are_read_as_postgresql_does() {
        assert_eq!(search_path("\"$user\", public"), vec!["public"]);
        assert_eq!(search_path("\"System\", tpch"), vec!["System", "tpch"]);
        assert_eq!(search_path("'system'"), vec!["system"]);
        assert_eq!(search_path("pg_catalog, Lake"), vec!["lake"]);
    }

    #[tokio::test]
    async fn settings_reach_the_functions_and_the_search_path_picks_an_existing_schema(
    ) -> Result<()> {
        let ctx = SessionContext::new();
        ctx.sql("CREATE SCHEMA datafusion.tpch")
            .await?
            .collect()
            .await?;
        let settings = Settings::new(
            "alice".into(),
            HashMap::new(),
            "datafusion".into(),
            "public".into(),
            ctx.state().catalog_list().clone(),
        );
        settings.register(&ctx);
        let one = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await?.collect().await?;
                let col = datafusion::arrow::compute::cast(batches[0].column(0), &DataType::Utf8)?;
                let col = col
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| DataFusionError::Internal("text".into()))?;
                Ok::<_, DataFusionError>((!col.is_null(0)).then(|| col.value(0).to_string()))
            }
        };
        assert_eq!(one("SELECT current_schema()").await?, Some("public".into()));
        settings.set("search_path", "nope, tpch");
        assert_eq!(one("SELECT current_schema()").await?, Some("tpch".into()));
        assert_eq!(
            one("SELECT current_setting('search_path')").await?,
            Some("nope, tpch".into())
        );
        assert_eq!(
            one("SELECT \"session_user\"()").await?,
            Some("alice".into())
        );
        assert_eq!(
            one("SELECT set_config('application_name', 'dbt', false)").await?,
            Some("dbt".into())
        );
        assert_eq!(settings.get("application_name"), Some("dbt".into()));
        assert_eq!(one("SELECT current_setting('no.such', true)").await?, None);
        assert!(one("SELECT current_setting('no.such')").await.is_err());
        settings.reset(None);
        assert_eq!(one("SELECT current_schema()").await?, Some("public".into()));
        Ok(())
    }
}
