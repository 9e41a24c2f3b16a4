//! Comparing query results: same rows, in any order where the query leaves order
//! open, with floats equal within a relative tolerance.

use arrow::array::{Array, ArrayRef, Float32Array, Float64Array};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Float(f64),
    Text(String),
}

fn cells(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut rows = vec![];
    let opts = FormatOptions::default().with_null("NULL");
    for batch in batches {
        let cols: Vec<&ArrayRef> = batch.columns().iter().collect();
        for r in 0..batch.num_rows() {
            let row = cols
                .iter()
                .map(|c| {
                    if c.is_null(r) {
                        return Cell::Text("NULL".into());
                    }
                    match c.data_type() {
                        DataType::Float64 => Cell::Float(
                            c.as_any()
                                .downcast_ref::<Float64Array>()
                                .map(|a| a.value(r))
                                .unwrap_or(f64::NAN),
                        ),
                        DataType::Float32 => Cell::Float(
                            c.as_any()
                                .downcast_ref::<Float32Array>()
                                .map(|a| a.value(r) as f64)
                                .unwrap_or(f64::NAN),
                        ),
                        _ => Cell::Text(
                            ArrayFormatter::try_new(c.as_ref(), &opts)
                                .map(|f| f.value(r).to_string())
                                .unwrap_or_default(),
                        ),
                    }
                })
                .collect();
            rows.push(row);
        }
    }
    rows
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
}

/// Sort key: text cells exactly, floats coarsely, so rows that differ only in the
/// last bits of a float still line up.
fn key(row: &[Cell]) -> Vec<String> {
    row.iter()
        .map(|c| match c {
            Cell::Text(s) => s.clone(),
            Cell::Float(f) => format!("{f:.6e}"),
        })
        .collect()
}

/// Compares `actual` with `expected`. `ordered`: compare in the given order
/// (the query has a total ORDER BY); otherwise as multisets.
pub fn assert_same_rows(
    actual: &[RecordBatch],
    expected: &[RecordBatch],
    ordered: bool,
    what: &str,
) {
    let (mut a, mut e) = (cells(actual), cells(expected));
    assert_eq!(a.len(), e.len(), "{what}: row count differs");
    if let (Some(fa), Some(fe)) = (actual.first(), expected.first()) {
        assert_eq!(
            fa.num_columns(),
            fe.num_columns(),
            "{what}: column count differs"
        );
    }
    if !ordered {
        a.sort_by_key(|r| key(r));
        e.sort_by_key(|r| key(r));
    }
    for (i, (ra, re)) in a.iter().zip(&e).enumerate() {
        for (j, (ca, ce)) in ra.iter().zip(re).enumerate() {
            let same = match (ca, ce) {
                (Cell::Float(x), Cell::Float(y)) => close(*x, *y, 1e-9),
                _ => ca == ce,
            };
            assert!(
                same,
                "{what}: row {i} column {j}: got {ca:?}, expected {ce:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use std::sync::Arc;

    fn batch(names: &[&str], values: &[f64]) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("n", Arc::new(StringArray::from(names.to_vec())) as ArrayRef),
            (
                "v",
                Arc::new(Float64Array::from(values.to_vec())) as ArrayRef,
            ),
        ])
        .expect("batch")
    }

    #[test]
    fn tolerates_float_noise_and_order() {
        let a = batch(&["x", "y"], &[1.0, 2.0 + 1e-13]);
        let e = batch(&["y", "x"], &[2.0, 1.0]);
        assert_same_rows(&[a], &[e], false, "t");
    }

    #[test]
    #[should_panic(expected = "row 0 column 1")]
    fn detects_a_wrong_value() {
        assert_same_rows(
            &[batch(&["x"], &[1.0])],
            &[batch(&["x"], &[1.001])],
            true,
            "t",
        );
    }

    #[test]
    #[should_panic(expected = "row count differs")]
    fn detects_a_missing_row() {
        assert_same_rows(
            &[batch(&["x"], &[1.0])],
            &[batch(&["x", "y"], &[1.0, 2.0])],
            true,
            "t",
        );
    }
}
