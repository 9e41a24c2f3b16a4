//! MySQL/MariaDB column types as Arrow types, and decoding of binary-protocol
//! values into Arrow builders.

use datafusion::arrow::array::{
    ArrayBuilder, BinaryBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int64Builder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
    UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::{Column, Value};

/// The binary-collation id: a string column with it holds bytes, not text.
const BINARY_CHARSET: u16 = 63;

/// How one result column is decoded (its natural Arrow type; the executor then
/// casts to the type the plan expects).
#[derive(Debug, Clone, PartialEq)]
pub enum MyKind {
    Int,
    UInt,
    Float,
    Double,
    /// Decimals arrive as text; read at the column's scale.
    Decimal {
        scale: i8,
    },
    Text,
    Binary,
    Date,
    DateTime,
    Time,
}

impl MyKind {
    pub fn of(column: &Column) -> MyKind {
        use ColumnType::*;
        let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
        match column.column_type() {
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_YEAR => {
                if unsigned {
                    MyKind::UInt
                } else {
                    MyKind::Int
                }
            }
            MYSQL_TYPE_BIT => MyKind::Binary,
            MYSQL_TYPE_FLOAT => MyKind::Float,
            MYSQL_TYPE_DOUBLE => MyKind::Double,
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => MyKind::Decimal {
                scale: column.decimals().min(38) as i8,
            },
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => MyKind::Date,
            MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_TIMESTAMP2 => MyKind::DateTime,
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => MyKind::Time,
            MYSQL_TYPE_GEOMETRY => MyKind::Binary,
            _ if column.character_set() == BINARY_CHARSET
                && column.column_type() != MYSQL_TYPE_JSON =>
            {
                MyKind::Binary
            }
            _ => MyKind::Text,
        }
    }

    pub fn arrow_type(&self) -> DataType {
        match self {
            MyKind::Int => DataType::Int64,
            MyKind::UInt => DataType::UInt64,
            MyKind::Float => DataType::Float32,
            MyKind::Double => DataType::Float64,
            MyKind::Decimal { scale } => DataType::Decimal128(38, *scale),
            MyKind::Text => DataType::Utf8,
            MyKind::Binary => DataType::Binary,
            MyKind::Date => DataType::Date32,
            MyKind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            MyKind::Time => DataType::Time64(TimeUnit::Microsecond),
        }
    }

    pub fn builder(&self, capacity: usize) -> Box<dyn ArrayBuilder> {
        match self {
            MyKind::Decimal { scale } => Box::new(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(38, *scale)
                    .unwrap_or_else(|_| Decimal128Builder::with_capacity(capacity)),
            ),
            other => datafusion::arrow::array::make_builder(&other.arrow_type(), capacity),
        }
    }
}

fn downcast<T: 'static>(b: &mut dyn ArrayBuilder) -> Result<&mut T, String> {
    b.as_any_mut()
        .downcast_mut::<T>()
        .ok_or_else(|| "internal: wrong builder".to_string())
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::Bytes(b) => String::from_utf8(b.clone()).map_err(|e| format!("invalid UTF-8: {e}")),
        Value::Int(i) => Ok(i.to_string()),
        Value::UInt(u) => Ok(u.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Double(f) => Ok(f.to_string()),
        other => Ok(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// Parses a decimal string ("-12.5") into an integer at `scale`.
pub fn parse_decimal(s: &str, scale: i8) -> Result<i128, String> {
    let bad = || format!("invalid decimal '{s}'");
    let (neg, digits) = match s.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.trim()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let scale = scale.max(0) as usize;
    let frac: String = frac
        .chars()
        .chain(std::iter::repeat('0'))
        .take(scale)
        .collect();
    let joined = format!("{int}{frac}");
    let v: i128 = if joined.is_empty() {
        0
    } else {
        joined.parse().map_err(|_| bad())?
    };
    Ok(if neg { -v } else { v })
}

/// Appends one value of `kind` (NULL included).
pub fn append(builder: &mut dyn ArrayBuilder, kind: &MyKind, value: &Value) -> Result<(), String> {
    macro_rules! put {
        ($b:ty, $v:expr) => {{
            let b = downcast::<$b>(builder)?;
            match value {
                Value::NULL => b.append_null(),
                v => b.append_value($v(v)?),
            }
        }};
    }
    match kind {
        MyKind::Int => put!(Int64Builder, |v: &Value| match v {
            Value::Int(i) => Ok(*i),
            Value::UInt(u) => i64::try_from(*u).map_err(|e| e.to_string()),
            other => text(other)?.parse::<i64>().map_err(|e| e.to_string()),
        }),
        MyKind::UInt => put!(UInt64Builder, |v: &Value| match v {
            Value::UInt(u) => Ok(*u),
            Value::Int(i) => u64::try_from(*i).map_err(|e| e.to_string()),
            other => text(other)?.parse::<u64>().map_err(|e| e.to_string()),
        }),
        MyKind::Float => put!(Float32Builder, |v: &Value| match v {
            Value::Float(f) => Ok(*f),
            Value::Double(f) => Ok(*f as f32),
            other => text(other)?.parse::<f32>().map_err(|e| e.to_string()),
        }),
        MyKind::Double => put!(Float64Builder, |v: &Value| match v {
            Value::Double(f) => Ok(*f),
            Value::Float(f) => Ok(*f as f64),
            other => text(other)?.parse::<f64>().map_err(|e| e.to_string()),
        }),
        MyKind::Decimal { scale } => put!(Decimal128Builder, |v: &Value| parse_decimal(
            &text(v)?,
            *scale
        )),
        MyKind::Text => put!(StringBuilder, text),
        MyKind::Binary => put!(BinaryBuilder, |v: &Value| match v {
            Value::Bytes(b) => Ok(b.clone()),
            other => Ok::<_, String>(text(other)?.into_bytes()),
        }),
        MyKind::Date => put!(Date32Builder, |v: &Value| match v {
            Value::Date(y, m, d, ..) => Ok(days_from_civil(*y as i64, *m as i64, *d as i64) as i32),
            other => Err(format!("unexpected date value {other:?}")),
        }),
        MyKind::DateTime => put!(TimestampMicrosecondBuilder, |v: &Value| match v {
            Value::Date(y, mo, d, h, mi, s, us) =>
                Ok((days_from_civil(*y as i64, *mo as i64, *d as i64) * 86_400
                    + *h as i64 * 3600
                    + *mi as i64 * 60
                    + *s as i64)
                    * 1_000_000
                    + *us as i64),
            other => Err(format!("unexpected datetime value {other:?}")),
        }),
        MyKind::Time => put!(Time64MicrosecondBuilder, |v: &Value| match v {
            Value::Time(false, 0, h, m, s, us) =>
                Ok((*h as i64 * 3600 + *m as i64 * 60 + *s as i64) * 1_000_000 + *us as i64),
            other => Err(format!(
                "TIME value {other:?} is outside a day (only 00:00:00 to 23:59:59 is supported)"
            )),
        }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("-12.5", 2), Ok(-1250));
        assert_eq!(parse_decimal("0.005", 3), Ok(5));
        assert_eq!(parse_decimal("42", 2), Ok(4200));
        assert!(parse_decimal("1.2.3", 2).is_err());
        assert!(parse_decimal("", 2).is_err());
    }

    #[test]
    fn values_decode_with_nulls() {
        let mut b = MyKind::Int.builder(2);
        append(b.as_mut(), &MyKind::Int, &Value::Int(-3)).expect("int");
        append(b.as_mut(), &MyKind::Int, &Value::NULL).expect("null");
        let a = b.finish();
        assert_eq!((a.len(), a.null_count()), (2, 1));
        let mut b = MyKind::Time.builder(1);
        assert!(append(b.as_mut(), &MyKind::Time, &Value::Time(true, 0, 1, 0, 0, 0)).is_err());
    }
}
