//! Table-level column statistics of a lakehouse table, from its files' own.

/// Column statistics of a whole table from per-file ones (a Delta log's or Iceberg
/// manifests' bounds and null counts, as the pruning statistics they already are):
/// each column's least minimum, greatest maximum and summed null count, where every
/// file knows them. DataFusion estimates joins from them, as it does for Parquet
/// tables from the files' footers; without them it orders joins differently.
pub(crate) fn column_statistics(
    files: &dyn datafusion::physical_optimizer::pruning::PruningStatistics,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Vec<datafusion::common::ColumnStatistics> {
    use datafusion::arrow::array::Array as _;
    use datafusion::common::stats::Precision;
    use datafusion::common::{Column, ColumnStatistics, ScalarValue};
    let n = files.num_containers();
    let bound = |values: Option<datafusion::arrow::array::ArrayRef>,
                 ty: &datafusion::arrow::datatypes::DataType,
                 keep: std::cmp::Ordering|
     -> Precision<ScalarValue> {
        let Some(values) = values.filter(|v| v.len() == n && n > 0) else {
            return Precision::Absent;
        };
        let mut best: Option<ScalarValue> = None;
        for i in 0..n {
            let Ok(v) = ScalarValue::try_from_array(&values, i).and_then(|v| v.cast_to(ty)) else {
                return Precision::Absent;
            };
            if v.is_null() {
                return Precision::Absent;
            }
            best = match best {
                None => Some(v),
                Some(b) => match b.partial_cmp(&v) {
                    None => return Precision::Absent,
                    Some(o) if o == keep || o == std::cmp::Ordering::Equal => Some(b),
                    Some(_) => Some(v),
                },
            };
        }
        best.map_or(Precision::Absent, Precision::Inexact)
    };
    schema
        .fields()
        .iter()
        .map(|f| {
            let column = Column::new_unqualified(f.name());
            let mut stats = ColumnStatistics::new_unknown();
            stats.min_value = bound(
                files.min_values(&column),
                f.data_type(),
                std::cmp::Ordering::Less,
            );
            stats.max_value = bound(
                files.max_values(&column),
                f.data_type(),
                std::cmp::Ordering::Greater,
            );
            if let Some(nulls) = files.null_counts(&column).filter(|a| a.len() == n) {
                let counts = datafusion::arrow::compute::cast(
                    &nulls,
                    &datafusion::arrow::datatypes::DataType::UInt64,
                );
                if let Ok(counts) = counts {
                    let counts = counts
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::UInt64Array>();
                    if let Some(c) = counts.filter(|c| c.null_count() == 0) {
                        let total: u64 = c.values().iter().sum();
                        stats.null_count =
                            Precision::Inexact(usize::try_from(total).unwrap_or(usize::MAX));
                    }
                }
            }
            stats
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two files' bounds: `a` known in both, `b` missing in one (so unknown).
    struct TwoFiles;

    impl datafusion::physical_optimizer::pruning::PruningStatistics for TwoFiles {
        fn min_values(
            &self,
            c: &datafusion::common::Column,
        ) -> Option<datafusion::arrow::array::ArrayRef> {
            use datafusion::arrow::array::Int64Array;
            Some(std::sync::Arc::new(match c.name() {
                "a" => Int64Array::from(vec![Some(5), Some(2)]),
                _ => Int64Array::from(vec![Some(1), None]),
            }))
        }
        fn max_values(
            &self,
            c: &datafusion::common::Column,
        ) -> Option<datafusion::arrow::array::ArrayRef> {
            self.min_values(c)
                .map(|a| datafusion::arrow::compute::kernels::numeric::add(&a, &a))?
                .ok()
        }
        fn num_containers(&self) -> usize {
            2
        }
        fn null_counts(
            &self,
            _: &datafusion::common::Column,
        ) -> Option<datafusion::arrow::array::ArrayRef> {
            Some(std::sync::Arc::new(
                datafusion::arrow::array::UInt64Array::from(vec![1, 2]),
            ))
        }
        fn row_counts(&self) -> Option<datafusion::arrow::array::ArrayRef> {
            None
        }
        fn contained(
            &self,
            _: &datafusion::common::Column,
            _: &std::collections::HashSet<datafusion::common::ScalarValue>,
        ) -> Option<datafusion::arrow::array::BooleanArray> {
            None
        }
    }

    #[test]
    fn table_column_statistics_come_from_the_files_bounds() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::common::stats::Precision;
        use datafusion::common::ScalarValue;
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]);
        let stats = column_statistics(&TwoFiles, &schema);
        assert_eq!(
            stats[0].min_value,
            Precision::Inexact(ScalarValue::Int64(Some(2)))
        );
        assert_eq!(
            stats[0].max_value,
            Precision::Inexact(ScalarValue::Int64(Some(10)))
        );
        assert_eq!(stats[0].null_count, Precision::Inexact(3));
        assert_eq!(stats[1].min_value, Precision::Absent);
    }
}
