//! Where an Iceberg table's current metadata file is: the newest one in its
//! `metadata/` folder, or the one a SQL catalog points at.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::ObjectStore;
use url::Url;

use super::manifests::{read_all, to_url};

/// How a source finds its tables.
#[derive(Debug)]
pub enum Catalog {
    /// A warehouse folder: each sub-folder with `metadata/` is a table.
    Folder(Url),
    /// The `iceberg_tables` table of a SQL catalog.
    Sql(SqlCatalog),
}

/// Iceberg's JDBC/SQL catalog layout, as pyiceberg's `SqlCatalog` writes it.
#[derive(Debug)]
pub struct SqlCatalog {
    database: Database,
    catalog_name: Option<String>,
    namespace: String,
}

#[derive(Debug)]
enum Database {
    Sqlite(std::path::PathBuf),
    /// A connection string; kept out of logs (it may hold a password).
    Postgres(String),
}

impl Catalog {
    pub fn sql(url: &str, catalog_name: Option<String>, namespace: String) -> Result<Self, String> {
        let database = if let Some(path) = url.strip_prefix("sqlite://") {
            Database::Sqlite(path.into())
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Database::Postgres(url.to_string())
        } else {
            return Err("catalog_url must start with sqlite:// or postgres://".into());
        };
        Ok(Self::Sql(SqlCatalog {
            database,
            catalog_name,
            namespace,
        }))
    }
}

impl SqlCatalog {
    /// Every table of the namespace → its current metadata file.
    pub async fn list(&self) -> Result<BTreeMap<String, Url>, String> {
        let rows = self.query(None).await?;
        let mut out = BTreeMap::new();
        for (name, location) in rows {
            out.insert(name, to_url(&location)?);
        }
        Ok(out)
    }

    /// The current metadata file of one table.
    pub async fn metadata_location(&self, table: &str) -> Result<String, String> {
        let rows = self.query(Some(table)).await?;
        rows.into_iter()
            .next()
            .map(|(_, location)| location)
            .ok_or_else(|| {
                format!(
                    "the catalog no longer lists the table in namespace {}",
                    self.namespace
                )
            })
    }

    async fn query(&self, table: Option<&str>) -> Result<Vec<(String, String)>, String> {
        let mut sql = "SELECT table_name, metadata_location FROM iceberg_tables \
                       WHERE table_namespace = $1 AND metadata_location IS NOT NULL"
            .to_string();
        let mut params = vec![self.namespace.clone()];
        if let Some(name) = &self.catalog_name {
            params.push(name.clone());
            sql.push_str(&format!(" AND catalog_name = ${}", params.len()));
        }
        if let Some(t) = table {
            params.push(t.to_string());
            sql.push_str(&format!(" AND table_name = ${}", params.len()));
        }
        match &self.database {
            Database::Sqlite(path) => {
                let path = path.clone();
                // SQLite numbers parameters ?1, ?2...
                let sql = sql.replace('$', "?");
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open_with_flags(
                        &path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(|e| {
                        format!("cannot open the SQLite catalog {}: {e}", path.display())
                    })?;
                    let mut stmt = conn
                        .prepare(&sql)
                        .map_err(|e| format!("SQLite catalog: {e}"))?;
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                        })
                        .map_err(|e| format!("SQLite catalog: {e}"))?;
                    rows.collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("SQLite catalog: {e}"))
                })
                .await
                .map_err(|e| e.to_string())?
            }
            Database::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| {
                        format!("cannot reach the PostgreSQL catalog: {}", pg_error(&e))
                    })?;
                let task = tokio::spawn(connection);
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                let rows = client
                    .query(&sql, &params)
                    .await
                    .map_err(|e| format!("PostgreSQL catalog: {}", pg_error(&e)));
                drop(client);
                task.abort();
                Ok(rows?
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                    .collect())
            }
        }
    }
}

fn pg_error(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

/// The newest metadata file in `folder/metadata/`: the one `version-hint.text`
/// names, else the highest version number (`v12.metadata.json`,
/// `00012-<uuid>.metadata.json`).
pub async fn newest_metadata(store: &dyn ObjectStore, folder: &Url) -> Result<Url, String> {
    let metadata = folder.join("metadata/").map_err(|e| e.to_string())?;
    if let Ok(hint) = read_all(
        store,
        &metadata
            .join("version-hint.text")
            .map_err(|e| e.to_string())?,
    )
    .await
    {
        if let Ok(v) = String::from_utf8_lossy(&hint).trim().parse::<u64>() {
            return metadata
                .join(&format!("v{v}.metadata.json"))
                .map_err(|e| e.to_string());
        }
    }
    let prefix =
        object_store::path::Path::from_url_path(metadata.path()).map_err(|e| e.to_string())?;
    let listed: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| format!("cannot list {metadata}: {e}"))?;
    let newest = listed
        .iter()
        .filter_map(|m| {
            let name = m.location.filename()?;
            let stem = name.strip_suffix(".metadata.json")?;
            Some((version_of(stem)?, m.last_modified, name.to_string()))
        })
        .max();
    match newest {
        Some((_, _, name)) => metadata.join(&name).map_err(|e| e.to_string()),
        None => Err(format!("no metadata file (*.metadata.json) in {metadata}")),
    }
}

fn version_of(stem: &str) -> Option<u64> {
    let digits = stem.strip_prefix('v').unwrap_or(stem);
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_file_names_give_their_version() {
        assert_eq!(version_of("v12"), Some(12));
        assert_eq!(
            version_of("00003-6b8f0c3e-1111-2222-3333-444455556666"),
            Some(3)
        );
        assert_eq!(version_of("latest"), None);
    }

    #[tokio::test]
    async fn the_newest_metadata_file_is_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let meta = dir.path().join("t/metadata");
        std::fs::create_dir_all(&meta).expect("mkdir");
        for name in [
            "00001-a.metadata.json",
            "00010-b.metadata.json",
            "00002-c.metadata.json",
            "snap-1.avro",
        ] {
            std::fs::write(meta.join(name), "{}").expect("write");
        }
        let store = object_store::local::LocalFileSystem::new();
        let folder = Url::from_directory_path(dir.path().join("t")).expect("url");
        let newest = newest_metadata(&store, &folder).await.expect("newest");
        assert!(newest.path().ends_with("00010-b.metadata.json"), "{newest}");
        std::fs::write(meta.join("version-hint.text"), "2\n").expect("hint");
        let hinted = newest_metadata(&store, &folder).await.expect("hinted");
        assert!(hinted.path().ends_with("v2.metadata.json"), "{hinted}");
    }
}
