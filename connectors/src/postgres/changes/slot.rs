//! Setting a table up for logical replication, and taking it down again.

use std::time::Duration;

use tokio_postgres::types::Type;

use super::{format_lsn, parse_lsn, ChangesError, Lsn};
use crate::config::PostgresSource;
use crate::postgres::types::PgKind;

/// One table of one PostgreSQL source, as a source of changes.
#[derive(Clone)]
pub struct ChangeSource {
    source: String,
    cfg: PostgresSource,
    schema: String,
    table: String,
}

/// What [`ChangeSource::prepare`] found and made.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Where the slot's changes start: the slot's creation point, or for an
    /// existing slot the position PostgreSQL last had confirmed.
    pub start_lsn: Lsn,
    pub slot_created: bool,
    pub publication_created: bool,
    /// The columns that identify a row (the replica identity), in table order.
    pub key: Vec<String>,
    /// Every column with how its values are decoded, in table order.
    pub columns: Vec<(String, PgKind)>,
}

/// `"name"`, with quotes doubled.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Slot and publication names: what PostgreSQL allows for a slot (lower-case
/// letters, digits, underscores, at most 63 bytes), checked before any statement.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl ChangeSource {
    /// `table` in the source's remote schema.
    pub fn new(source: &str, cfg: &PostgresSource, table: &str) -> Self {
        Self {
            source: source.to_string(),
            cfg: cfg.clone(),
            schema: cfg.remote_schema.clone(),
            table: table.to_string(),
        }
    }

    /// `schema.table`, as messages name it.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// The source's connection settings, without its read-only session default:
    /// creating a publication writes to the catalog.
    pub(super) fn config(&self) -> Result<tokio_postgres::Config, ChangesError> {
        let mut pg: tokio_postgres::Config = self.cfg.url.expose().parse().map_err(|e| {
            ChangesError::Unsupported(format!("source {}: invalid url: {e}", self.source))
        })?;
        pg.connect_timeout(Duration::from_secs(self.cfg.connect_timeout_secs.max(1)));
        pg.application_name("quiver-changes");
        Ok(pg)
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, ChangesError> {
        let mut pg = self.config()?;
        let unreachable = |e: tokio_postgres::Error| {
            ChangesError::Unreachable(format!(
                "source {}: {}",
                self.source,
                crate::error_chain(&e)
            ))
        };
        let client =
            match super::super::tls(&self.cfg, &mut pg).map_err(ChangesError::Unsupported)? {
                Some(tls) => {
                    let (client, connection) = pg.connect(tls).await.map_err(unreachable)?;
                    tokio::spawn(connection);
                    client
                }
                None => {
                    let (client, connection) = pg
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(unreachable)?;
                    tokio::spawn(connection);
                    client
                }
            };
        Ok(client)
    }

    /// Checks the table can be replicated, and makes (or checks) `publication`
    /// and `slot`. Safe to run again: what exists is used as it is.
    pub async fn prepare(&self, slot: &str, publication: &str) -> Result<Prepared, ChangesError> {
        for (what, name) in [("slot", slot), ("publication", publication)] {
            if !valid_name(name) {
                return Err(ChangesError::Unsupported(format!(
                    "replication {what} name '{name}': use lower-case letters, digits and underscores (at most 63)"
                )));
            }
        }
        let client = self.connect().await?;
        let server = |e: tokio_postgres::Error| ChangesError::Server(crate::error_chain(&e));
        let table = self.table_name();
        let found = client
            .query_opt(
                "SELECT c.oid, c.relreplident::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&self.schema, &self.table],
            )
            .await
            .map_err(server)?;
        let Some(found) = found else {
            return Err(ChangesError::Unsupported(format!(
                "table {table} not found in source {} (only tables have changes to stream, not views)",
                self.source
            )));
        };
        let oid: u32 = found.get(0);
        let identity: String = found.get(1);
        let columns = client
            .query(
                "SELECT a.attname, a.atttypid, a.atttypmod, t.typtype::text FROM pg_attribute a \
                 JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .map_err(server)?;
        let mut kinds = vec![];
        for c in &columns {
            let (name, type_oid, typmod, typtype): (String, u32, i32, String) =
                (c.get(0), c.get(1), c.get(2), c.get(3));
            let kind = match Type::from_oid(type_oid).and_then(|t| PgKind::of(&t, typmod)) {
                Some(k) => k,
                // An enum's binary form is its label.
                None if typtype == "e" => PgKind::Text,
                None => {
                    return Err(ChangesError::Unsupported(format!(
                        "column {name} of {table} has a type (oid {type_oid}) whose binary form Quiver cannot read from the change stream; \
                         accelerate a view that casts it to text with mode 'full' instead"
                    )))
                }
            };
            kinds.push((name, kind));
        }
        let key_sql = match identity.as_str() {
            "d" => "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                    WHERE i.indrelid = $1 AND i.indisprimary ORDER BY a.attnum",
            "i" => "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                    WHERE i.indrelid = $1 AND i.indisreplident ORDER BY a.attnum",
            "f" => "",
            _ => {
                return Err(ChangesError::Unsupported(format!(
                    "{table} has REPLICA IDENTITY NOTHING: its updates and deletes carry no key. \
                     Give it a primary key or run ALTER TABLE {table} REPLICA IDENTITY FULL"
                )))
            }
        };
        let key: Vec<String> = match key_sql {
            "" => kinds.iter().map(|(n, _)| n.clone()).collect(),
            sql => client
                .query(sql, &[&oid])
                .await
                .map_err(server)?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        if key.is_empty() {
            return Err(ChangesError::Unsupported(format!(
                "{table} has no primary key, so its updates and deletes cannot be matched to rows. \
                 Give it a primary key or run ALTER TABLE {table} REPLICA IDENTITY FULL"
            )));
        }

        let publication_created = match client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&publication],
            )
            .await
            .map_err(server)?
        {
            None => {
                client
                    .batch_execute(&format!(
                        "CREATE PUBLICATION {} FOR TABLE {}.{}",
                        ident(publication),
                        ident(&self.schema),
                        ident(&self.table)
                    ))
                    .await
                    .map_err(server)?;
                true
            }
            Some(_) => {
                let includes = client
                    .query_opt(
                        "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                        &[&publication, &self.schema, &self.table],
                    )
                    .await
                    .map_err(server)?;
                if includes.is_none() {
                    return Err(ChangesError::Unsupported(format!(
                        "publication {publication} exists but does not include {table}: \
                         ALTER PUBLICATION {publication} ADD TABLE {table}, or name another publication"
                    )));
                }
                false
            }
        };

        let existing = client
            .query_opt(
                "SELECT plugin, slot_type, database, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(server)?;
        let (start_lsn, slot_created) = match existing {
            Some(row) => {
                let (plugin, kind, database, confirmed): (
                    Option<String>,
                    String,
                    Option<String>,
                    Option<String>,
                ) = (row.get(0), row.get(1), row.get(2), row.get(3));
                let ours = self.config()?.get_dbname().map(str::to_string);
                if kind != "logical" || plugin.as_deref() != Some("pgoutput") || database != ours {
                    return Err(ChangesError::Unsupported(format!(
                        "replication slot {slot} exists but is not a pgoutput slot of this database \
                         ({kind}, {plugin:?}, {database:?}); name another slot"
                    )));
                }
                let lsn = confirmed.as_deref().and_then(parse_lsn).unwrap_or(0);
                (lsn, false)
            }
            None => {
                let row = client
                    .query_one(
                        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                        &[&slot],
                    )
                    .await
                    .map_err(server)?;
                let text: String = row.get(0);
                let lsn = parse_lsn(&text).ok_or_else(|| {
                    ChangesError::Server(format!(
                        "slot {slot} created at an unreadable position '{text}'"
                    ))
                })?;
                (lsn, true)
            }
        };
        tracing::info!(table = %table, slot, publication, start = %format_lsn(start_lsn), slot_created, publication_created, "table prepared for its change stream");
        Ok(Prepared {
            start_lsn,
            slot_created,
            publication_created,
            key,
            columns: kinds,
        })
    }

    /// The server's current WAL position.
    pub async fn current_lsn(&self) -> Result<Lsn, ChangesError> {
        let client = self.connect().await?;
        let row = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| ChangesError::Server(crate::error_chain(&e)))?;
        let text: String = row.get(0);
        parse_lsn(&text)
            .ok_or_else(|| ChangesError::Server(format!("unreadable WAL position '{text}'")))
    }

    /// Drops `slot` (the server then keeps no WAL for it) and, when Quiver made
    /// it, `publication`. A slot still in use by a stream being stopped is retried
    /// for a few seconds.
    pub async fn drop(&self, slot: &str, publication: Option<&str>) -> Result<(), ChangesError> {
        let client = self.connect().await?;
        let server = |e: tokio_postgres::Error| ChangesError::Server(crate::error_chain(&e));
        let mut tries = 0;
        loop {
            let dropped = client
                .query(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await;
            match dropped {
                Ok(_) => break,
                // 55006: the slot is active (the stream's connection not closed yet).
                Err(e) if tries < 50 && e.code().map(|c| c.code()) == Some("55006") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(server(e)),
            }
        }
        if let Some(p) = publication {
            client
                .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", ident(p)))
                .await
                .map_err(server)?;
        }
        Ok(())
    }

    pub(super) fn tls_settings(&self) -> (Option<std::path::PathBuf>, bool) {
        let require = self
            .config()
            .map(|c| c.get_ssl_mode() == tokio_postgres::config::SslMode::Require)
            .unwrap_or(false);
        (self.cfg.tls_ca_file.clone(), require)
    }

    pub(super) fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_they_reach_a_statement() {
        assert!(valid_name("quiver_orders_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("Orders"));
        assert!(!valid_name("a;drop"));
        assert!(!valid_name(&"a".repeat(64)));
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }
}
