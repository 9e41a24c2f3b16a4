//! A live copy as its feed holds it: the base and the change set, how a batch of
//! transactions is folded in and published, compaction, and the folders it
//! replaced. The feed's loop (`mod.rs`) decides when each happens.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use quiver_connectors::postgres::changes::{
    Change, ChangeRows, ChangeSource, Prepared, Transaction, DELETED_COLUMN,
};

use super::{changes_error, live_table::table_of};
use crate::catalog::acceleration::refresh::{
    copy_from_source, stored_of, write_new_segment, Written,
};
use crate::catalog::acceleration::{delete_folder, Accelerated};
use crate::catalog::store::{now_ms, ChangesState, CopyState};
use crate::catalog::{store_error, Datasets};

/// The change set is folded into a new base when it has more rows than this
/// and more than an eighth of the base.
const COMPACT_MIN_ROWS: u64 = 10_000;
/// A change set is also compacted once no change has come for this long, when it
/// holds a hundredth of the base, or after [`IDLE_COMPACT_ANY`] whatever its size:
/// a copy at rest is read as plain Parquet, without the anti join.
const IDLE_COMPACT: Duration = Duration::from_secs(10);
const IDLE_COMPACT_ANY: Duration = Duration::from_secs(300);
/// Replaced folders are deleted this long after: queries planned on them finish first.
const RETIRE_AFTER: Duration = Duration::from_secs(60);

/// A live copy as the feed holds it.
pub(super) struct Live {
    pub(super) state: ChangesState,
    rows: ChangeRows,
    /// The change set's rows (what the change set folder holds).
    change_set: Vec<RecordBatch>,
    base_written: (u64, u64),
    change_written: (u64, u64),
    /// Folders replaced, with when; deleted after [`RETIRE_AFTER`].
    retired: Vec<(tokio::time::Instant, String)>,
}

/// Takes the base from the source and records the new live copy (not yet
/// answering queries: the stream must first reach where the copy ended).
pub(super) async fn initial_copy(
    datasets: &Arc<Datasets>,
    acc: &Arc<Accelerated>,
    source: &ChangeSource,
    prepared: &Prepared,
    rows: ChangeRows,
    (slot, publication): (&str, &str),
    columns: Vec<String>,
) -> Result<Live> {
    let sort_by = acc.with(|s| s.spec.sort_by.clone());
    // The source's cached table list may predate a column just added or dropped.
    rediscover(datasets, &acc.dataset).await?;
    // Transactions that ended before this point are in the copy taken next.
    let copy_start = source.current_lsn().await.map_err(changes_error)?;
    let (base, written) = copy_from_source(datasets, &acc.dataset, &sort_by).await?;
    let consistent_from = source.current_lsn().await.map_err(changes_error)?;
    tracing::info!(dataset = %acc.dataset, rows = written.rows, slot, "live copy: base taken; applying the stream over it");
    let old = acc.with(|s| s.copy.clone());
    let mut live = Live {
        state: ChangesState {
            slot: slot.to_string(),
            publication: publication.to_string(),
            // Quiver owns the publication it names itself (made here or when the
            // acceleration was checked), never one the definition names.
            publication_created: prepared.publication_created
                || acc.with(|s| s.spec.publication.is_none()),
            base: vec![base.to_string()],
            change_set: None,
            key: prepared.key.clone(),
            columns,
            applied_lsn: copy_start.max(prepared.start_lsn),
            consistent_from,
            base_rows: written.rows,
            change_rows: 0,
            changes_applied: 0,
            last_commit_ms: now_ms(),
        },
        rows,
        change_set: vec![],
        base_written: (written.bytes, written.files),
        change_written: (0, 0),
        retired: vec![],
    };
    // The previous copy's folders (another shape, another slot) go once replaced.
    for folder in old.map(|c| c.segments).unwrap_or_default() {
        live.retired.push((tokio::time::Instant::now(), folder));
    }
    live.publish(datasets, acc).await?;
    Ok(live)
}

/// Reads the schema of `dataset`'s source again, so a copy sees its current columns.
async fn rediscover(datasets: &Datasets, dataset: &str) -> Result<()> {
    let parts: Vec<&str> = dataset.splitn(3, '.').collect();
    let schema = datasets
        .inner_catalogs()
        .and_then(|c| c.catalog(parts[0]))
        .and_then(|c| c.schema(parts.get(1).copied().unwrap_or_default()));
    let remote = schema.as_ref().and_then(|s| {
        let any: &dyn std::any::Any = s.as_ref();
        any.downcast_ref::<quiver_connectors::remote_schema::RemoteSchema>()
    });
    if let Some(remote) = remote {
        remote.refresh().await?;
    }
    Ok(())
}

/// The live copy as published, its change set read back into memory.
pub(super) async fn resume(
    datasets: &Arc<Datasets>,
    rows: ChangeRows,
    state: ChangesState,
) -> Result<Live> {
    let change_set = match &state.change_set {
        Some(folder) => read_change_set(datasets, folder, &rows.schema()).await?,
        None => vec![],
    };
    Ok(Live {
        state,
        rows,
        change_set,
        base_written: (0, 0),
        change_written: (0, 0),
        retired: vec![],
    })
}

async fn read_change_set(
    datasets: &Arc<Datasets>,
    folder: &str,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let state = datasets.planning_state(true)?;
    let ctx = SessionContext::new_with_state(state.clone());
    let table =
        crate::catalog::acceleration::listing_table(&state, &[folder.to_string()], true).await?;
    let batches = ctx.read_table(table)?.collect().await?;
    // Strings come back as views; the change set's rows are plain.
    batches
        .into_iter()
        .map(|b| crate::result_schema::cast_batch(&b, schema))
        .collect()
}

impl Live {
    /// Folds `txns` into the change set, writes it, and publishes.
    pub(super) async fn apply(
        &mut self,
        datasets: &Arc<Datasets>,
        acc: &Arc<Accelerated>,
        txns: Vec<Transaction>,
    ) -> Result<()> {
        let Some(last) = txns.last() else {
            return Ok(());
        };
        let (end_lsn, commit_ms) = (last.end_lsn, last.commit_time_ms);
        let mut changes = vec![];
        let mut truncated = false;
        for change in txns.into_iter().flat_map(|t| t.changes) {
            match change {
                Change::Truncate => {
                    changes.clear();
                    truncated = true;
                }
                c => changes.push(c),
            }
        }
        let count = changes.len() as u64;
        let batch = self.rows.batch(&changes).map_err(changes_error)?;
        if truncated {
            // Everything before is gone: an empty base, and only what came after.
            let (base, written) =
                write_batches(datasets, &acc.dataset, self.table_schema(), vec![]).await?;
            let old_base = std::mem::replace(&mut self.state.base, vec![base.to_string()]);
            self.retire(old_base);
            self.state.base_rows = 0;
            self.base_written = (written.bytes, written.files);
            self.change_set.clear();
        }
        let merged = self
            .rows
            .merge(&self.change_set, &[batch])
            .map_err(changes_error)?;
        let (folder, written) = write_batches(
            datasets,
            &acc.dataset,
            self.rows.schema(),
            vec![merged.clone()],
        )
        .await?;
        if let Some(old) = self.state.change_set.replace(folder.to_string()) {
            self.retire(vec![old]);
        }
        self.change_written = (written.bytes, written.files);
        self.state.change_rows = merged.num_rows() as u64;
        self.change_set = vec![merged];
        self.state.applied_lsn = end_lsn;
        self.state.changes_applied += count;
        self.state.last_commit_ms = commit_ms;
        self.publish(datasets, acc).await
    }

    pub(super) fn should_compact(&self) -> bool {
        self.state.change_rows > COMPACT_MIN_ROWS
            && self.state.change_rows * 8 > self.state.base_rows
    }

    /// Whether a stream quiet for `idle` should fold its change set now.
    pub(super) fn idle_compaction_due(&self, idle: Duration) -> bool {
        let rows = self.state.change_rows;
        rows > 0
            && (idle >= IDLE_COMPACT_ANY
                || (idle >= IDLE_COMPACT && rows * 100 >= self.state.base_rows))
    }

    /// The copy as queries see it becomes the new base; the change set empties.
    pub(super) async fn compact(
        &mut self,
        datasets: &Arc<Datasets>,
        acc: &Arc<Accelerated>,
    ) -> Result<()> {
        let Some(table) = acc.with(|s| s.table.clone()) else {
            return Ok(());
        };
        let state = datasets.planning_state(true)?;
        let ctx = SessionContext::new_with_state(state);
        let mut df = ctx.read_table(table)?;
        let sort_by = acc.with(|s| s.spec.sort_by.clone());
        if !sort_by.is_empty() {
            df = df.sort(
                sort_by
                    .iter()
                    .map(|c| datafusion::logical_expr::col(c.as_str()).sort(true, false))
                    .collect(),
            )?;
        }
        let (base, written) =
            write_new_segment(datasets, &acc.dataset, df.execute_stream().await?).await?;
        tracing::info!(dataset = %acc.dataset, rows = written.rows, folded = self.state.change_rows, "live copy compacted");
        let old_base = std::mem::replace(&mut self.state.base, vec![base.to_string()]);
        self.retire(old_base);
        if let Some(old) = self.state.change_set.take() {
            self.retire(vec![old]);
        }
        self.state.base_rows = written.rows;
        self.state.change_rows = 0;
        self.base_written = (written.bytes, written.files);
        self.change_written = (0, 0);
        self.change_set.clear();
        self.publish(datasets, acc).await
    }

    fn table_schema(&self) -> SchemaRef {
        let schema = self.rows.schema();
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != DELETED_COLUMN)
            .cloned()
            .collect();
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
    }

    fn retire(&mut self, folders: Vec<String>) {
        let now = tokio::time::Instant::now();
        self.retired.extend(folders.into_iter().map(|f| (now, f)));
    }

    /// One store update: from here queries read this state of the copy.
    pub(super) async fn publish(
        &mut self,
        datasets: &Arc<Datasets>,
        acc: &Arc<Accelerated>,
    ) -> Result<()> {
        let mut segments = self.state.base.clone();
        segments.extend(self.state.change_set.clone());
        let copy = CopyState {
            segments,
            rows: self.state.base_rows + self.state.change_rows,
            bytes: self.base_written.0 + self.change_written.0,
            files: self.base_written.1 + self.change_written.1,
            high_water: None,
            as_of_ms: self.state.last_commit_ms,
            changes: Some(self.state.clone()),
            filter: None,
        };
        let planning = datasets.planning_state(false)?;
        let table = table_of(&planning, &self.state).await?;
        let (origin, spec, last) = acc.with(|s| (s.origin, s.spec.clone(), s.last.clone()));
        datasets
            .store()
            .put_acceleration(&stored_of(
                &acc.dataset,
                origin,
                &spec,
                Some(copy.clone()),
                last,
            ))
            .await
            .map_err(store_error)?;
        acc.with(|s| {
            s.copy = Some(copy);
            s.table = table;
        });
        // Plans and cached answers that read the copy are stale now.
        datasets.changed(std::slice::from_ref(&acc.dataset));
        Ok(())
    }

    pub(super) async fn delete_retired(&mut self, datasets: &Arc<Datasets>) {
        let now = tokio::time::Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|(at, _)| now.duration_since(*at) >= RETIRE_AFTER);
        self.retired = keep;
        let Ok(state) = datasets.planning_state(true) else {
            return;
        };
        let Ok(store) = datasets.copies().store(&state) else {
            return;
        };
        for (_, folder) in due {
            if let Ok(url) = url::Url::parse(&folder) {
                if let Err(e) = delete_folder(&store, &url).await {
                    tracing::warn!(%folder, error = %e, "cannot delete a replaced part of a live copy");
                }
            }
        }
    }
}

/// Writes `batches` (of `schema`) as a new folder of `dataset`.
async fn write_batches(
    datasets: &Arc<Datasets>,
    dataset: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(url::Url, Written)> {
    let stream =
        RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches.into_iter().map(Ok)));
    write_new_segment(datasets, dataset, Box::pin(stream)).await
}
