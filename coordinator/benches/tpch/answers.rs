//! Quiver's answers against DataFusion's, value by value: the same rows in any
//! order (ordered queries are sorted the same way by both), floats equal within a
//! relative 1e-9 (the sum of an average's parts in another order differs in the
//! last bits), every other value equal as text.

use arrow::array::{Array, Float64Array};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

#[derive(Debug, PartialEq, PartialOrd)]
enum Cell {
    Text(String),
    Float(f64),
}

fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = vec![];
    for b in batches {
        for r in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| match (c.data_type(), c.is_null(r)) {
                        (DataType::Float64, false) => Cell::Float(
                            c.as_any()
                                .downcast_ref::<Float64Array>()
                                .map_or(f64::NAN, |a| a.value(r)),
                        ),
                        _ => Cell::Text(
                            ArrayFormatter::try_new(c.as_ref(), &opts)
                                .map(|f| f.value(r).to_string())
                                .unwrap_or_default(),
                        ),
                    })
                    .collect(),
            );
        }
    }
    // Floats coarsely in the order, so rows differing in a float's last bits line up.
    out.sort_by(|a, b| {
        let key = |row: &Vec<Cell>| -> Vec<String> {
            row.iter()
                .map(|c| match c {
                    Cell::Text(s) => s.clone(),
                    Cell::Float(f) => format!("{f:.6e}"),
                })
                .collect()
        };
        key(a).cmp(&key(b))
    });
    out
}

/// Ok when both hold the same rows; else the first difference.
pub fn same(actual: &[RecordBatch], expected: &[RecordBatch]) -> Result<(), String> {
    let (a, e) = (rows(actual), rows(expected));
    if a.len() != e.len() {
        return Err(format!("{} rows, DataFusion {}", a.len(), e.len()));
    }
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let equal = x.len() == y.len()
            && x.iter().zip(y).all(|pair| match pair {
                (Cell::Float(p), Cell::Float(q)) => {
                    p == q || (p - q).abs() <= 1e-9 * p.abs().max(q.abs())
                }
                (p, q) => p == q,
            });
        if !equal {
            return Err(format!("row {i}: {x:?}, DataFusion {y:?}"));
        }
    }
    Ok(())
}
