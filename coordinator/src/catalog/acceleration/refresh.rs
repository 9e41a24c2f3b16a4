//! Refreshing a copy: read the dataset from its source through the engine (so the
//! read is pushed down and spread over the workers like a query), write Parquet
//! files into a new segment folder, then publish the segment with one store update.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{cast, col, lit, Accumulator, SortExpr};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{delete_folder, store_path, table_of, Accelerated};
use crate::catalog::config::RefreshMode;
use crate::catalog::store::{now_ms, CopyState, RefreshRecord, StoredAcceleration};
use crate::catalog::{store_error, Datasets};

/// What one refresh did.
#[derive(Clone, Debug)]
pub struct Refreshed {
    pub dataset: String,
    /// Rows fetched by this refresh (for append: only the new ones).
    pub rows_fetched: u64,
    pub copy: CopyState,
    pub seconds: f64,
}

/// [`refresh`] in a task of its own: a caller that goes away (a cancelled
/// `REFRESH ACCELERATION`, a client timeout) does not stop it half-way.
pub async fn refresh_detached(
    datasets: &Arc<Datasets>,
    acc: &Arc<Accelerated>,
) -> Result<Refreshed> {
    let (datasets, acc) = (datasets.clone(), acc.clone());
    tokio::spawn(async move { refresh(&datasets, &acc).await })
        .await
        .map_err(|e| DataFusionError::Internal(format!("the refresh task ended abnormally: {e}")))?
}

/// Refreshes `acc` now (after any refresh of it already running).
pub async fn refresh(datasets: &Arc<Datasets>, acc: &Arc<Accelerated>) -> Result<Refreshed> {
    let _one_at_a_time = acc.refresh_lock.lock().await;
    let started = now_ms();
    acc.with(|s| s.running_since_ms = Some(started));
    let result = run(datasets, acc, started).await;
    let ended = now_ms();
    let counters = &datasets.counters;
    counters.refreshes.fetch_add(1, Ordering::Relaxed);
    counters
        .refresh_millis
        .fetch_add((ended - started).max(0) as u64, Ordering::Relaxed);
    let (copy, last) = match &result {
        Ok(r) => {
            tracing::info!(dataset = %acc.dataset, rows = r.rows_fetched, total = r.copy.rows, "accelerated copy refreshed");
            (
                Some(r.copy.clone()),
                RefreshRecord {
                    started_ms: started,
                    ended_ms: ended,
                    outcome: "ok".into(),
                    error: None,
                    rows: r.rows_fetched,
                },
            )
        }
        Err(e) => {
            counters.refresh_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(dataset = %acc.dataset, error = %e, "refresh failed; the previous copy stays");
            let error = Some(e.message().to_string());
            (
                None,
                RefreshRecord {
                    started_ms: started,
                    ended_ms: ended,
                    outcome: "failed".into(),
                    error,
                    rows: 0,
                },
            )
        }
    };
    acc.with(|s| {
        s.running_since_ms = None;
        s.last = Some(last.clone());
    });
    if copy.is_none() {
        // Record the failure; the stored copy stays as it was.
        let stored = acc.with(|s| {
            stored_of(
                &acc.dataset,
                s.origin,
                &s.spec,
                s.copy.clone(),
                Some(last.clone()),
            )
        });
        if let Err(e) = datasets.store().put_acceleration(&stored).await {
            tracing::warn!(dataset = %acc.dataset, error = %e, "cannot record the failed refresh");
        }
    }
    result.map(|mut r| {
        r.seconds = (ended - started) as f64 / 1000.0;
        r
    })
}

pub(super) fn stored_of(
    dataset: &str,
    origin: crate::catalog::Origin,
    spec: &crate::catalog::config::AccelerateSpec,
    copy: Option<CopyState>,
    last_refresh: Option<RefreshRecord>,
) -> StoredAcceleration {
    StoredAcceleration {
        dataset: dataset.to_string(),
        origin: origin.as_str().into(),
        spec: spec.clone(),
        copy,
        last_refresh,
    }
}

async fn run(datasets: &Arc<Datasets>, acc: &Arc<Accelerated>, started: i64) -> Result<Refreshed> {
    let (spec, origin, old) = acc.with(|s| (s.spec.clone(), s.origin, s.copy.clone()));
    if spec.mode == RefreshMode::Changes {
        return Err(DataFusionError::Plan(format!(
            "{} is a live copy, kept current from its change stream: it needs no refresh (system.accelerations shows its lag)",
            acc.dataset
        )));
    }
    // Read from the source, never from the copy.
    let (state, mut df) = source_frame(datasets, &acc.dataset).await?;
    // A copy of a subset: the filter with this refresh's time, recorded with the copy.
    let filter = match &spec.filter {
        Some(f) => {
            let (predicate, text) = super::subset::resolve_filter(&df, f, started)?;
            df = df.filter(predicate)?;
            Some(text)
        }
        None => None,
    };
    let append = spec.mode == RefreshMode::Append;
    let high_water = old
        .as_ref()
        .and_then(|c| c.high_water.clone())
        .filter(|_| append);
    let time_column = spec.time_column.clone();
    if let (Some(column), Some(mark)) = (&time_column, &high_water) {
        let field = df
            .schema()
            .field_with_unqualified_name(column)?
            .data_type()
            .clone();
        // The mark is bound as a value of the column's type, never pasted into SQL.
        df = df.filter(col(column.as_str()).gt(cast(lit(mark.clone()), field)))?;
    }
    if !spec.sort_by.is_empty() {
        let keys: Vec<SortExpr> = spec
            .sort_by
            .iter()
            .map(|c| col(c.as_str()).sort(true, false))
            .collect();
        df = df.sort(keys)?;
    }
    let stream = df.execute_stream().await?;
    let store = datasets.copies().store(&state)?;
    let segment = datasets.copies().new_segment(&acc.dataset)?;
    let written = write_segment(
        stream,
        &store,
        &segment,
        datasets.copies().rows_per_file(),
        time_column.as_deref(),
    )
    .await;
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = delete_folder(&store, &segment).await;
            return Err(e);
        }
    };
    let mut segments = match (&old, append) {
        (Some(c), true) => c.segments.clone(),
        _ => vec![],
    };
    // An append that found nothing new adds no segment (unless there is no copy yet).
    let keep_segment = !(append && written.rows == 0 && !segments.is_empty());
    if keep_segment {
        segments.push(segment.to_string());
    } else {
        let _ = delete_folder(&store, &segment).await;
    }
    let base = old.as_ref().filter(|_| append);
    let high_water = max_text(high_water, written.high_water.clone());
    let copy = CopyState {
        segments,
        rows: base.map_or(0, |c| c.rows) + written.rows,
        bytes: base.map_or(0, |c| c.bytes) + if keep_segment { written.bytes } else { 0 },
        files: base.map_or(0, |c| c.files) + if keep_segment { written.files } else { 0 },
        high_water: if append { high_water } else { None },
        as_of_ms: started,
        changes: None,
        filter,
    };
    let table = match table_of(&state, &copy).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            let _ = delete_folder(&store, &segment).await;
            return Err(DataFusionError::Internal(
                "a refreshed copy without a table".into(),
            ));
        }
        Err(e) => {
            let _ = delete_folder(&store, &segment).await;
            return Err(e);
        }
    };
    let record = RefreshRecord {
        started_ms: started,
        ended_ms: now_ms(),
        outcome: "ok".into(),
        error: None,
        rows: written.rows,
    };
    // The commit point: from here queries read the new copy.
    if let Err(e) = datasets
        .store()
        .put_acceleration(&stored_of(
            &acc.dataset,
            origin,
            &spec,
            Some(copy.clone()),
            Some(record),
        ))
        .await
    {
        let _ = delete_folder(&store, &segment).await;
        return Err(store_error(e));
    }
    let replaced: Vec<String> = old
        .map(|c| c.segments)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !copy.segments.contains(s))
        .collect();
    let to_delete = acc.with(|s| {
        s.copy = Some(copy.clone());
        s.table = Some(table);
        std::mem::replace(&mut s.retired, replaced)
    });
    datasets.changed(std::slice::from_ref(&acc.dataset));
    for folder in to_delete {
        if let Ok(url) = url::Url::parse(&folder) {
            if let Err(e) = delete_folder(&store, &url).await {
                tracing::warn!(%folder, error = %e, "cannot delete a replaced copy");
            }
        }
    }
    Ok(Refreshed {
        dataset: acc.dataset.clone(),
        rows_fetched: written.rows,
        copy,
        seconds: 0.0,
    })
}

/// Every row of `dataset` as its source has it (never its copy), with the state
/// that plans it. A projection on top: federation hands a subtree with one to the
/// database (a bare scan stays unplanned).
async fn source_frame(
    datasets: &Arc<Datasets>,
    dataset: &str,
) -> Result<(
    datafusion::execution::session_state::SessionState,
    DataFrame,
)> {
    let state = datasets.planning_state(true)?;
    let ctx = SessionContext::new_with_state(state.clone());
    let df = ctx
        .table(datafusion::common::TableReference::parse_str(dataset))
        .await?;
    let columns: Vec<datafusion::logical_expr::Expr> = df
        .schema()
        .columns()
        .into_iter()
        .map(datafusion::logical_expr::Expr::Column)
        .collect();
    Ok((state, df.select(columns)?))
}

/// Copies `dataset` from its source (never from its copy) into a new segment
/// folder, sorted by `sort_by`: the base of a live copy. On failure nothing stays.
pub(super) async fn copy_from_source(
    datasets: &Arc<Datasets>,
    dataset: &str,
    sort_by: &[String],
) -> Result<(url::Url, Written)> {
    let (_, mut df) = source_frame(datasets, dataset).await?;
    if !sort_by.is_empty() {
        df = df.sort(
            sort_by
                .iter()
                .map(|c| col(c.as_str()).sort(true, false))
                .collect(),
        )?;
    }
    let stream = df.execute_stream().await?;
    write_new_segment(datasets, dataset, stream).await
}

/// Writes `stream` into a new segment folder of `dataset`; on failure nothing stays.
pub(super) async fn write_new_segment(
    datasets: &Arc<Datasets>,
    dataset: &str,
    stream: datafusion::execution::SendableRecordBatchStream,
) -> Result<(url::Url, Written)> {
    let state = datasets.planning_state(true)?;
    let store = datasets.copies().store(&state)?;
    let segment = datasets.copies().new_segment(dataset)?;
    match write_segment(
        stream,
        &store,
        &segment,
        datasets.copies().rows_per_file(),
        None,
    )
    .await
    {
        Ok(w) => Ok((segment, w)),
        Err(e) => {
            let _ = delete_folder(&store, &segment).await;
            Err(e)
        }
    }
}

const ROW_GROUP_ROWS: usize = 128 * 1024;

pub(super) struct Written {
    pub rows: u64,
    pub bytes: u64,
    pub files: u64,
    high_water: Option<String>,
}

/// Writes the stream as Parquet files of at most `rows_per_file` rows each (one
/// file at least, so an empty copy still has its schema), tracking the highest
/// value of `time_column`.
async fn write_segment(
    mut stream: datafusion::execution::SendableRecordBatchStream,
    store: &Arc<dyn ObjectStore>,
    segment: &url::Url,
    rows_per_file: usize,
    time_column: Option<&str>,
) -> Result<Written> {
    let schema: SchemaRef = stream.schema();
    let mut max = match time_column {
        Some(c) => {
            let field = schema.field_with_name(c)?;
            Some((
                schema.index_of(c)?,
                datafusion::functions_aggregate::min_max::MaxAccumulator::try_new(
                    field.data_type(),
                )?,
            ))
        }
        None => None,
    };
    // Row groups of 128Ki rows (as DuckDB's ~120k): scans split evenly over workers and
    // statistics of a sorted copy prune at that grain.
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut out = Written {
        rows: 0,
        bytes: 0,
        files: 0,
        high_water: None,
    };
    let mut current: Option<(
        AsyncArrowWriter<object_store::buffered::BufWriter>,
        object_store::path::Path,
        usize,
    )> = None;
    let open = |n: u64| -> Result<(
        AsyncArrowWriter<object_store::buffered::BufWriter>,
        object_store::path::Path,
        usize,
    )> {
        let url = segment
            .join(&format!("part-{n:05}.parquet"))
            .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        let path = store_path(&url)?;
        let sink = object_store::buffered::BufWriter::new(store.clone(), path.clone());
        Ok((
            AsyncArrowWriter::try_new(sink, schema.clone(), Some(props.clone()))?,
            path,
            0,
        ))
    };
    while let Some(batch) = stream.next().await {
        let mut batch = batch?;
        if let Some((i, acc)) = max.as_mut() {
            acc.update_batch(&[batch.column(*i).clone()])?;
        }
        // A batch is split where a file fills up.
        while batch.num_rows() > 0 {
            let (writer, _, rows) = match current.as_mut() {
                Some(c) => c,
                None => {
                    out.files += 1;
                    current.insert(open(out.files - 1)?)
                }
            };
            let take = batch.num_rows().min(rows_per_file - *rows);
            writer.write(&batch.slice(0, take)).await?;
            *rows += take;
            out.rows += take as u64;
            batch = batch.slice(take, batch.num_rows() - take);
            if *rows >= rows_per_file {
                if let Some((w, path, _)) = current.take() {
                    out.bytes += close(w, store, &path).await?;
                }
            }
        }
    }
    if out.files == 0 {
        out.files = 1;
        current = Some(open(0)?);
    }
    if let Some((w, path, _)) = current.take() {
        out.bytes += close(w, store, &path).await?;
    }
    if let Some((_, mut acc)) = max {
        // As text that casts back to the column's type (timestamps in ISO 8601).
        let v = acc.evaluate()?;
        out.high_water = match v.cast_to(&datafusion::arrow::datatypes::DataType::Utf8)? {
            datafusion::scalar::ScalarValue::Utf8(Some(text)) => Some(text),
            _ => None,
        };
    }
    Ok(out)
}

async fn close(
    writer: AsyncArrowWriter<object_store::buffered::BufWriter>,
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
) -> Result<u64> {
    writer.close().await?;
    let meta = store
        .head(path)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(meta.size)
}

/// The larger of two high-water marks as text; compared as numbers when both
/// are numbers, else as text (timestamps print in ISO 8601, which sorts).
fn max_text(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let bigger = match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => y > x,
                _ => b > a,
            };
            Some(if bigger { b } else { a })
        }
        (a, b) => a.or(b),
    }
}

/// Deletes segment folders of `acc` that its copy does not use and that are over
/// an hour old: what a refresh left when the coordinator died mid-way.
pub async fn sweep(
    datasets: &Datasets,
    acc: &Accelerated,
    state: &datafusion::execution::session_state::SessionState,
) -> Result<usize> {
    let store = datasets.copies().store(state)?;
    let folder = datasets.copies().dataset_url(&acc.dataset)?;
    let prefix = store_path(&folder)?;
    let listing = store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let used = acc.segments();
    let cutoff = now_ms() - 3_600_000;
    let mut removed = 0;
    for dir in listing.common_prefixes {
        let Some(name) = dir.filename() else { continue };
        let Ok(url) = folder.join(&format!("{name}/")) else {
            continue;
        };
        let old = name
            .split('-')
            .next()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| t < cutoff);
        if old && !used.contains(&url.to_string()) {
            delete_folder(&store, &url).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn high_water_marks_compare_as_numbers_or_text() {
        assert_eq!(
            super::max_text(Some("9".into()), Some("10".into())).as_deref(),
            Some("10")
        );
        assert_eq!(
            super::max_text(
                Some("2026-01-02T00:00:00".into()),
                Some("2025-12-31T00:00:00".into())
            )
            .as_deref(),
            Some("2026-01-02T00:00:00")
        );
        assert_eq!(
            super::max_text(None, Some("1".into())).as_deref(),
            Some("1")
        );
    }
}
