//! `system.views` and `system.accelerations`: the virtual datasets as tables.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::error::Result;

use super::acceleration::changes::lag;
use super::store::now_ms;
use super::Datasets;
use quiver_connectors::postgres::changes::format_lsn;

fn ts(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        true,
    )
}

/// Every view: name, where it was defined, its text.
pub fn views(datasets: &Datasets) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("sql", DataType::Utf8, false),
        Field::new("accelerated", DataType::Boolean, false),
        ts("created_at"),
    ]));
    let v = datasets.views();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            v.iter().map(|v| v.name.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            v.iter().map(|v| v.origin.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            v.iter().map(|v| v.sql.as_str()),
        )),
        Arc::new(BooleanArray::from_iter(
            v.iter()
                .map(|v| Some(datasets.acceleration(&v.name).is_some())),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter(
                v.iter().map(|v| (v.created_ms > 0).then_some(v.created_ms)),
            )
            .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn live(i: &super::acceleration::AccelerationInfo) -> Option<&super::store::ChangesState> {
    i.copy.as_ref().and_then(|c| c.changes.as_ref())
}

/// Every accelerated dataset: how it refreshes, its copy, its last refresh.
pub fn accelerations(datasets: &Datasets) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("mode", DataType::Utf8, false),
        Field::new("refresh_secs", DataType::Int64, false),
        Field::new("time_column", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("bytes", DataType::Int64, true),
        Field::new("files", DataType::Int64, true),
        Field::new("high_water", DataType::Utf8, true),
        ts("last_refresh_start"),
        ts("last_refresh_end"),
        Field::new("last_outcome", DataType::Utf8, true),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("staleness_secs", DataType::Float64, true),
        Field::new("refreshing", DataType::Boolean, false),
        // Live copies (mode = 'changes'):
        Field::new("slot", DataType::Utf8, true),
        Field::new("applied_lsn", DataType::Utf8, true),
        Field::new("lag_bytes", DataType::Int64, true),
        Field::new("lag_secs", DataType::Float64, true),
        Field::new("changes_applied", DataType::Int64, true),
        // A copy of a subset: the rows it holds (the copy's resolved predicate, or
        // the acceleration's filter before a copy exists).
        Field::new("filter", DataType::Utf8, true),
    ]));
    let a: Vec<_> = datasets.accelerations().iter().map(|a| a.info()).collect();
    let now = now_ms();
    let int = |f: &dyn Fn(&super::acceleration::AccelerationInfo) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(a.iter().map(f)))
    };
    let time = |f: &dyn Fn(&super::acceleration::AccelerationInfo) -> Option<i64>| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from_iter(a.iter().map(f)).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            a.iter().map(|i| i.dataset.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            a.iter().map(|i| i.origin.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            a.iter().map(|i| i.spec.mode.as_str()),
        )),
        int(&|i| Some(i.spec.refresh_secs as i64)),
        Arc::new(StringArray::from_iter(
            a.iter().map(|i| i.spec.time_column.as_deref()),
        )),
        // ready: queries read the copy; pending: no copy yet, queries read the source;
        // catching up: a live copy replaying the changes made while it was taken.
        Arc::new(StringArray::from_iter_values(a.iter().map(|i| {
            match (i.answering, &i.copy) {
                (true, _) => "ready",
                (false, Some(c)) if c.changes.is_some() => "catching up",
                _ => "pending",
            }
        }))),
        int(&|i| i.copy.as_ref().map(|c| c.rows as i64)),
        int(&|i| i.copy.as_ref().map(|c| c.bytes as i64)),
        int(&|i| i.copy.as_ref().map(|c| c.files as i64)),
        Arc::new(StringArray::from_iter(
            a.iter()
                .map(|i| i.copy.as_ref().and_then(|c| c.high_water.as_deref())),
        )),
        time(&|i| i.last.as_ref().map(|l| l.started_ms)),
        time(&|i| i.last.as_ref().map(|l| l.ended_ms)),
        Arc::new(StringArray::from_iter(
            a.iter()
                .map(|i| i.last.as_ref().map(|l| l.outcome.as_str())),
        )),
        // A live copy's feed error first: it is the current one.
        Arc::new(StringArray::from_iter(a.iter().map(|i| {
            i.feed
                .as_ref()
                .and_then(|f| f.last_error.as_deref())
                .or_else(|| i.last.as_ref().and_then(|l| l.error.as_deref()))
        }))),
        // How old the data in the copy is: time since the refresh that made it
        // started; for a live copy, its lag.
        Arc::new(Float64Array::from_iter(a.iter().map(|i| {
            match (live(i), &i.feed) {
                (Some(ch), Some(f)) => Some(lag(f, ch.applied_lsn, now).1),
                _ => i.copy.as_ref().map(|c| (now - c.as_of_ms) as f64 / 1000.0),
            }
        }))),
        Arc::new(BooleanArray::from_iter(
            a.iter().map(|i| Some(i.refreshing)),
        )),
        Arc::new(StringArray::from_iter(
            a.iter().map(|i| live(i).map(|c| c.slot.as_str())),
        )),
        Arc::new(StringArray::from_iter(
            a.iter().map(|i| live(i).map(|c| format_lsn(c.applied_lsn))),
        )),
        int(&|i| match (live(i), &i.feed) {
            (Some(ch), Some(f)) => Some(lag(f, ch.applied_lsn, now).0 as i64),
            _ => None,
        }),
        Arc::new(Float64Array::from_iter(a.iter().map(|i| {
            match (live(i), &i.feed) {
                (Some(ch), Some(f)) => Some(lag(f, ch.applied_lsn, now).1),
                _ => None,
            }
        }))),
        int(&|i| live(i).map(|c| c.changes_applied as i64)),
        Arc::new(StringArray::from_iter(a.iter().map(|i| {
            i.copy
                .as_ref()
                .and_then(|c| c.filter.as_deref())
                .or(i.spec.filter.as_deref())
        }))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}
