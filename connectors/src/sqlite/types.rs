//! SQLite's dynamic types as Arrow types.
//!
//! A column's Arrow type comes from its declared type, by SQLite's affinity rules
//! (<https://sqlite.org/datatype3.html#determination_of_column_affinity>), after
//! three names SQLite itself has no type for: `BOOL…` is Boolean, `DATE` is Date32,
//! `DATETIME`/`TIMESTAMP…` a timestamp. NUMERIC affinity (`DECIMAL(10,2)`,
//! `NUMERIC`) reads as Float64, since SQLite stores those values as integers or
//! reals. A column without a declared type (and a view's computed column) holds any
//! value and reads as text. Each stored value is converted to its column's type
//! (an integer in a REAL column, ISO text or a Unix time in a DATE column, …); a
//! value that cannot be is an error naming the column.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use rusqlite::types::ValueRef;

/// The Arrow type of a column declared as `declared` (see the module doc).
pub fn arrow_type(declared: &str) -> DataType {
    let t = declared.trim().to_ascii_uppercase();
    let has = |part: &str| t.contains(part);
    if t.is_empty() {
        DataType::Utf8
    } else if has("BOOL") {
        DataType::Boolean
    } else if t == "DATE" {
        DataType::Date32
    } else if has("DATETIME") || has("TIMESTAMP") {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    } else if has("INT") {
        DataType::Int64
    } else if has("CHAR") || has("CLOB") || has("TEXT") {
        DataType::Utf8
    } else if has("BLOB") {
        DataType::Binary
    } else {
        // REAL affinity, and NUMERIC affinity, whose values are integers or reals.
        DataType::Float64
    }
}

/// The type a column is declared with when a write creates the table.
pub fn declared_type(t: &DataType) -> &'static str {
    match Wire::for_type(t) {
        Wire::Bool => "BOOLEAN",
        Wire::Int => "INTEGER",
        Wire::Float => "REAL",
        Wire::Date => "DATE",
        Wire::Timestamp => "TIMESTAMP",
        Wire::Blob => "BLOB",
        Wire::Text => "TEXT",
    }
}

/// What values are decoded into for a column of Arrow type `t` (then cast to `t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Bool,
    Int,
    Float,
    Text,
    Blob,
    Date,
    Timestamp,
}

impl Wire {
    pub fn for_type(t: &DataType) -> Self {
        match t {
            DataType::Boolean => Wire::Bool,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Wire::Int,
            DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..) => Wire::Float,
            DataType::Date32 | DataType::Date64 => Wire::Date,
            DataType::Timestamp(..) => Wire::Timestamp,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Wire::Blob,
            _ => Wire::Text,
        }
    }

    pub fn arrow_type(self) -> DataType {
        match self {
            Wire::Bool => DataType::Boolean,
            Wire::Int => DataType::Int64,
            Wire::Float => DataType::Float64,
            Wire::Text => DataType::Utf8,
            Wire::Blob => DataType::Binary,
            Wire::Date => DataType::Date32,
            Wire::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }

    pub fn builder(self, capacity: usize) -> Box<dyn ArrayBuilder> {
        match self {
            Wire::Bool => Box::new(BooleanBuilder::with_capacity(capacity)),
            Wire::Int => Box::new(Int64Builder::with_capacity(capacity)),
            Wire::Float => Box::new(Float64Builder::with_capacity(capacity)),
            Wire::Text => Box::new(StringBuilder::with_capacity(capacity, capacity * 16)),
            Wire::Blob => Box::new(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Wire::Date => Box::new(Date32Builder::with_capacity(capacity)),
            Wire::Timestamp => Box::new(TimestampMicrosecondBuilder::with_capacity(capacity)),
        }
    }
}

/// Days between the Julian day epoch and 1970-01-01.
const UNIX_JULIAN_DAY: f64 = 2_440_587.5;

/// Appends `value` to `builder` (made by `wire.builder`); the error says what the value was.
pub fn append(
    builder: &mut dyn ArrayBuilder,
    wire: Wire,
    value: ValueRef<'_>,
) -> Result<(), String> {
    fn get<T: 'static>(b: &mut dyn ArrayBuilder) -> Result<&mut T, String> {
        b.as_any_mut()
            .downcast_mut::<T>()
            .ok_or_else(|| "internal: builder of another type".to_string())
    }
    let unfit = |what: &str| Err(format!("{what} is not a {wire:?} value"));
    match (wire, value) {
        (Wire::Bool, ValueRef::Null) => get::<BooleanBuilder>(builder)?.append_null(),
        (Wire::Int, ValueRef::Null) => get::<Int64Builder>(builder)?.append_null(),
        (Wire::Float, ValueRef::Null) => get::<Float64Builder>(builder)?.append_null(),
        (Wire::Text, ValueRef::Null) => get::<StringBuilder>(builder)?.append_null(),
        (Wire::Blob, ValueRef::Null) => get::<BinaryBuilder>(builder)?.append_null(),
        (Wire::Date, ValueRef::Null) => get::<Date32Builder>(builder)?.append_null(),
        (Wire::Timestamp, ValueRef::Null) => {
            get::<TimestampMicrosecondBuilder>(builder)?.append_null()
        }
        (Wire::Bool, v) => {
            let b = match v {
                ValueRef::Integer(i) => i != 0,
                ValueRef::Real(f) => f != 0.0,
                ValueRef::Text(t) => match text(t)?.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "t" | "yes" => true,
                    "0" | "false" | "f" | "no" => false,
                    other => return unfit(&format!("text '{other}'")),
                },
                _ => return unfit("a blob"),
            };
            get::<BooleanBuilder>(builder)?.append_value(b)
        }
        (Wire::Int, v) => {
            let i = match v {
                ValueRef::Integer(i) => i,
                ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => f as i64,
                ValueRef::Text(t) => match text(t)?.trim().parse::<i64>() {
                    Ok(i) => i,
                    Err(_) => return unfit(&format!("text '{}'", text(t)?)),
                },
                ValueRef::Real(f) => return unfit(&format!("the real {f}")),
                _ => return unfit("a blob"),
            };
            get::<Int64Builder>(builder)?.append_value(i)
        }
        (Wire::Float, v) => {
            let f = match v {
                ValueRef::Integer(i) => i as f64,
                ValueRef::Real(f) => f,
                ValueRef::Text(t) => match text(t)?.trim().parse::<f64>() {
                    Ok(f) => f,
                    Err(_) => return unfit(&format!("text '{}'", text(t)?)),
                },
                _ => return unfit("a blob"),
            };
            get::<Float64Builder>(builder)?.append_value(f)
        }
        (Wire::Text, v) => {
            let b = get::<StringBuilder>(builder)?;
            match v {
                ValueRef::Integer(i) => b.append_value(i.to_string()),
                ValueRef::Real(f) => b.append_value(f.to_string()),
                ValueRef::Text(t) => b.append_value(text(t)?),
                ValueRef::Blob(bytes) => match std::str::from_utf8(bytes) {
                    Ok(s) => b.append_value(s),
                    Err(_) => return unfit("a blob that is not UTF-8"),
                },
                ValueRef::Null => b.append_null(),
            }
        }
        (Wire::Blob, v) => {
            let b = get::<BinaryBuilder>(builder)?;
            match v {
                ValueRef::Blob(bytes) | ValueRef::Text(bytes) => b.append_value(bytes),
                ValueRef::Integer(i) => b.append_value(i.to_string()),
                ValueRef::Real(f) => b.append_value(f.to_string()),
                ValueRef::Null => b.append_null(),
            }
        }
        (Wire::Date, v) => {
            let micros = timestamp_micros(v).map_err(|what| format!("{what} is not a date"))?;
            let days = micros.div_euclid(86_400_000_000);
            let days = i32::try_from(days).map_err(|_| "a date out of range".to_string())?;
            get::<Date32Builder>(builder)?.append_value(days)
        }
        (Wire::Timestamp, v) => {
            let micros =
                timestamp_micros(v).map_err(|what| format!("{what} is not a timestamp"))?;
            get::<TimestampMicrosecondBuilder>(builder)?.append_value(micros)
        }
    }
    Ok(())
}

fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "text that is not UTF-8".to_string())
}

/// Microseconds since 1970 of a date or time as SQLite's date functions take it:
/// ISO-8601 text, a Unix time in seconds (integer) or a Julian day number (real).
fn timestamp_micros(value: ValueRef<'_>) -> Result<i64, String> {
    match value {
        ValueRef::Integer(secs) => secs
            .checked_mul(1_000_000)
            .ok_or_else(|| format!("the integer {secs}")),
        ValueRef::Real(day) => Ok(((day - UNIX_JULIAN_DAY) * 86_400_000_000.0).round() as i64),
        ValueRef::Text(t) => {
            let s = text(t)?.trim();
            parse_time(s).ok_or_else(|| format!("text '{s}'"))
        }
        ValueRef::Blob(_) => Err("a blob".into()),
        ValueRef::Null => Err("NULL".into()),
    }
}

fn parse_time(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    let bare = s.trim_end_matches('Z');
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(bare, format) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(bare, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// Finishes one column of a batch.
pub fn finish(builder: &mut Box<dyn ArrayBuilder>) -> ArrayRef {
    Arc::clone(&builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn declared_types_follow_the_affinity_rules() {
        for (declared, t) in [
            ("INTEGER", DataType::Int64),
            ("int8", DataType::Int64),
            ("BIGINT UNSIGNED", DataType::Int64),
            ("VARCHAR(20)", DataType::Utf8),
            ("NVARCHAR", DataType::Utf8),
            ("CLOB", DataType::Utf8),
            ("BLOB", DataType::Binary),
            ("REAL", DataType::Float64),
            ("DOUBLE PRECISION", DataType::Float64),
            ("DECIMAL(10,2)", DataType::Float64),
            ("NUMERIC", DataType::Float64),
            ("BOOLEAN", DataType::Boolean),
            ("DATE", DataType::Date32),
            ("DATETIME", DataType::Timestamp(TimeUnit::Microsecond, None)),
            (
                "TIMESTAMP",
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            ("", DataType::Utf8),
            // "FLOATING POINT" has INT in it: SQLite reads it as INTEGER too.
            ("FLOATING POINT", DataType::Int64),
        ] {
            assert_eq!(arrow_type(declared), t, "{declared}");
        }
    }

    fn one(wire: Wire, value: ValueRef<'_>) -> Result<ArrayRef, String> {
        let mut b = wire.builder(1);
        append(b.as_mut(), wire, value)?;
        Ok(finish(&mut b))
    }

    #[test]
    fn dates_come_from_text_unix_times_and_julian_days() {
        use datafusion::arrow::array::{Array, Date32Array};
        for v in [
            ValueRef::Text(b"2024-02-29"),
            ValueRef::Text(b"2024-02-29 13:00:00"),
            ValueRef::Integer(1_709_164_800),
            ValueRef::Real(2_460_369.5),
        ] {
            let a = one(Wire::Date, v).expect("a date");
            let d = a.as_any().downcast_ref::<Date32Array>().expect("date32");
            assert_eq!(d.value(0), 19782, "{v:?}");
        }
        let err = one(Wire::Date, ValueRef::Text(b"soon")).expect_err("not a date");
        assert!(err.contains("'soon'"), "{err}");
    }

    #[test]
    fn values_of_another_storage_class_convert_or_are_named() {
        assert!(one(Wire::Int, ValueRef::Real(3.0)).is_ok());
        assert!(one(Wire::Int, ValueRef::Text(b" 42 ")).is_ok());
        let err = one(Wire::Int, ValueRef::Text(b"abc")).expect_err("not an integer");
        assert!(err.contains("'abc'"), "{err}");
        assert!(one(Wire::Int, ValueRef::Real(2.5)).is_err());
        assert!(one(Wire::Bool, ValueRef::Text(b"true")).is_ok());
        assert!(one(Wire::Text, ValueRef::Integer(7)).is_ok());
    }

    proptest! {
        #[test]
        fn timestamps_written_as_text_read_back(micros in -2_000_000_000_000_000i64..4_000_000_000_000_000i64) {
            let t = DateTime::from_timestamp_micros(micros).expect("in range").naive_utc();
            let text = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
            prop_assert_eq!(parse_time(&text), Some(micros));
        }

        #[test]
        fn integers_and_reals_read_as_floats(i in any::<i64>(), f in any::<f64>()) {
            prop_assert!(one(Wire::Float, ValueRef::Integer(i)).is_ok());
            prop_assert!(one(Wire::Float, ValueRef::Real(f)).is_ok());
        }
    }
}
