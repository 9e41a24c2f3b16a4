//! File pruning for Iceberg scans: DataFusion's `PruningPredicate` over what the
//! manifests say about each file.
//!
//! A file's bounds for a column come from two places, and the tighter wins: its
//! column statistics (lower/upper bounds, null counts), and its partition value
//! turned back into a range of the source column (a `day` partition of 19700 means
//! the timestamps of that day; `truncate[10]` of 40 means 40..=49). Bucket and
//! identity partitions also answer `col = x` / `col IN (...)` exactly: a file in
//! bucket 3 cannot hold a value that hashes to bucket 1.

use std::collections::HashSet;
use std::io::Cursor;

use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, ScalarValue};

use super::manifests::{DataFile, PartValue};
use super::metadata::{IcebergSchema, IcebergType, PartitionSpec, TableMetadata};

/// How a partition field derives from its source column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    Identity,
    Year,
    Month,
    Day,
    Hour,
    Bucket(u32),
    Truncate(i64),
    Void,
    Unknown,
}

impl Transform {
    pub fn parse(text: &str) -> Self {
        let inner = |p: &str| {
            text.strip_prefix(p)
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.trim().parse::<i64>().ok())
        };
        match text {
            "identity" => Self::Identity,
            "year" => Self::Year,
            "month" => Self::Month,
            "day" => Self::Day,
            "hour" => Self::Hour,
            "void" => Self::Void,
            _ => match (inner("bucket["), inner("truncate[")) {
                (Some(n), _) if n > 0 => u32::try_from(n).map_or(Self::Unknown, Self::Bucket),
                (_, Some(w)) if w > 0 => Self::Truncate(w),
                _ => Self::Unknown,
            },
        }
    }
}

/// What the manifests say about a set of files, for the current schema.
pub struct FileStatistics<'a> {
    pub files: &'a [&'a DataFile],
    pub schema: &'a IcebergSchema,
    pub arrow: &'a Schema,
    pub metadata: &'a TableMetadata,
}

impl FileStatistics<'_> {
    fn field(&self, column: &Column) -> Option<(i32, &IcebergType, &DataType)> {
        let f = self.schema.fields.iter().find(|f| f.name == column.name)?;
        let arrow = self.arrow.field_with_name(&column.name).ok()?;
        Some((f.id, &f.ty, arrow.data_type()))
    }

    /// The partition fields of `file`'s spec that come from field `id`, with values.
    fn partitions<'f>(&'f self, file: &'f DataFile, id: i32) -> Vec<(Transform, &'f PartValue)> {
        let Some(spec) = self.metadata.spec(file.spec_id) else {
            return vec![];
        };
        spec_values(spec, file)
            .filter(|(source, _, _)| *source == id)
            .map(|(_, t, v)| (t, v))
            .collect()
    }

    fn bound(&self, column: &Column, lower: bool) -> Option<ArrayRef> {
        let (id, ty, arrow) = self.field(column)?;
        let IcebergType::Primitive(ty) = ty else {
            return None;
        };
        let values = self.files.iter().map(|file| {
            let stats = if lower { &file.lower } else { &file.upper };
            let from_stats = stats.get(&id).and_then(|b| decode(ty, b, arrow));
            let from_partition = self
                .partitions(file, id)
                .into_iter()
                .filter_map(|(t, v)| partition_range(t, v, arrow))
                .filter_map(|(lo, hi)| if lower { lo } else { hi })
                .collect::<Vec<_>>();
            let mut best = from_stats;
            for candidate in from_partition {
                best = Some(match best {
                    None => candidate,
                    Some(b) => {
                        let tighter = if lower { candidate > b } else { candidate < b };
                        if tighter {
                            candidate
                        } else {
                            b
                        }
                    }
                });
            }
            best.unwrap_or(ScalarValue::try_from(arrow).unwrap_or(ScalarValue::Null))
        });
        ScalarValue::iter_to_array(values).ok()
    }
}

/// `(source field id, transform, value)` of each partition field of `file`.
fn spec_values<'a>(
    spec: &'a PartitionSpec,
    file: &'a DataFile,
) -> impl Iterator<Item = (i32, Transform, &'a PartValue)> {
    spec.fields
        .iter()
        .zip(file.partition.iter())
        .map(|(f, v)| (f.source_id, Transform::parse(&f.transform), v))
}

impl PruningStatistics for FileStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, true)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, false)
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let (id, _, _) = self.field(column)?;
        let counts: UInt64Array = self
            .files
            .iter()
            .map(|f| f.null_counts.get(&id).map(|n| (*n).max(0) as u64))
            .collect();
        Some(std::sync::Arc::new(counts))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let counts: UInt64Array = self
            .files
            .iter()
            .map(|f| Some(f.record_count.max(0) as u64))
            .collect();
        Some(std::sync::Arc::new(counts))
    }

    #[allow(clippy::mutable_key_type)]
    fn contained(&self, column: &Column, values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        let (id, ty, arrow) = self.field(column)?;
        let IcebergType::Primitive(ty) = ty else {
            return None;
        };
        let mut any = false;
        let answers: BooleanArray = self
            .files
            .iter()
            .map(|file| {
                for (t, v) in self.partitions(file, id) {
                    match (t, v) {
                        (Transform::Identity, PartValue::Int(_) | PartValue::Str(_)) => {
                            let Some((Some(lo), _)) = partition_range(t, v, arrow) else {
                                continue;
                            };
                            any = true;
                            return Some(values.contains(&lo));
                        }
                        (Transform::Bucket(n), PartValue::Int(b)) => {
                            let hits = values.iter().any(|value| {
                                bucket(ty, value, n).is_none_or(|h| i64::from(h) == *b)
                            });
                            if !hits {
                                any = true;
                                return Some(false);
                            }
                        }
                        _ => {}
                    }
                }
                None
            })
            .collect();
        any.then_some(answers)
    }
}

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// The range `[lo, hi]` of the source column that a partition value covers.
fn partition_range(
    t: Transform,
    v: &PartValue,
    arrow: &DataType,
) -> Option<(Option<ScalarValue>, Option<ScalarValue>)> {
    use chrono::{Datelike, NaiveDate};
    let days_of = |d: NaiveDate| -> Option<i64> {
        Some(
            d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?)
                .num_days(),
        )
    };
    // A range of days (inclusive) as the column's type.
    let days = |lo: i64, hi: i64| -> Option<(Option<ScalarValue>, Option<ScalarValue>)> {
        Some((
            Some(at_micros(arrow, lo, lo.checked_mul(MICROS_PER_DAY)?)?),
            Some(at_micros(
                arrow,
                hi,
                hi.checked_add(1)?.checked_mul(MICROS_PER_DAY)? - 1,
            )?),
        ))
    };
    let month_start = |m: i64| {
        let (y, m) = (1970 + m.div_euclid(12), m.rem_euclid(12) + 1);
        NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, u32::try_from(m).ok()?, 1)
    };
    match (t, v) {
        (Transform::Identity, PartValue::Int(i)) => {
            let s = integer(arrow, *i)?;
            Some((Some(s.clone()), Some(s)))
        }
        (Transform::Identity, PartValue::Str(s)) => {
            let s = string(arrow, s.clone())?;
            Some((Some(s.clone()), Some(s)))
        }
        (Transform::Day, PartValue::Int(d)) => days(*d, *d),
        (Transform::Hour, PartValue::Int(h)) => {
            let lo = h.checked_mul(MICROS_PER_HOUR)?;
            let hi = lo.checked_add(MICROS_PER_HOUR - 1)?;
            if matches!(arrow, DataType::Date32) {
                return None;
            }
            Some((
                Some(at_micros(arrow, 0, lo)?),
                Some(at_micros(arrow, 0, hi)?),
            ))
        }
        (Transform::Month, PartValue::Int(m)) => {
            let (start, next) = (month_start(*m)?, month_start(m.checked_add(1)?)?);
            days(days_of(start)?, days_of(next)? - 1)
        }
        (Transform::Year, PartValue::Int(y)) => {
            let start = NaiveDate::from_ymd_opt(1970 + i32::try_from(*y).ok()?, 1, 1)?;
            let next = NaiveDate::from_ymd_opt(start.year() + 1, 1, 1)?;
            days(days_of(start)?, days_of(next)? - 1)
        }
        (Transform::Truncate(w), PartValue::Int(i)) => Some((
            Some(integer(arrow, *i)?),
            Some(integer(arrow, i.checked_add(w - 1)?)?),
        )),
        // A string truncated to a prefix: every value is at least the prefix.
        (Transform::Truncate(_), PartValue::Str(s)) => {
            Some((Some(string(arrow, s.clone())?), None))
        }
        _ => None,
    }
}

/// A date (in days) or a timestamp (in µs) as a scalar of `arrow`.
fn at_micros(arrow: &DataType, days: i64, micros: i64) -> Option<ScalarValue> {
    Some(match arrow {
        DataType::Date32 => ScalarValue::Date32(Some(i32::try_from(days).ok()?)),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            ScalarValue::TimestampMicrosecond(Some(micros), tz.clone())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            ScalarValue::TimestampNanosecond(Some(micros.checked_mul(1000)?), tz.clone())
        }
        _ => return None,
    })
}

fn integer(arrow: &DataType, i: i64) -> Option<ScalarValue> {
    Some(match arrow {
        DataType::Int32 => ScalarValue::Int32(Some(i32::try_from(i).ok()?)),
        DataType::Int64 => ScalarValue::Int64(Some(i)),
        DataType::Date32 => ScalarValue::Date32(Some(i32::try_from(i).ok()?)),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            ScalarValue::TimestampMicrosecond(Some(i), tz.clone())
        }
        _ => return None,
    })
}

fn string(arrow: &DataType, s: String) -> Option<ScalarValue> {
    Some(match arrow {
        DataType::Utf8 => ScalarValue::Utf8(Some(s)),
        DataType::Utf8View => ScalarValue::Utf8View(Some(s)),
        DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(s)),
        _ => return None,
    })
}

/// A bound in Iceberg's single-value binary form, as a scalar of `arrow`.
pub fn decode(ty: &str, bytes: &[u8], arrow: &DataType) -> Option<ScalarValue> {
    let le4 = || bytes.get(..4).and_then(|b| b.try_into().ok());
    let le8 = || bytes.get(..8).and_then(|b| b.try_into().ok());
    Some(match (ty.trim(), arrow) {
        ("boolean", DataType::Boolean) => ScalarValue::Boolean(Some(*bytes.first()? != 0)),
        ("int", DataType::Int32) => ScalarValue::Int32(Some(i32::from_le_bytes(le4()?))),
        ("date", DataType::Date32) => ScalarValue::Date32(Some(i32::from_le_bytes(le4()?))),
        ("long", DataType::Int64) => ScalarValue::Int64(Some(i64::from_le_bytes(le8()?))),
        ("float", DataType::Float32) => {
            let f = f32::from_le_bytes(le4()?);
            (!f.is_nan()).then_some(ScalarValue::Float32(Some(f)))?
        }
        ("double", DataType::Float64) => {
            let f = f64::from_le_bytes(le8()?);
            (!f.is_nan()).then_some(ScalarValue::Float64(Some(f)))?
        }
        ("time", DataType::Time64(TimeUnit::Microsecond)) => {
            ScalarValue::Time64Microsecond(Some(i64::from_le_bytes(le8()?)))
        }
        ("timestamp" | "timestamptz", DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
            ScalarValue::TimestampMicrosecond(Some(i64::from_le_bytes(le8()?)), tz.clone())
        }
        ("timestamp_ns" | "timestamptz_ns", DataType::Timestamp(TimeUnit::Nanosecond, tz)) => {
            ScalarValue::TimestampNanosecond(Some(i64::from_le_bytes(le8()?)), tz.clone())
        }
        ("string", _) => string(arrow, String::from_utf8(bytes.to_vec()).ok()?)?,
        (t, DataType::Decimal128(p, s)) if t.starts_with("decimal") => {
            if bytes.is_empty() || bytes.len() > 16 {
                return None;
            }
            // Big-endian two's complement, sign-extended to 16 bytes.
            let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
            let mut wide = [fill; 16];
            wide[16 - bytes.len()..].copy_from_slice(bytes);
            ScalarValue::Decimal128(Some(i128::from_be_bytes(wide)), *p, *s)
        }
        _ => return None,
    })
}

/// Iceberg's bucket of a value (`None` when the type is not one we hash).
pub fn bucket(ty: &str, value: &ScalarValue, n: u32) -> Option<u32> {
    let long = |v: i64| v.to_le_bytes().to_vec();
    let bytes = match (ty.trim(), value) {
        (_, ScalarValue::Int32(Some(v)) | ScalarValue::Date32(Some(v))) => long(i64::from(*v)),
        (_, ScalarValue::Int64(Some(v))) => long(*v),
        ("timestamp" | "timestamptz", ScalarValue::TimestampMicrosecond(Some(v), _)) => long(*v),
        (
            _,
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
        ) => s.as_bytes().to_vec(),
        (_, ScalarValue::Decimal128(Some(v), _, _)) => minimal_be(*v),
        _ => return None,
    };
    let hash = murmur3::murmur3_32(&mut Cursor::new(bytes), 0).ok()?;
    Some((hash & 0x7fff_ffff) % n)
}

/// The fewest big-endian two's-complement bytes that hold `v` (Java's BigInteger form).
fn minimal_be(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash of each value must match the Iceberg spec's appendix B examples.
    #[test]
    fn bucket_hashes_match_the_spec() {
        let hash = |ty: &str, v: ScalarValue| bucket(ty, &v, i32::MAX as u32 + 1);
        assert_eq!(hash("int", ScalarValue::Int32(Some(34))), Some(2017239379));
        assert_eq!(hash("long", ScalarValue::Int64(Some(34))), Some(2017239379));
        assert_eq!(
            hash("string", ScalarValue::Utf8(Some("iceberg".into()))),
            Some(1210000089)
        );
        // 2017-11-16 is day 17486; the spec lists -653330422, masked here.
        assert_eq!(
            hash("date", ScalarValue::Date32(Some(17486))),
            Some((-653330422i32 as u32) & 0x7fff_ffff)
        );
        // 14.20 as decimal(9, 2): unscaled 1420; the spec lists -500754589.
        assert_eq!(
            hash("decimal(9, 2)", ScalarValue::Decimal128(Some(1420), 9, 2)),
            Some((-500754589i32 as u32) & 0x7fff_ffff)
        );
        assert_eq!(minimal_be(1420), vec![0x05, 0x8c]);
        assert_eq!(minimal_be(-1), vec![0xff]);
        assert_eq!(minimal_be(128), vec![0x00, 0x80]);
    }

    #[test]
    fn transforms_and_partition_ranges() {
        assert_eq!(Transform::parse("bucket[16]"), Transform::Bucket(16));
        assert_eq!(Transform::parse("truncate[10]"), Transform::Truncate(10));
        assert_eq!(Transform::parse("day"), Transform::Day);
        assert_eq!(Transform::parse("bucket[x]"), Transform::Unknown);
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let (lo, hi) = partition_range(Transform::Day, &PartValue::Int(1), &ts).expect("day");
        assert_eq!(
            lo,
            Some(ScalarValue::TimestampMicrosecond(
                Some(MICROS_PER_DAY),
                None
            ))
        );
        assert_eq!(
            hi,
            Some(ScalarValue::TimestampMicrosecond(
                Some(2 * MICROS_PER_DAY - 1),
                None
            ))
        );
        // Month 1 (February 1970) on a date column: days 31..=58.
        let (lo, hi) =
            partition_range(Transform::Month, &PartValue::Int(1), &DataType::Date32).expect("m");
        assert_eq!(
            (lo, hi),
            (
                Some(ScalarValue::Date32(Some(31))),
                Some(ScalarValue::Date32(Some(58)))
            )
        );
        let (lo, hi) = partition_range(
            Transform::Truncate(10),
            &PartValue::Int(40),
            &DataType::Int64,
        )
        .expect("truncate");
        assert_eq!(
            (lo, hi),
            (
                Some(ScalarValue::Int64(Some(40))),
                Some(ScalarValue::Int64(Some(49)))
            )
        );
        assert_eq!(
            partition_range(Transform::Bucket(4), &PartValue::Int(1), &DataType::Int64),
            None
        );
    }

    #[test]
    fn bounds_decode_by_type() {
        assert_eq!(
            decode("long", &7i64.to_le_bytes(), &DataType::Int64),
            Some(ScalarValue::Int64(Some(7)))
        );
        assert_eq!(
            decode("string", b"abc", &DataType::Utf8View),
            Some(ScalarValue::Utf8View(Some("abc".into())))
        );
        assert_eq!(
            decode("decimal(9, 2)", &[0xfa, 0x74], &DataType::Decimal128(9, 2)),
            Some(ScalarValue::Decimal128(Some(-1420), 9, 2))
        );
        assert_eq!(decode("long", &[1, 2], &DataType::Int64), None);
        assert_eq!(
            decode("double", &f64::NAN.to_le_bytes(), &DataType::Float64),
            None
        );
    }
}
