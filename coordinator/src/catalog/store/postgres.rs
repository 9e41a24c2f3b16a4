//! The shared metadata store: tables `quiver_*` in a PostgreSQL database, so
//! several coordinators serve one catalog of views and accelerations.
//! Migrations run under an advisory lock, so coordinators starting together
//! apply each step once.

use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::{
    check_version, now_ms, AccelerationRow, MetadataStore, Result, StoreError, StoredAcceleration,
    StoredView, MIGRATIONS,
};

#[derive(Debug)]
pub struct PostgresStore {
    pool: Pool,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        store: "postgres",
        message: e.to_string(),
    }
}

/// An arbitrary constant: the advisory lock migrations hold.
const MIGRATION_LOCK: i64 = 0x5155_4956_4552; // "QUIVER"

impl PostgresStore {
    /// Connects (the URL may use `${VAR}`; TLS as for PostgreSQL sources) and migrates.
    pub async fn open(
        url: &quiver_connectors::env::EnvString,
        tls_ca_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let mut table = toml::Table::new();
        table.insert("url".into(), toml::Value::String(url.expose().to_string()));
        table.insert("writable".into(), toml::Value::Boolean(true));
        table.insert("pool_size".into(), toml::Value::Integer(4));
        if let Some(ca) = tls_ca_file {
            table.insert(
                "tls_ca_file".into(),
                toml::Value::String(ca.display().to_string()),
            );
        }
        let cfg: quiver_connectors::config::PostgresSource = table
            .try_into()
            .map_err(|e: toml::de::Error| StoreError::Invalid(format!("[metadata] url: {e}")))?;
        let (_, pool) = quiver_connectors::postgres::executor("metadata", &cfg).map_err(err)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| err(format!("cannot connect: {e}")))
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(err)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS quiver_schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)")
            .await
            .map_err(err)?;
        let applied: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM quiver_schema_migrations",
                &[],
            )
            .await
            .map_err(err)?
            .get(0);
        check_version("postgres", applied)?;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
            tx.batch_execute(sql)
                .await
                .map_err(|e| err(format!("migration {version}: {e}")))?;
            tx.execute(
                "INSERT INTO quiver_schema_migrations (version, applied_ms) VALUES ($1, $2)",
                &[version, &now_ms()],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    /// Runs `statement` with `params` and bumps the change counter, in one transaction.
    async fn change(
        &self,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let n = tx.execute(statement, params).await.map_err(err)?;
        tx.execute(
            "UPDATE quiver_changes SET version = version + 1 WHERE id = 1",
            &[],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(n)
    }
}

#[async_trait]
impl MetadataStore for PostgresStore {
    async fn version(&self) -> Result<i64> {
        Ok(self
            .client()
            .await?
            .query_one("SELECT version FROM quiver_changes WHERE id = 1", &[])
            .await
            .map_err(err)?
            .get(0))
    }

    async fn views(&self) -> Result<Vec<StoredView>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name, sql, created_ms, updated_ms FROM quiver_views ORDER BY name",
                &[],
            )
            .await
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| StoredView {
                name: r.get(0),
                sql: r.get(1),
                created_ms: r.get(2),
                updated_ms: r.get(3),
            })
            .collect())
    }

    async fn put_view(&self, view: &StoredView, replace: bool) -> Result<()> {
        let statement = if replace {
            "INSERT INTO quiver_views (name, sql, created_ms, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET sql = excluded.sql, updated_ms = excluded.updated_ms"
        } else {
            "INSERT INTO quiver_views (name, sql, created_ms, updated_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING"
        };
        let n = self
            .change(
                statement,
                &[&view.name, &view.sql, &view.created_ms, &view.updated_ms],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Invalid(format!(
                "view {} already exists (use CREATE OR REPLACE VIEW)",
                view.name
            )));
        }
        Ok(())
    }

    async fn drop_view(&self, name: &str) -> Result<bool> {
        Ok(self
            .change("DELETE FROM quiver_views WHERE name = $1", &[&name])
            .await?
            > 0)
    }

    async fn namespaces(&self) -> Result<Vec<String>> {
        let rows = self
            .client()
            .await?
            .query("SELECT name FROM quiver_namespaces ORDER BY name", &[])
            .await
            .map_err(err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn put_namespace(&self, name: &str) -> Result<bool> {
        Ok(self
            .change(
                "INSERT INTO quiver_namespaces (name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &now_ms()],
            )
            .await?
            > 0)
    }

    async fn drop_namespace(&self, name: &str) -> Result<bool> {
        Ok(self
            .change("DELETE FROM quiver_namespaces WHERE name = $1", &[&name])
            .await?
            > 0)
    }

    async fn accelerations(&self) -> Result<Vec<StoredAcceleration>> {
        let rows = self
            .client()
            .await?
            .query("SELECT dataset, origin, spec, copy, last_refresh FROM quiver_accelerations ORDER BY dataset", &[])
            .await
            .map_err(err)?;
        rows.iter()
            .map(|r| AccelerationRow {
                dataset: r.get(0),
                origin: r.get(1),
                spec: r.get(2),
                copy: r.get(3),
                last_refresh: r.get(4),
            })
            .map(AccelerationRow::decode)
            .collect()
    }

    async fn put_acceleration(&self, a: &StoredAcceleration) -> Result<()> {
        let row = AccelerationRow::encode(a)?;
        self.change(
            "INSERT INTO quiver_accelerations (dataset, origin, spec, copy, last_refresh, updated_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (dataset) DO UPDATE SET origin = excluded.origin, spec = excluded.spec, copy = excluded.copy,
               last_refresh = excluded.last_refresh, updated_ms = excluded.updated_ms",
            &[&row.dataset, &row.origin, &row.spec, &row.copy, &row.last_refresh, &now_ms()],
        )
        .await?;
        Ok(())
    }

    async fn drop_acceleration(&self, dataset: &str) -> Result<bool> {
        Ok(self
            .change(
                "DELETE FROM quiver_accelerations WHERE dataset = $1",
                &[&dataset],
            )
            .await?
            > 0)
    }
}
