//! Row and distinct-value estimates for the inputs of a join, and the size of a join
//! of two of them.
//!
//! The numbers come from the statistics DataFusion's physical plans already carry:
//! row counts and column min/max from Parquet footers and lakehouse logs, the
//! databases' table statistics, and a filter's selectivity from DataFusion's interval
//! analysis of its predicate. Distinct counts are rarely recorded, so an integer or
//! date column's distinct count is bounded by its min..max range, and every count by
//! the input's rows.

use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};

/// What is known about one input of a join: its estimated rows after its own
/// filters, and an estimated distinct count for each of its output columns.
#[derive(Debug, Clone)]
pub(super) struct InputEstimate {
    pub rows: f64,
    /// Indexed like the input's schema; `None` when nothing bounds the count.
    pub distinct: Vec<Option<f64>>,
}

impl InputEstimate {
    /// From a physical plan's statistics; `None` when its row count is unknown,
    /// since then no order can be argued for.
    pub fn from_statistics(stats: &Statistics) -> Option<Self> {
        let rows = match stats.num_rows {
            Precision::Exact(n) | Precision::Inexact(n) => n as f64,
            Precision::Absent => return None,
        };
        let distinct = stats
            .column_statistics
            .iter()
            .map(|c| distinct_count(c).map(|d| d.min(rows).max(1.0)))
            .collect();
        Some(Self { rows, distinct })
    }

    /// The distinct count of column `index`, or the rows when it is unknown (a key
    /// with nothing known about it is taken to be unique, as a dimension's is).
    pub fn distinct_of(&self, index: Option<usize>) -> f64 {
        index
            .and_then(|i| self.distinct.get(i).copied().flatten())
            .unwrap_or(self.rows)
            .max(1.0)
    }
}

/// A recorded distinct count, else the size of an integer or date column's range.
fn distinct_count(c: &ColumnStatistics) -> Option<f64> {
    if let Precision::Exact(n) | Precision::Inexact(n) = c.distinct_count {
        return Some(n as f64);
    }
    let (Precision::Exact(min) | Precision::Inexact(min)) = &c.min_value else {
        return None;
    };
    let (Precision::Exact(max) | Precision::Inexact(max)) = &c.max_value else {
        return None;
    };
    if !discrete(min) {
        return None;
    }
    max.distance_u64(min).map(|d| d as f64 + 1.0)
}

/// Types whose values between min and max can be counted.
fn discrete(v: &ScalarValue) -> bool {
    v.data_type().is_integer()
        || matches!(
            v,
            ScalarValue::Date32(Some(_)) | ScalarValue::Date64(Some(_))
        )
}

/// Rows of `a ⋈ b` on keys whose distinct counts on each side are `keys`
/// (`(distinct in a, distinct in b)`): each row of the side with fewer distinct
/// keys meets `rows / distinct` rows of the other (containment of key sets, uniform
/// spread). With several keys the most selective one is taken, not their product,
/// because compound keys are usually correlated (an order and its line number).
/// No keys: a cross join.
pub(super) fn join_rows(a_rows: f64, b_rows: f64, keys: &[(f64, f64)]) -> f64 {
    let divisor = keys.iter().map(|(a, b)| a.max(*b)).fold(1.0_f64, f64::max);
    (a_rows * b_rows / divisor).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(min: ScalarValue, max: ScalarValue) -> ColumnStatistics {
        ColumnStatistics {
            min_value: Precision::Exact(min),
            max_value: Precision::Exact(max),
            ..ColumnStatistics::new_unknown()
        }
    }

    #[test]
    fn distinct_counts_come_from_ranges_and_stop_at_the_rows() {
        let stats = Statistics {
            num_rows: Precision::Inexact(365),
            total_byte_size: Precision::Absent,
            column_statistics: vec![
                column(
                    ScalarValue::Int64(Some(1)),
                    ScalarValue::Int64(Some(73_049)),
                ),
                column(
                    ScalarValue::Int32(Some(2000)),
                    ScalarValue::Int32(Some(2000)),
                ),
                column(
                    ScalarValue::Float64(Some(0.0)),
                    ScalarValue::Float64(Some(9.0)),
                ),
                ColumnStatistics::new_unknown(),
            ],
        };
        let e = InputEstimate::from_statistics(&stats).expect("rows are known");
        assert_eq!(e.rows, 365.0);
        assert_eq!(e.distinct_of(Some(0)), 365.0, "bounded by the rows");
        assert_eq!(e.distinct_of(Some(1)), 1.0);
        assert_eq!(e.distinct_of(Some(2)), 365.0, "floats are not counted");
        assert_eq!(e.distinct_of(Some(3)), 365.0);
        assert_eq!(e.distinct_of(None), 365.0);
    }

    #[test]
    fn unknown_rows_give_no_estimate() {
        assert!(InputEstimate::from_statistics(&Statistics::new_unknown(
            &arrow::datatypes::Schema::empty()
        ))
        .is_none());
    }

    #[test]
    fn a_filtered_dimension_shrinks_the_fact_and_two_facts_multiply() {
        // 1.4M sales over 1,800 distinct days, joined with 365 days of a date table.
        let sales_by_day = join_rows(1_400_000.0, 365.0, &[(1_800.0, 365.0)]);
        assert!((sales_by_day - 283_888.9).abs() < 1.0, "{sales_by_day}");
        // 1.4M sales and 11.7M inventory rows over the same 18,000 items.
        let sales_by_item = join_rows(1_400_000.0, 11_700_000.0, &[(18_000.0, 18_000.0)]);
        assert!(sales_by_item > 900_000_000.0, "{sales_by_item}");
        // The most selective of several keys counts.
        assert_eq!(
            join_rows(100.0, 100.0, &[(10.0, 10.0), (100.0, 50.0)]),
            100.0
        );
        assert_eq!(join_rows(3.0, 4.0, &[]), 12.0);
    }
}
