//! Live copies (`mode = "changes"`): a PostgreSQL table's copy kept current from
//! its logical replication stream, seconds behind, with no Kafka in between.
//!
//! A live copy is a *base* (Parquet files of the whole table) and a *change set*
//! (Parquet files with one row per key changed since the base: its latest values,
//! or a deletion mark). Queries read the base without the changed keys plus the
//! change set's live rows ([`table_of`]). The feed of each live copy runs on the
//! coordinator that runs scheduled refreshes:
//!
//! 1. It makes (or checks) the publication and the slot, then takes the base
//!    through the engine like a full refresh. Transactions that ended before the
//!    copy started are in it; later ones are applied over it, which converges
//!    because applying a change is idempotent per key. Queries read the source
//!    until the copy has applied the stream up to where the copy ended.
//! 2. It gathers committed transactions and, every [`FLUSH_EVERY`] (or
//!    [`FLUSH_ROWS`] changes), folds them into the change set, writes it as a new
//!    folder and publishes base and change set with one store update: a query
//!    sees the copy as of one transaction boundary. Only then does it confirm the
//!    position to PostgreSQL, so the slot keeps every change not yet durable, and a
//!    restarted feed resumes from the slot with nothing lost or doubled.
//! 3. When the change set outgrows an eighth of the base, it is compacted: the
//!    copy as queries see it becomes the new base, and the change set is empty.
//!    A quiet stream compacts sooner ([`IDLE_COMPACT`]), so a copy at rest reads
//!    as plain Parquet.
//!
//! A column added or dropped in the source makes a new base (the stream's next
//! relation message names the new shape); a `TRUNCATE` empties the base.

mod live;
mod live_table;

use std::sync::Arc;
use std::time::Duration;

use datafusion::error::{DataFusionError, Result};
use parking_lot::Mutex;
use quiver_connectors::config::SourceKind;
use quiver_connectors::postgres::changes::{
    ChangeRows, ChangeSource, ChangeStream, ChangesError, Event, Transaction,
};

use live::{initial_copy, resume};
pub use live_table::table_of;

use super::Accelerated;
use crate::catalog::config::AccelerateSpec;
use crate::catalog::store::CopyState;
use crate::catalog::Datasets;

/// How often gathered transactions are written into the copy.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Gathered changes that are written at once, without waiting for the timer.
pub const FLUSH_ROWS: usize = 50_000;
/// The feed of one live copy: its task, and what it reports.
#[derive(Debug, Default)]
pub struct Feed {
    task: Mutex<Option<FeedTask>>,
    status: Mutex<FeedStatus>,
}

#[derive(Debug)]
struct FeedTask {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

/// What `system.accelerations` shows of a feed.
#[derive(Debug, Clone, Default)]
pub struct FeedStatus {
    pub running: bool,
    /// The server's WAL position last reported.
    pub server_lsn: u64,
    /// Commit time of the oldest transaction received but not yet in the copy.
    pub oldest_pending_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Stopped on an error trying again cannot fix; not restarted until redefined.
    pub gave_up: bool,
    /// Its slot is being dropped: the scheduler must not start it again.
    closing: bool,
}

impl Feed {
    pub fn status(&self) -> FeedStatus {
        self.status.lock().clone()
    }

    fn report(&self, f: impl FnOnce(&mut FeedStatus)) {
        f(&mut self.status.lock());
    }
}

/// How far behind the source a live copy is: WAL bytes and seconds.
pub fn lag(status: &FeedStatus, applied_lsn: u64, now: i64) -> (u64, f64) {
    let bytes = status.server_lsn.saturating_sub(applied_lsn);
    let secs = status
        .oldest_pending_ms
        .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
    (bytes, secs)
}

/// Starts the feed of `acc` unless it is running.
pub fn ensure_running(datasets: &Arc<Datasets>, acc: &Arc<Accelerated>) {
    let mut task = acc.feed.task.lock();
    let status = acc.feed.status();
    if task.as_ref().is_some_and(|t| !t.handle.is_finished()) || status.gave_up || status.closing {
        return;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(run(datasets.clone(), acc.clone(), stopped));
    *task = Some(FeedTask { stop, handle });
}

/// Stops the feed of `acc` and waits for it to end (its stream closed); it may
/// be started again afterwards.
pub async fn stop(acc: &Accelerated) {
    let task = acc.feed.task.lock().take();
    if let Some(t) = task {
        let _ = t.stop.send(true);
        let _ = t.handle.await;
    }
    acc.feed.report(|s| {
        s.running = false;
        s.gave_up = false;
    });
}

/// Stops the feed and drops its slot (and the publication when Quiver made it),
/// so the server keeps no WAL for a copy that is gone.
pub async fn drop_stream(
    datasets: &Arc<Datasets>,
    acc: &Arc<Accelerated>,
) -> std::result::Result<(), String> {
    acc.feed.report(|s| s.closing = true);
    stop(acc).await;
    let dropped = drop_slot(datasets, acc).await;
    if dropped.is_err() {
        acc.feed.report(|s| s.closing = false);
    }
    dropped
}

async fn drop_slot(
    datasets: &Arc<Datasets>,
    acc: &Arc<Accelerated>,
) -> std::result::Result<(), String> {
    let spec = acc.with(|s| s.spec.clone());
    let state = acc.with(|s| s.copy.clone()).and_then(|c| c.changes);
    let source = change_source(datasets, &acc.dataset).map_err(|e| e.to_string())?;
    let slot = state
        .as_ref()
        .map(|s| s.slot.clone())
        .unwrap_or_else(|| slot_name(&acc.dataset, spec.slot.as_deref()));
    let publication = match &state {
        Some(s) if s.publication_created => Some(s.publication.clone()),
        Some(_) => None,
        None if spec.publication.is_none() => Some(slot.clone()),
        None => None,
    };
    source
        .drop(&slot, publication.as_deref())
        .await
        .map_err(|e| e.to_string())
}

/// Checks that `dataset` can be kept live, before it is recorded: a PostgreSQL
/// table with a key and readable column types. Makes the publication and slot
/// (the feed then uses them).
pub async fn check(datasets: &Datasets, dataset: &str, spec: &AccelerateSpec) -> Result<()> {
    let source = change_source(datasets, dataset)?;
    let slot = slot_name(dataset, spec.slot.as_deref());
    let publication = spec.publication.clone().unwrap_or_else(|| slot.clone());
    source
        .prepare(&slot, &publication)
        .await
        .map(|_| ())
        .map_err(|e| DataFusionError::Plan(e.to_string()))
}

/// Whether an error of the feed will not go away by trying again (the table
/// cannot be replicated as it is): the feed then stops until it is redefined
/// or the coordinator restarts.
fn permanent(e: &DataFusionError) -> bool {
    matches!(
        e.find_root(),
        DataFusionError::External(inner)
            if matches!(inner.downcast_ref::<ChangesError>(), Some(ChangesError::Unsupported(_)))
    ) || matches!(e.find_root(), DataFusionError::Plan(_))
}

/// An update's large value that the copy could not fill in.
fn missing_value(e: &DataFusionError) -> bool {
    matches!(
        e.find_root(),
        DataFusionError::External(inner)
            if matches!(inner.downcast_ref::<ChangesError>(), Some(ChangesError::MissingValue(_)))
    )
}

/// Waits until the copy of `acc` answers queries; the feed's error if it fails
/// first, or after `timeout`.
pub async fn wait_consistent(acc: &Accelerated, timeout: Duration) -> Result<CopyState> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(copy) = acc.with(|s| s.table.as_ref().and(s.copy.clone())) {
            return Ok(copy);
        }
        let status = acc.feed.status();
        if let (Some(e), true) = (&status.last_error, status.gave_up || !status.running) {
            return Err(DataFusionError::Execution(e.clone()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DataFusionError::Execution(format!(
                "the live copy of {} is not ready after {}s (last error: {})",
                acc.dataset,
                timeout.as_secs(),
                status.last_error.as_deref().unwrap_or("none")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `quiver_<dataset>`, in what a slot name allows (long names end in a hash).
pub fn slot_name(dataset: &str, given: Option<&str>) -> String {
    if let Some(g) = given {
        return g.to_string();
    }
    let clean: String = dataset
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let name = format!("quiver_{clean}");
    if name.len() <= 63 {
        return name;
    }
    let hash = dataset.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("{}_{:016x}", &name[..46], hash)
}

/// The PostgreSQL table behind `dataset` (`catalog.schema.table`).
fn change_source(datasets: &Datasets, dataset: &str) -> Result<ChangeSource> {
    let parts: Vec<&str> = dataset.splitn(3, '.').collect();
    let [catalog, schema, table] = parts[..] else {
        return Err(DataFusionError::Plan(format!(
            "{dataset} is not catalog.schema.table"
        )));
    };
    let source = datasets
        .sources()
        .iter()
        .find(|s| s.catalog_name() == catalog && s.schema_name() == schema);
    match source.map(|s| (&s.name, &s.kind)) {
        Some((name, SourceKind::Postgres(cfg))) => Ok(ChangeSource::new(name, cfg, table)),
        Some((name, kind)) => Err(DataFusionError::Plan(format!(
            "mode 'changes' reads PostgreSQL's change stream; {dataset} is in source {name} of kind {}",
            kind.name()
        ))),
        None => Err(DataFusionError::Plan(format!(
            "mode 'changes' is for tables of a PostgreSQL source; {dataset} is not one (a view, or an unknown table)"
        ))),
    }
}

fn changes_error(e: ChangesError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The feed's task: follows the stream, and after a failure starts again (a new
/// connection, resuming from the slot) with a growing pause.
async fn run(
    datasets: Arc<Datasets>,
    acc: Arc<Accelerated>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    acc.feed.report(|s| s.running = true);
    let mut pause = Duration::from_secs(1);
    loop {
        let outcome = tokio::select! {
            r = follow(&datasets, &acc) => r,
            _ = stopped.changed() => break,
        };
        let Err(e) = outcome else { break };
        let message = e.message().to_string();
        if permanent(&e) {
            tracing::warn!(dataset = %acc.dataset, error = %message, "the live copy's feed stopped until the acceleration is redefined");
            acc.feed.report(|s| {
                s.last_error = Some(message);
                s.gave_up = true;
            });
            break;
        }
        tracing::warn!(dataset = %acc.dataset, error = %message, "the live copy's feed stopped; it starts again");
        acc.feed.report(|s| {
            s.last_error = Some(message);
            s.oldest_pending_ms = None;
        });
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.changed() => break,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
    acc.feed.report(|s| s.running = false);
}

/// Sets the table up, takes or resumes the copy, then applies the stream until
/// something fails.
async fn follow(datasets: &Arc<Datasets>, acc: &Arc<Accelerated>) -> Result<()> {
    let spec = acc.with(|s| s.spec.clone());
    let source = change_source(datasets, &acc.dataset)?;
    let slot = slot_name(&acc.dataset, spec.slot.as_deref());
    let publication = spec.publication.clone().unwrap_or_else(|| slot.clone());
    let prepared = source
        .prepare(&slot, &publication)
        .await
        .map_err(changes_error)?;
    let rows = ChangeRows::new(&prepared.columns, &prepared.key).map_err(changes_error)?;
    let names: Vec<String> = prepared.columns.iter().map(|(n, _)| n.clone()).collect();
    let current = acc
        .with(|s| s.copy.clone())
        .and_then(|c| c.changes.map(|ch| (c.bytes, c.files, ch)));
    let mut live = match current {
        Some((_, _, ch)) if ch.slot == slot && ch.columns == names && ch.key == prepared.key => {
            resume(datasets, rows, ch).await?
        }
        _ => {
            initial_copy(
                datasets,
                acc,
                &source,
                &prepared,
                rows,
                (&slot, &publication),
                names.clone(),
            )
            .await?
        }
    };
    let mut stream = ChangeStream::open(&source, &slot, &publication, live.state.applied_lsn)
        .await
        .map_err(changes_error)?;
    acc.feed.report(|s| s.last_error = None);
    let mut pending: Vec<Transaction> = vec![];
    let mut pending_changes = 0;
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = tokio::time::Instant::now();
    loop {
        let flush = tokio::select! {
            event = stream.next() => match event.map_err(changes_error)? {
                None => return Err(DataFusionError::Execution("PostgreSQL closed the replication stream".into())),
                Some(Event::Committed(txn)) => {
                    acc.feed.report(|s| s.server_lsn = s.server_lsn.max(txn.end_lsn));
                    if txn.end_lsn <= live.state.applied_lsn {
                        continue; // already in the copy (replayed after a restart)
                    }
                    if let Some(relation) = &txn.relation {
                        let shape: Vec<&String> = relation.columns.iter().map(|c| &c.name).collect();
                        if shape != names.iter().collect::<Vec<_>>() {
                            return Err(DataFusionError::Execution(format!(
                                "{} changed shape in the source (columns {shape:?}); taking a new copy",
                                source.table_name()
                            )));
                        }
                    }
                    acc.feed.report(|s| {
                        s.oldest_pending_ms.get_or_insert(txn.commit_time_ms);
                    });
                    pending_changes += txn.changes.len();
                    pending.push(txn);
                    pending_changes >= FLUSH_ROWS
                }
                Some(Event::Idle { wal_end }) => {
                    acc.feed.report(|s| s.server_lsn = s.server_lsn.max(wal_end));
                    if pending.is_empty() && wal_end > live.state.applied_lsn {
                        // Nothing of the table before `wal_end` is still to come.
                        live.state.applied_lsn = wal_end;
                        if live.state.applied_lsn >= live.state.consistent_from
                            && acc.with(|s| s.table.is_none())
                        {
                            live.publish(datasets, acc).await?;
                        }
                        stream.confirm(wal_end);
                    }
                    false
                }
            },
            _ = tick.tick() => {
                if pending.is_empty() && live.idle_compaction_due(last_flush.elapsed()) {
                    live.compact(datasets, acc).await?;
                    live.delete_retired(datasets).await;
                }
                !pending.is_empty()
            }
        };
        if flush {
            let txns = std::mem::take(&mut pending);
            pending_changes = 0;
            if let Err(e) = live.apply(datasets, acc, txns).await {
                if missing_value(&e) {
                    // The next attempt takes a new base, which has every value.
                    acc.with(|s| {
                        if let Some(c) = s.copy.as_mut().and_then(|c| c.changes.as_mut()) {
                            c.columns.clear();
                        }
                    });
                }
                return Err(e);
            }
            acc.feed.report(|s| s.oldest_pending_ms = None);
            stream.confirm(live.state.applied_lsn);
            last_flush = tokio::time::Instant::now();
            if live.should_compact() {
                live.compact(datasets, acc).await?;
            }
            live.delete_retired(datasets).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_what_postgresql_allows() {
        assert_eq!(
            slot_name("quiver.pg.Orders", None),
            "quiver_quiver_pg_orders"
        );
        assert_eq!(slot_name("x", Some("mine")), "mine");
        let long = slot_name(&format!("quiver.pg.{}", "t".repeat(80)), None);
        assert_eq!(long.len(), 63);
        assert!(
            quiver_connectors::postgres::changes::valid_slot_name(&long),
            "{long}"
        );
        assert_ne!(
            long,
            slot_name(&format!("quiver.pg.{}", "t".repeat(81)), None)
        );
    }

    #[test]
    fn lag_is_the_wal_not_applied_and_the_age_of_what_waits() {
        let status = FeedStatus {
            server_lsn: 1_000,
            oldest_pending_ms: Some(10_000),
            ..Default::default()
        };
        assert_eq!(lag(&status, 400, 12_500), (600, 2.5));
        assert_eq!(lag(&FeedStatus::default(), 400, 12_500), (0, 0.0));
    }
}
