//! The replication connection: committed transactions of decoded changes.

use std::collections::HashMap;
use std::time::Duration;

use pgwire_replication::{
    Lsn as WireLsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig,
};
use tokio_postgres::config::Host;

use super::pgoutput::{self, Datum, Message, Relation};
use super::slot::ChangeSource;
use super::{ChangesError, Lsn};

/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One row change of a transaction, values as the server sent them.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The row's new values: an insert, or an update (which may have moved its key).
    Upsert(Vec<Datum>),
    /// The row's key values (other columns null), or its whole old row under
    /// `REPLICA IDENTITY FULL`.
    Delete(Vec<Datum>),
    /// Every row is gone (`TRUNCATE`); changes after it in the list follow it.
    Truncate,
}

/// One committed transaction's changes to the table, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub commit_lsn: Lsn,
    /// Where the transaction ends: what to confirm once it is applied.
    pub end_lsn: Lsn,
    /// Commit time, milliseconds since 1970.
    pub commit_time_ms: i64,
    pub changes: Vec<Change>,
    /// The table's shape as of this transaction (the server sends it before
    /// the first change of a session, and again after `ALTER TABLE`).
    pub relation: Option<Relation>,
}

/// What the stream says next.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Committed(Transaction),
    /// The server's WAL has reached `wal_end` and nothing of the table is pending:
    /// a transaction still to come ends after it.
    Idle {
        wal_end: Lsn,
    },
}

/// An open replication stream of one table.
pub struct ChangeStream {
    client: ReplicationClient,
    relations: HashMap<u32, Relation>,
    open: Option<Open>,
    source: String,
}

struct Open {
    changes: Vec<Change>,
    relation: Option<u32>,
}

impl ChangeStream {
    /// The committed changes of `source`'s table after `confirmed`, from `slot`.
    pub async fn open(
        source: &ChangeSource,
        slot: &str,
        publication: &str,
        confirmed: Lsn,
    ) -> Result<Self, ChangesError> {
        let pg = source.config()?;
        let host = match pg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.to_string_lossy().into_owned(),
            None => "localhost".into(),
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let user = pg.get_user().unwrap_or("postgres").to_string();
        let password = pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let database = pg.get_dbname().unwrap_or(&user).to_string();
        let tls = match source.tls_settings() {
            (Some(ca), _) => TlsConfig::verify_full(Some(ca)),
            (None, true) => TlsConfig::verify_full(None),
            (None, false) => TlsConfig::disabled(),
        };
        let config = ReplicationConfig::new(host, user, password, database, slot, publication)
            .with_port(port)
            .with_tls(tls)
            // Resume at the slot's confirmed position; report `confirmed` until more is applied.
            .with_start_lsn(WireLsn::from_u64(0))
            .with_ack_lsn(WireLsn::from_u64(confirmed))
            .with_binary(true)
            .with_status_interval(Duration::from_secs(1))
            .with_wakeup_interval(Duration::from_secs(1))
            .with_application_name("quiver-changes");
        let client = ReplicationClient::connect(config)
            .await
            .map_err(|e| ChangesError::Unreachable(format!("source {}: {e}", source.source())))?;
        Ok(Self {
            client,
            relations: HashMap::new(),
            open: None,
            source: source.source().to_string(),
        })
    }

    /// The next committed transaction, or a report that the stream is idle;
    /// None when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, ChangesError> {
        loop {
            let event = self
                .client
                .recv()
                .await
                .map_err(|e| ChangesError::Stream(format!("source {}: {e}", self.source)))?;
            let Some(event) = event else { return Ok(None) };
            match event {
                ReplicationEvent::Begin { .. } => {
                    self.open = Some(Open {
                        changes: vec![],
                        relation: None,
                    })
                }
                ReplicationEvent::Commit {
                    lsn,
                    end_lsn,
                    commit_time_micros,
                } => {
                    let open = self.open.take().unwrap_or(Open {
                        changes: vec![],
                        relation: None,
                    });
                    return Ok(Some(Event::Committed(Transaction {
                        commit_lsn: lsn.as_u64(),
                        end_lsn: end_lsn.as_u64(),
                        commit_time_ms: (commit_time_micros + PG_EPOCH_MICROS) / 1000,
                        relation: open
                            .relation
                            .and_then(|oid| self.relations.get(&oid).cloned()),
                        changes: open.changes,
                    })));
                }
                ReplicationEvent::XLogData { data, .. } => self.message(&data)?,
                ReplicationEvent::KeepAlive { wal_end, .. } if self.open.is_none() => {
                    return Ok(Some(Event::Idle {
                        wal_end: wal_end.as_u64(),
                    }))
                }
                ReplicationEvent::StoppedAt { .. } => return Ok(None),
                _ => {}
            }
        }
    }

    fn message(&mut self, data: &bytes::Bytes) -> Result<(), ChangesError> {
        let message = pgoutput::decode(data).map_err(|e| ChangesError::Stream(e.to_string()))?;
        let (relation, change) = match message {
            Message::Relation(r) => {
                self.relations.insert(r.oid, r);
                return Ok(());
            }
            Message::Insert { relation, new } => (relation, Change::Upsert(new)),
            Message::Update { relation, old, new } => {
                let new = match &old {
                    // Unchanged TOASTed values come with a full old row.
                    Some(old) if old.len() == new.len() => new
                        .into_iter()
                        .zip(old)
                        .map(|(n, o)| match n {
                            Datum::Unchanged => o.clone(),
                            n => n,
                        })
                        .collect(),
                    _ => new,
                };
                let open = self.open.get_or_insert(Open {
                    changes: vec![],
                    relation: None,
                });
                // A key that moved: the row under the old key is gone.
                if let Some(old) = old {
                    open.changes.push(Change::Delete(old));
                }
                (relation, Change::Upsert(new))
            }
            Message::Delete { relation, old } => (relation, Change::Delete(old)),
            Message::Truncate { relations } => match relations.first() {
                Some(&relation) => (relation, Change::Truncate),
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let open = self.open.get_or_insert(Open {
            changes: vec![],
            relation: None,
        });
        open.relation = Some(relation);
        open.changes.push(change);
        Ok(())
    }

    /// Tells the server everything up to `lsn` is applied and durable: the slot
    /// may release the WAL before it.
    pub fn confirm(&self, lsn: Lsn) {
        self.client.update_applied_lsn(WireLsn::from_u64(lsn));
    }

    /// Stops the stream and closes its connection (after a last status update).
    pub async fn close(mut self) {
        let _ = self.client.shutdown().await;
    }
}
