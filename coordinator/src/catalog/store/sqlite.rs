//! The embedded metadata store: one SQLite file under the data dir. Calls are
//! small and rare (DDL, a refresh's end), so they run under one connection lock.

use parking_lot::Mutex;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    check_version, now_ms, AccelerationRow, MetadataStore, Result, StoreError, StoredAcceleration,
    StoredView, MIGRATIONS,
};

#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        store: "sqlite",
        message: e.to_string(),
    }
}

impl SqliteStore {
    /// Opens (creating it and its folder) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                err(format!("cannot create {}: {e} (set server.data_dir to a writable folder, or [metadata] url)", dir.display()))
            })?;
        }
        let conn = Connection::open(path)
            .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
        // WAL: a reader never blocks the writer; writers wait up to 5 s for each other.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "busy_timeout", 5000)
            .map_err(err)?;
        let store = Self {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn lock(&self) -> Result<parking_lot::MutexGuard<'_, Connection>> {
        Ok(self.conn.lock())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS quiver_schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)")
            .map_err(err)?;
        let applied: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM quiver_schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        check_version("sqlite", applied)?;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
            tx.execute_batch(sql)
                .map_err(|e| err(format!("migration {version}: {e}")))?;
            tx.execute(
                "INSERT INTO quiver_schema_migrations (version, applied_ms) VALUES (?1, ?2)",
                params![version, now_ms()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

impl SqliteStore {
    /// Runs `f` in a transaction that also bumps the change counter.
    fn change<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(err)?;
        let out = f(&tx)?;
        tx.execute(
            "UPDATE quiver_changes SET version = version + 1 WHERE id = 1",
            [],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn version(&self) -> Result<i64> {
        self.lock()?
            .query_row("SELECT version FROM quiver_changes WHERE id = 1", [], |r| {
                r.get(0)
            })
            .map_err(err)
    }

    async fn views(&self) -> Result<Vec<StoredView>> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare("SELECT name, sql, created_ms, updated_ms FROM quiver_views ORDER BY name")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredView {
                    name: r.get(0)?,
                    sql: r.get(1)?,
                    created_ms: r.get(2)?,
                    updated_ms: r.get(3)?,
                })
            })
            .map_err(err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(err)
    }

    async fn put_view(&self, view: &StoredView, replace: bool) -> Result<()> {
        self.change(|tx| {
            let exists: Option<i64> =
                tx.query_row("SELECT created_ms FROM quiver_views WHERE name = ?1", [&view.name], |r| r.get(0)).optional().map_err(err)?;
            match (exists, replace) {
                (Some(_), false) => Err(StoreError::Invalid(format!("view {} already exists (use CREATE OR REPLACE VIEW)", view.name))),
                (Some(_), true) => {
                    tx.execute("UPDATE quiver_views SET sql = ?2, updated_ms = ?3 WHERE name = ?1", params![view.name, view.sql, view.updated_ms])
                        .map_err(err)?;
                    Ok(())
                }
                (None, _) => {
                    tx.execute(
                        "INSERT INTO quiver_views (name, sql, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                        params![view.name, view.sql, view.created_ms, view.updated_ms],
                    )
                    .map_err(err)?;
                    Ok(())
                }
            }
        })
    }

    async fn drop_view(&self, name: &str) -> Result<bool> {
        self.change(|tx| {
            Ok(tx
                .execute("DELETE FROM quiver_views WHERE name = ?1", [name])
                .map_err(err)?
                > 0)
        })
    }

    async fn namespaces(&self) -> Result<Vec<String>> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare("SELECT name FROM quiver_namespaces ORDER BY name")
            .map_err(err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(err)
    }

    async fn put_namespace(&self, name: &str) -> Result<bool> {
        self.change(|tx| {
            Ok(tx
                .execute(
                    "INSERT INTO quiver_namespaces (name, created_ms) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                    params![name, now_ms()],
                )
                .map_err(err)?
                > 0)
        })
    }

    async fn drop_namespace(&self, name: &str) -> Result<bool> {
        self.change(|tx| {
            Ok(tx
                .execute("DELETE FROM quiver_namespaces WHERE name = ?1", [name])
                .map_err(err)?
                > 0)
        })
    }

    async fn accelerations(&self) -> Result<Vec<StoredAcceleration>> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare("SELECT dataset, origin, spec, copy, last_refresh FROM quiver_accelerations ORDER BY dataset")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AccelerationRow {
                    dataset: r.get(0)?,
                    origin: r.get(1)?,
                    spec: r.get(2)?,
                    copy: r.get(3)?,
                    last_refresh: r.get(4)?,
                })
            })
            .map_err(err)?;
        let rows: Vec<AccelerationRow> =
            rows.collect::<std::result::Result<_, _>>().map_err(err)?;
        rows.into_iter().map(AccelerationRow::decode).collect()
    }

    async fn put_acceleration(&self, a: &StoredAcceleration) -> Result<()> {
        let row = AccelerationRow::encode(a)?;
        self.change(|tx| {
            tx.execute(
                "INSERT INTO quiver_accelerations (dataset, origin, spec, copy, last_refresh, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (dataset) DO UPDATE SET origin = excluded.origin, spec = excluded.spec, copy = excluded.copy,
                   last_refresh = excluded.last_refresh, updated_ms = excluded.updated_ms",
                params![row.dataset, row.origin, row.spec, row.copy, row.last_refresh, now_ms()],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    async fn drop_acceleration(&self, dataset: &str) -> Result<bool> {
        self.change(|tx| {
            Ok(tx
                .execute(
                    "DELETE FROM quiver_accelerations WHERE dataset = ?1",
                    [dataset],
                )
                .map_err(err)?
                > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::config::{AccelerateSpec, RefreshMode};
    use crate::catalog::store::CopyState;

    fn view(name: &str, sql: &str) -> StoredView {
        StoredView {
            name: name.into(),
            sql: sql.into(),
            created_ms: 1,
            updated_ms: 2,
        }
    }

    #[tokio::test]
    async fn views_and_accelerations_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m/metadata.db");
        {
            let store = SqliteStore::open(&path).expect("opens");
            store
                .put_view(&view("c.s.v", "SELECT 1"), false)
                .await
                .expect("put");
            let again = store
                .put_view(&view("c.s.v", "SELECT 2"), false)
                .await
                .unwrap_err()
                .to_string();
            assert!(again.contains("already exists"), "{again}");
            store
                .put_view(&view("c.s.v", "SELECT 3"), true)
                .await
                .expect("replace");
            let spec = AccelerateSpec {
                refresh_secs: 5,
                mode: RefreshMode::Append,
                time_column: Some("t".into()),
                sort_by: vec![],
                slot: None,
                publication: None,
                filter: Some("t > 3".into()),
            };
            let copy = CopyState {
                segments: vec!["file:///x/".into()],
                rows: 3,
                bytes: 10,
                files: 1,
                high_water: Some("7".into()),
                as_of_ms: 9,
                changes: None,
                filter: Some("t > 3".into()),
            };
            let a = StoredAcceleration {
                dataset: "c.s.t".into(),
                origin: "sql".into(),
                spec,
                copy: Some(copy),
                last_refresh: None,
            };
            store.put_acceleration(&a).await.expect("put");
            assert!(store.version().await.expect("version") >= 3);
        }
        let store = SqliteStore::open(&path).expect("reopens");
        let views = store.views().await.expect("views");
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].sql, "SELECT 3");
        let accs = store.accelerations().await.expect("accelerations");
        assert_eq!(accs[0].copy.as_ref().map(|c| c.rows), Some(3));
        assert_eq!(accs[0].spec.time_column.as_deref(), Some("t"));
        assert!(store.drop_view("c.s.v").await.expect("drop"));
        assert!(!store.drop_view("c.s.v").await.expect("drop again"));
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metadata.db");
        drop(SqliteStore::open(&path).expect("opens"));
        let conn = Connection::open(&path).expect("raw open");
        conn.execute("INSERT INTO quiver_schema_migrations VALUES (99, 0)", [])
            .expect("insert");
        drop(conn);
        let e = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(e.contains("version 99") && e.contains("upgrade"), "{e}");
    }
}
