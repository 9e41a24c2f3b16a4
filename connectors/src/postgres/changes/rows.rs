//! Changes as Arrow rows: what a change set holds.
//!
//! A change set is one row per changed key, its latest state: the row's values
//! with `__quiver_deleted = false`, or its key with `__quiver_deleted = true`.
//! [`ChangeRows::batch`] turns transactions' changes into rows in commit order,
//! and [`ChangeRows::merge`] folds newer rows into an older change set, the
//! latest of each key winning (keys compared with arrow's row format, so any
//! key type and composite keys work alike).

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayBuilder, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};

use super::pgoutput::Datum;
use super::stream::Change;
use super::ChangesError;
use crate::postgres::types::{append, PgKind};

/// The column that marks a deleted key in a change set.
pub const DELETED_COLUMN: &str = "__quiver_deleted";

/// How one table's changes become rows.
#[derive(Debug, Clone)]
pub struct ChangeRows {
    /// The table's columns, then [`DELETED_COLUMN`].
    schema: SchemaRef,
    kinds: Vec<PgKind>,
    key: Vec<usize>,
}

impl ChangeRows {
    /// `columns`: the table's, in order; `key`: the names that identify a row.
    pub fn new(columns: &[(String, PgKind)], key: &[String]) -> Result<Self, ChangesError> {
        let mut fields: Vec<Field> = columns
            .iter()
            .map(|(name, kind)| Field::new(name, kind.arrow_type(), true))
            .collect();
        fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, false));
        let key = key
            .iter()
            .map(|k| {
                columns.iter().position(|(n, _)| n == k).ok_or_else(|| {
                    ChangesError::Unsupported(format!(
                        "key column {k} is not a column of the table"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            schema: Arc::new(Schema::new(fields)),
            kinds: columns.iter().map(|(_, k)| k.clone()).collect(),
            key,
        })
    }

    /// The change set's schema: the table's columns, then [`DELETED_COLUMN`].
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Indices of the key columns.
    pub fn key(&self) -> &[usize] {
        &self.key
    }

    /// Rows for `changes` (one transaction's or several, in commit order; no
    /// [`Change::Truncate`], which the caller applies itself). A value the
    /// server left out (an unchanged TOASTed value, without `REPLICA IDENTITY
    /// FULL`) is taken from an earlier upsert of the same key in `changes`;
    /// without one it is an error, and the copy must be taken again.
    pub fn batch(&self, changes: &[Change]) -> Result<RecordBatch, ChangesError> {
        let n = self.kinds.len();
        let mut builders: Vec<Box<dyn ArrayBuilder>> = self
            .kinds
            .iter()
            .map(|k| k.builder(changes.len()))
            .collect();
        let mut deleted = Vec::with_capacity(changes.len());
        // The latest full values of keys upserted so far, for unchanged values.
        let mut latest: std::collections::HashMap<Vec<Datum>, Vec<Datum>> = Default::default();
        for change in changes {
            let (datums, is_delete) = match change {
                Change::Upsert(d) => (d, false),
                Change::Delete(d) => (d, true),
                Change::Truncate => {
                    return Err(ChangesError::Stream(
                        "a TRUNCATE among changes to rows (applied by the caller)".into(),
                    ))
                }
            };
            if datums.len() != n {
                return Err(ChangesError::Unsupported(format!(
                    "a change has {} columns, the table {n}: the table changed shape",
                    datums.len()
                )));
            }
            let key: Vec<Datum> = self.key.iter().map(|&i| datums[i].clone()).collect();
            let mut row = datums.clone();
            if !is_delete && row.contains(&Datum::Unchanged) {
                let earlier = latest.get(&key).ok_or_else(|| {
                    ChangesError::MissingValue(
                        "an update left a large (TOASTed) value out and the copy has no earlier value for it in this batch"
                            .into(),
                    )
                })?;
                for (value, old) in row.iter_mut().zip(earlier) {
                    if *value == Datum::Unchanged {
                        *value = old.clone();
                    }
                }
            }
            for (i, (builder, kind)) in builders.iter_mut().zip(&self.kinds).enumerate() {
                // A deleted row keeps only its key.
                let value = match (&row[i], is_delete && !self.key.contains(&i)) {
                    (_, true) | (Datum::Null, _) | (Datum::Unchanged, _) => None,
                    (Datum::Binary(b), _) | (Datum::Text(b), _) => Some(b.as_ref()),
                };
                append(builder.as_mut(), kind, value).map_err(|e| {
                    ChangesError::Stream(format!("column {}: {e}", self.schema.field(i).name()))
                })?;
            }
            deleted.push(is_delete);
            match is_delete {
                true => latest.remove(&key),
                false => latest.insert(key, row),
            };
        }
        let mut columns: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
        columns.push(Arc::new(BooleanArray::from(deleted)));
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| ChangesError::Stream(e.to_string()))
    }

    /// `older` (a change set) with `newer` folded in: one row per key, the
    /// latest; rows of `newer` come after those of `older` in time.
    pub fn merge(
        &self,
        older: &[RecordBatch],
        newer: &[RecordBatch],
    ) -> Result<RecordBatch, ChangesError> {
        let arrow = |e: datafusion::arrow::error::ArrowError| ChangesError::Stream(e.to_string());
        let all: Vec<RecordBatch> = older.iter().chain(newer).cloned().collect();
        let combined = concat_batches(&self.schema, &all).map_err(arrow)?;
        let fields = self
            .key
            .iter()
            .map(|&i| SortField::new(self.schema.field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(arrow)?;
        let keys: Vec<ArrayRef> = self
            .key
            .iter()
            .map(|&i| combined.column(i).clone())
            .collect();
        let rows = converter.convert_columns(&keys).map_err(arrow)?;
        // From the newest back: the first row seen of each key is its latest.
        let mut seen = HashSet::with_capacity(rows.num_rows());
        let mut keep: Vec<u32> = (0..rows.num_rows())
            .rev()
            .filter(|&i| seen.insert(rows.row(i)))
            .map(|i| i as u32)
            .collect();
        keep.reverse();
        take_record_batch(&combined, &UInt32Array::from(keep)).map_err(arrow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Int64Type;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn rows() -> ChangeRows {
        ChangeRows::new(
            &[("id".into(), PgKind::Int8), ("name".into(), PgKind::Text)],
            &["id".into()],
        )
        .expect("rows")
    }

    fn int(v: i64) -> Datum {
        Datum::Binary(Bytes::copy_from_slice(&v.to_be_bytes()))
    }
    fn text(v: &str) -> Datum {
        Datum::Binary(Bytes::copy_from_slice(v.as_bytes()))
    }

    /// The change set as id -> Some(name) or None (deleted).
    fn state(batch: &RecordBatch) -> BTreeMap<i64, Option<String>> {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let names = batch.column(1).as_string::<i32>();
        let deleted = batch.column(2).as_boolean();
        (0..batch.num_rows())
            .map(|i| {
                let name = (!deleted.value(i)).then(|| names.value(i).to_string());
                (ids.value(i), name)
            })
            .collect()
    }

    #[test]
    fn the_latest_change_of_each_key_wins_across_batches() {
        let r = rows();
        let first = r
            .batch(&[
                Change::Upsert(vec![int(1), text("a")]),
                Change::Upsert(vec![int(2), text("b")]),
                Change::Upsert(vec![int(1), text("a2")]),
            ])
            .expect("batch");
        let second = r
            .batch(&[
                Change::Delete(vec![int(2), Datum::Null]),
                Change::Upsert(vec![int(3), text("c")]),
                Change::Upsert(vec![int(2), Datum::Unchanged]),
            ])
            .unwrap_err();
        // An unchanged value with nothing earlier in the batch to take it from.
        assert!(second.to_string().contains("TOASTed"), "{second}");
        let second = r
            .batch(&[
                Change::Delete(vec![int(2), Datum::Null]),
                Change::Upsert(vec![int(3), text("c")]),
                Change::Upsert(vec![int(3), Datum::Unchanged]),
            ])
            .expect("batch");
        let merged = r.merge(&[first], &[second]).expect("merge");
        assert_eq!(merged.num_rows(), 3);
        let expected: BTreeMap<i64, Option<String>> = [
            (1, Some("a2".to_string())),
            (2, None),
            (3, Some("c".to_string())),
        ]
        .into();
        assert_eq!(state(&merged), expected);
    }

    #[test]
    fn a_change_of_another_shape_is_refused() {
        let err = rows().batch(&[Change::Upsert(vec![int(1)])]).unwrap_err();
        assert!(err.to_string().contains("changed shape"), "{err}");
    }

    proptest! {
        /// Folding changes batch by batch ends where applying them one by one ends.
        #[test]
        fn merging_equals_applying_in_order(
            ops in proptest::collection::vec((0i64..8, any::<bool>(), "[a-z]{0,3}"), 0..60),
            cut in 0usize..60,
        ) {
            let r = rows();
            let changes: Vec<Change> = ops
                .iter()
                .map(|(id, delete, name)| match delete {
                    true => Change::Delete(vec![int(*id), Datum::Null]),
                    false => Change::Upsert(vec![int(*id), text(name)]),
                })
                .collect();
            let mut expected = BTreeMap::new();
            for (id, delete, name) in &ops {
                expected.insert(*id, (!delete).then(|| name.clone()));
            }
            let cut = cut.min(changes.len());
            let older = r.batch(&changes[..cut]).expect("older");
            let newer = r.batch(&changes[cut..]).expect("newer");
            let merged = r.merge(&[older], &[newer]).expect("merge");
            prop_assert_eq!(state(&merged), expected);
            let ids: Vec<i64> = merged.column(0).as_primitive::<Int64Type>().values().to_vec();
            let distinct: HashSet<i64> = ids.iter().copied().collect();
            prop_assert_eq!(ids.len(), distinct.len());
        }
    }

    #[test]
    fn values_decode_as_scans_do() {
        let r = rows();
        let batch = r
            .batch(&[Change::Upsert(vec![int(7), text("x")])])
            .expect("batch");
        assert_eq!(
            batch.column(0).as_primitive::<Int64Type>(),
            &Int64Array::from(vec![7])
        );
        assert_eq!(
            batch.column(1).as_string::<i32>(),
            &StringArray::from(vec!["x"])
        );
    }
}
