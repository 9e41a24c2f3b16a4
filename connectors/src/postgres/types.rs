//! PostgreSQL types as Arrow types, and decoding of their binary wire format
//! (as sent by `COPY ... TO STDOUT (FORMAT BINARY)`) into Arrow builders.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder,
    ListBuilder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, TimeUnit};
use tokio_postgres::types::{Kind, Type};

/// Days and microseconds between 1970-01-01 (Arrow) and 2000-01-01 (PostgreSQL).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// How one PostgreSQL column is read.
#[derive(Debug, Clone, PartialEq)]
pub enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(p, s)` with p <= 38.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// `numeric` without a precision (or one above 38): read as float64.
    NumericAny,
    /// text, varchar, name, json, enums: the binary form is the UTF-8 text.
    Text,
    /// char(n): text padded with spaces, which are dropped as PostgreSQL's own
    /// cast to text does (bpchar comparisons ignore them too).
    Bpchar,
    /// jsonb: a version byte, then the text.
    Jsonb,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Uuid,
    /// One-dimensional arrays of a supported element type.
    Array(Box<PgKind>),
}

impl PgKind {
    /// The kind of a column of type `ty` with modifier `typmod`; `None` when Quiver
    /// has no binary decoder for it (such columns are read as text).
    pub fn of(ty: &Type, typmod: i32) -> Option<PgKind> {
        Some(match *ty {
            Type::BOOL => PgKind::Bool,
            Type::INT2 => PgKind::Int2,
            Type::INT4 => PgKind::Int4,
            Type::INT8 => PgKind::Int8,
            Type::FLOAT4 => PgKind::Float4,
            Type::FLOAT8 => PgKind::Float8,
            Type::NUMERIC => numeric_kind(typmod),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::JSON => PgKind::Text,
            Type::BPCHAR => PgKind::Bpchar,
            Type::JSONB => PgKind::Jsonb,
            Type::BYTEA => PgKind::Bytea,
            Type::DATE => PgKind::Date,
            Type::TIME => PgKind::Time,
            Type::TIMESTAMP => PgKind::Timestamp,
            Type::TIMESTAMPTZ => PgKind::Timestamptz,
            Type::INTERVAL => PgKind::Interval,
            Type::UUID => PgKind::Uuid,
            _ => match ty.kind() {
                Kind::Enum(_) => PgKind::Text,
                // Element typmods are the column's (e.g. numeric(10,2)[]).
                Kind::Array(elem) => match PgKind::of(elem, typmod)? {
                    PgKind::Array(_) => return None,
                    k => PgKind::Array(Box::new(k)),
                },
                Kind::Domain(base) => PgKind::of(base, typmod)?,
                _ => return None,
            },
        })
    }

    pub fn arrow_type(&self) -> DataType {
        match self {
            PgKind::Bool => DataType::Boolean,
            PgKind::Int2 => DataType::Int16,
            PgKind::Int4 => DataType::Int32,
            PgKind::Int8 => DataType::Int64,
            PgKind::Float4 => DataType::Float32,
            PgKind::Float8 | PgKind::NumericAny => DataType::Float64,
            PgKind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            PgKind::Text | PgKind::Bpchar | PgKind::Jsonb | PgKind::Uuid => DataType::Utf8,
            PgKind::Bytea => DataType::Binary,
            PgKind::Date => DataType::Date32,
            PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
            PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgKind::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgKind::Interval => {
                DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano)
            }
            PgKind::Array(elem) => {
                DataType::List(Arc::new(Field::new("item", elem.arrow_type(), true)))
            }
        }
    }

    /// A builder for this kind's Arrow type.
    pub fn builder(&self, capacity: usize) -> Box<dyn ArrayBuilder> {
        match self {
            PgKind::Array(elem) => {
                Box::new(ListBuilder::with_capacity(elem.builder(capacity), capacity))
            }
            PgKind::Decimal { precision, scale } => Box::new(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*precision, *scale)
                    .unwrap_or_else(|_| Decimal128Builder::with_capacity(capacity)),
            ),
            PgKind::Timestamptz => {
                Box::new(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            other => datafusion::arrow::array::make_builder(&other.arrow_type(), capacity),
        }
    }
}

fn numeric_kind(typmod: i32) -> PgKind {
    if typmod < 4 {
        return PgKind::NumericAny;
    }
    let precision = ((typmod - 4) >> 16) & 0xffff;
    let scale = (typmod - 4) & 0xffff;
    if precision > 38 || scale > precision {
        return PgKind::NumericAny;
    }
    PgKind::Decimal {
        precision: precision as u8,
        scale: scale as i8,
    }
}

/// A decoding error: the message names what could not be read.
pub type DecodeResult<T> = Result<T, String>;

fn take<const N: usize>(raw: &[u8], what: &str) -> DecodeResult<[u8; N]> {
    raw.get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("truncated {what} value ({} bytes)", raw.len()))
}

fn downcast<'a, T: 'static>(b: &'a mut dyn ArrayBuilder, kind: &PgKind) -> DecodeResult<&'a mut T> {
    b.as_any_mut()
        .downcast_mut::<T>()
        .ok_or_else(|| format!("internal: wrong builder for {kind:?}"))
}

/// Appends one value (or NULL for `None`) of `kind` to `builder`.
pub fn append(
    builder: &mut dyn ArrayBuilder,
    kind: &PgKind,
    raw: Option<&[u8]>,
) -> DecodeResult<()> {
    macro_rules! put {
        ($b:ty, $conv:expr) => {{
            let b = downcast::<$b>(builder, kind)?;
            match raw {
                None => b.append_null(),
                Some(raw) => b.append_value($conv(raw)?),
            }
        }};
    }
    match kind {
        PgKind::Bool => put!(BooleanBuilder, |r: &[u8]| take::<1>(r, "bool")
            .map(|b| b[0] != 0)),
        PgKind::Int2 => put!(Int16Builder, |r: &[u8]| take::<2>(r, "int2")
            .map(i16::from_be_bytes)),
        PgKind::Int4 => put!(Int32Builder, |r: &[u8]| take::<4>(r, "int4")
            .map(i32::from_be_bytes)),
        PgKind::Int8 => put!(Int64Builder, |r: &[u8]| take::<8>(r, "int8")
            .map(i64::from_be_bytes)),
        PgKind::Float4 => put!(Float32Builder, |r: &[u8]| take::<4>(r, "float4")
            .map(f32::from_be_bytes)),
        PgKind::Float8 => put!(Float64Builder, |r: &[u8]| take::<8>(r, "float8")
            .map(f64::from_be_bytes)),
        PgKind::NumericAny => put!(Float64Builder, numeric_to_f64),
        PgKind::Decimal { scale, .. } => {
            let scale = *scale;
            put!(Decimal128Builder, |r: &[u8]| numeric_to_i128(r, scale))
        }
        PgKind::Text => put!(StringBuilder, utf8),
        PgKind::Bpchar => put!(StringBuilder, unpadded),
        PgKind::Jsonb => put!(StringBuilder, jsonb_text),
        PgKind::Uuid => put!(StringBuilder, |r: &[u8]| take::<16>(r, "uuid")
            .map(format_uuid)),
        PgKind::Bytea => put!(BinaryBuilder, bytes),
        PgKind::Date => put!(Date32Builder, |r: &[u8]| take::<4>(r, "date")
            .map(|b| { i32::from_be_bytes(b).saturating_add(PG_EPOCH_DAYS) })),
        PgKind::Time => put!(Time64MicrosecondBuilder, |r: &[u8]| take::<8>(r, "time")
            .map(i64::from_be_bytes)),
        PgKind::Timestamp | PgKind::Timestamptz => put!(
            TimestampMicrosecondBuilder,
            |r: &[u8]| take::<8>(r, "timestamp")
                .map(|b| i64::from_be_bytes(b).saturating_add(PG_EPOCH_MICROS))
        ),
        PgKind::Interval => put!(IntervalMonthDayNanoBuilder, |r: &[u8]| -> DecodeResult<
            IntervalMonthDayNano,
        > {
            let micros = i64::from_be_bytes(take::<8>(r, "interval")?);
            let days = i32::from_be_bytes(take::<4>(&r[8..], "interval")?);
            let months = i32::from_be_bytes(take::<4>(&r[12..], "interval")?);
            Ok(IntervalMonthDayNano::new(
                months,
                days,
                micros.saturating_mul(1000),
            ))
        }),
        PgKind::Array(elem) => {
            let b = downcast::<ListBuilder<Box<dyn ArrayBuilder>>>(builder, kind)?;
            match raw {
                None => b.append_null(),
                Some(raw) => {
                    append_array(b.values().as_mut(), elem, raw)?;
                    b.append(true);
                }
            }
        }
    }
    Ok(())
}

/// Binary array: ndim, has-nulls flag, element oid, then (size, lower bound) per
/// dimension, then each element as (length, bytes).
fn append_array(values: &mut dyn ArrayBuilder, elem: &PgKind, raw: &[u8]) -> DecodeResult<()> {
    let ndim = i32::from_be_bytes(take::<4>(raw, "array")?);
    if ndim == 0 {
        return Ok(());
    }
    if ndim != 1 {
        return Err(format!(
            "{ndim}-dimensional arrays are not supported (only one dimension)"
        ));
    }
    let count = i32::from_be_bytes(take::<4>(raw.get(12..).unwrap_or_default(), "array")?);
    let mut pos = 20usize;
    for _ in 0..count.max(0) {
        let len = i32::from_be_bytes(take::<4>(
            raw.get(pos..).unwrap_or_default(),
            "array element",
        )?);
        pos += 4;
        if len < 0 {
            append(values, elem, None)?;
        } else {
            let end = pos + len as usize;
            let value = raw.get(pos..end).ok_or("truncated array element")?;
            append(values, elem, Some(value))?;
            pos = end;
        }
    }
    Ok(())
}

fn unpadded(raw: &[u8]) -> DecodeResult<&str> {
    utf8(raw).map(|s| s.trim_end_matches(' '))
}

fn jsonb_text(raw: &[u8]) -> DecodeResult<&str> {
    match raw.split_first() {
        Some((1, text)) => utf8(text),
        _ => Err("unsupported jsonb version".to_string()),
    }
}

fn bytes(raw: &[u8]) -> DecodeResult<&[u8]> {
    Ok(raw)
}

fn utf8(raw: &[u8]) -> DecodeResult<&str> {
    std::str::from_utf8(raw).map_err(|e| format!("invalid UTF-8 in text value: {e}"))
}

fn format_uuid(b: [u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The parts of a binary numeric: digits are base 10000, `weight` is the power of
/// 10000 of the first digit.
struct Numeric<'a> {
    weight: i16,
    sign: u16,
    digits: &'a [u8],
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

fn parse_numeric(raw: &[u8]) -> DecodeResult<Numeric<'_>> {
    let head = take::<8>(raw, "numeric")?;
    let ndigits = u16::from_be_bytes([head[0], head[1]]) as usize;
    let weight = i16::from_be_bytes([head[2], head[3]]);
    let sign = u16::from_be_bytes([head[4], head[5]]);
    let digits = raw
        .get(8..8 + 2 * ndigits)
        .ok_or("truncated numeric value")?;
    Ok(Numeric {
        weight,
        sign,
        digits,
    })
}

fn numeric_to_f64(raw: &[u8]) -> DecodeResult<f64> {
    let n = parse_numeric(raw)?;
    match n.sign {
        NUMERIC_NAN => return Ok(f64::NAN),
        NUMERIC_PINF => return Ok(f64::INFINITY),
        NUMERIC_NINF => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    // Summing from the least significant digit keeps the rounding error small.
    let mut v = 0f64;
    for (i, d) in n.digits.chunks_exact(2).enumerate().rev() {
        let d = u16::from_be_bytes([d[0], d[1]]) as f64;
        v += d * 10000f64.powi(n.weight as i32 - i as i32);
    }
    Ok(if n.sign == NUMERIC_NEG { -v } else { v })
}

fn numeric_to_i128(raw: &[u8], scale: i8) -> DecodeResult<i128> {
    let n = parse_numeric(raw)?;
    if matches!(n.sign, NUMERIC_NAN | NUMERIC_PINF | NUMERIC_NINF) {
        return Err("NaN and infinity cannot be represented as a DECIMAL".into());
    }
    let overflow = || "numeric value does not fit in DECIMAL(38)".to_string();
    let mut v: i128 = 0;
    for (i, d) in n.digits.chunks_exact(2).enumerate() {
        let d = u16::from_be_bytes([d[0], d[1]]) as i128;
        // Power of ten of this digit in the scaled integer.
        let exp = 4 * (n.weight as i32 - i as i32) + scale as i32;
        let term = if exp >= 0 {
            10i128
                .checked_pow(exp as u32)
                .and_then(|p| d.checked_mul(p))
                .ok_or_else(overflow)?
        } else if exp > -4 {
            d / 10i128.pow((-exp) as u32)
        } else {
            0
        };
        v = v.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(if n.sign == NUMERIC_NEG { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a decimal string the way PostgreSQL does (base-10000 digits).
    fn numeric_bytes(s: &str) -> Vec<u8> {
        let neg = s.starts_with('-');
        let s = s.trim_start_matches('-');
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let pad_int = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
        let pad_frac = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
        let mut digits: Vec<u16> = pad_int
            .as_bytes()
            .chunks(4)
            .chain(pad_frac.as_bytes().chunks(4))
            .map(|c| {
                std::str::from_utf8(c)
                    .expect("ascii")
                    .parse()
                    .expect("digit")
            })
            .collect();
        let mut weight = (pad_int.len() / 4) as i16 - 1;
        while digits.first() == Some(&0) && weight >= 0 {
            digits.remove(0);
            weight -= 1;
        }
        let mut out = vec![];
        out.extend((digits.len() as u16).to_be_bytes());
        out.extend(weight.to_be_bytes());
        out.extend((if neg { NUMERIC_NEG } else { 0 }).to_be_bytes());
        out.extend((frac.len() as u16).to_be_bytes());
        for d in digits {
            out.extend(d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_decode_exactly() {
        for (text, scale, expected) in [
            ("123.45", 2, 12345i128),
            ("-0.05", 2, -5),
            ("10000", 0, 10000),
            ("99999999.9999", 4, 999999999999),
            ("0.1234", 4, 1234),
            ("1.5", 3, 1500),
        ] {
            assert_eq!(
                numeric_to_i128(&numeric_bytes(text), scale),
                Ok(expected),
                "{text}"
            );
        }
        assert_eq!(numeric_to_f64(&numeric_bytes("-1234.5")), Ok(-1234.5));
    }

    #[test]
    fn numeric_property_round_trip() {
        // Every value in a dense range survives encode -> decode at scale 3.
        for v in (-200_000i64..200_000).step_by(7) {
            let text = format!(
                "{}{}.{:03}",
                if v < 0 { "-" } else { "" },
                v.abs() / 1000,
                v.abs() % 1000
            );
            assert_eq!(
                numeric_to_i128(&numeric_bytes(&text), 3),
                Ok(v as i128),
                "{text}"
            );
        }
    }

    #[test]
    fn truncated_values_are_errors_not_panics() {
        let mut b = PgKind::Int8.builder(1);
        assert!(append(b.as_mut(), &PgKind::Int8, Some(&[1, 2])).is_err());
        let mut b = PgKind::Array(Box::new(PgKind::Int4)).builder(1);
        assert!(append(
            b.as_mut(),
            &PgKind::Array(Box::new(PgKind::Int4)),
            Some(&[0, 0, 0, 1, 0])
        )
        .is_err());
        assert!(numeric_to_i128(&[0, 5, 0, 0], 2).is_err());
    }

    #[test]
    fn kinds_map_to_arrow_types() {
        assert_eq!(
            PgKind::of(&Type::NUMERIC, ((12 << 16) | 2) + 4),
            Some(PgKind::Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(PgKind::of(&Type::NUMERIC, -1), Some(PgKind::NumericAny));
        assert_eq!(
            PgKind::of(&Type::INT4_ARRAY, -1)
                .map(|k| k.arrow_type())
                .map(|t| t.to_string())
                .as_deref(),
            Some("List(Int32)")
        );
        assert_eq!(PgKind::of(&Type::POINT, -1), None);
        assert_eq!(
            format_uuid([0xab; 16]),
            "abababab-abab-abab-abab-abababababab"
        );
    }
}
