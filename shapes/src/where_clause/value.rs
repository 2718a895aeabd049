//! Runtime values: reading a column's Postgres text output into a typed [`Datum`], comparing
//! two of them as Postgres does, and writing them back as text Postgres reads unchanged.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::array_text::{self, ArrayText};
use super::datetime::{self, Interval};
use super::float;
use super::numeric::Numeric;
use super::types::SqlType;

/// A typed value. Text-like values borrow from the row where they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum<'a> {
    Null,
    Bool(bool),
    /// int2, int4, int8.
    Int(i64),
    Numeric(Numeric),
    /// float4 (widened exactly) and float8.
    Float(f64),
    /// text, varchar, bpchar (bpchar keeps its padding; comparisons ignore it).
    Text(Cow<'a, str>),
    Uuid(u128),
    /// Days from 1970-01-01; `i64::MIN/MAX` are `∓infinity`.
    Date(i64),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds from 2000-01-01 (UTC for timestamptz); `i64::MIN/MAX` are `∓infinity`.
    Timestamp(i64),
    Interval(Interval),
    /// json/jsonb text.
    Json(Cow<'a, str>),
    /// 0-based position of the label in declaration order.
    Enum(u32),
    Array(Box<ArrayDatum<'a>>),
}

/// An array value: dimensions and elements in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayDatum<'a> {
    pub dims: Vec<(i64, usize)>,
    pub items: Vec<Datum<'a>>,
}

/// Why a text is not a value of a type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn invalid(ty: &SqlType, text: &str) -> ValueError {
    ValueError(format!("invalid input syntax for type {ty}: \"{text}\""))
}

fn parse_int(text: &str, ty: &SqlType) -> Result<i64, ValueError> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(ty, text));
    }
    let v: i64 = t
        .parse()
        .map_err(|_| ValueError(format!("value \"{text}\" is out of range for type {ty}")))?;
    let (lo, hi) = match ty {
        SqlType::Int2 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        SqlType::Int4 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    if !(lo..=hi).contains(&v) {
        return Err(ValueError(format!(
            "value \"{text}\" is out of range for type {ty}"
        )));
    }
    Ok(v)
}

fn parse_bool(text: &str) -> Result<bool, ValueError> {
    let t = text.trim().to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || t == "on" || t == "1" {
        Ok(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || t == "0" {
        Ok(false)
    } else {
        Err(invalid(&SqlType::Bool, text))
    }
}

fn parse_uuid(text: &str) -> Result<u128, ValueError> {
    let t = text.trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(t);
    // Postgres allows one hyphen after any group of four hex digits
    let mut hex = String::with_capacity(32);
    let mut prev_hyphen = false;
    for c in inner.chars() {
        if c == '-'
            && !prev_hyphen
            && hex.len().is_multiple_of(4)
            && !hex.is_empty()
            && hex.len() < 32
        {
            prev_hyphen = true;
            continue;
        }
        if !c.is_ascii_hexdigit() {
            return Err(invalid(&SqlType::Uuid, text));
        }
        hex.push(c);
        prev_hyphen = false;
    }
    if prev_hyphen {
        return Err(invalid(&SqlType::Uuid, text));
    }
    if hex.len() != 32 {
        return Err(invalid(&SqlType::Uuid, text));
    }
    u128::from_str_radix(&hex, 16).map_err(|_| invalid(&SqlType::Uuid, text))
}

fn format_uuid(v: u128) -> String {
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Reads `text` as a value of `ty`, with Postgres' input rules for the forms we accept.
///
/// ```
/// use shapes::where_clause::{types::SqlType, value::{parse_value, Datum}};
/// assert_eq!(parse_value(&SqlType::Int4, " 012 ").unwrap(), Datum::Int(12));
/// assert!(parse_value(&SqlType::Int2, "40000").is_err());
/// ```
pub fn parse_value<'a>(ty: &SqlType, text: &'a str) -> Result<Datum<'a>, ValueError> {
    let dt = |e: datetime::DateTimeError| ValueError(e.to_string());
    Ok(match ty {
        SqlType::Bool => Datum::Bool(parse_bool(text)?),
        SqlType::Int2 | SqlType::Int4 | SqlType::Int8 => Datum::Int(parse_int(text, ty)?),
        SqlType::Numeric => Datum::Numeric(
            text.parse()
                .map_err(|e: super::numeric::NumericParseError| ValueError(e.to_string()))?,
        ),
        SqlType::Float4 | SqlType::Float8 => Datum::Float(
            float::parse_float(text, *ty == SqlType::Float4)
                .map_err(|e| ValueError(e.to_string()))?,
        ),
        SqlType::Text | SqlType::Varchar | SqlType::Bpchar => Datum::Text(Cow::Borrowed(text)),
        SqlType::Uuid => Datum::Uuid(parse_uuid(text)?),
        SqlType::Date => Datum::Date(datetime::parse_date(text).map_err(dt)?),
        SqlType::Time => Datum::Time(datetime::parse_time(text).map_err(dt)?),
        SqlType::Timestamp => Datum::Timestamp(datetime::parse_timestamp(text, false).map_err(dt)?),
        SqlType::Timestamptz => {
            Datum::Timestamp(datetime::parse_timestamp(text, true).map_err(dt)?)
        }
        SqlType::Interval => Datum::Interval(datetime::parse_interval(text).map_err(dt)?),
        SqlType::Json | SqlType::Jsonb => {
            if super::json::is_valid(text) {
                Datum::Json(Cow::Borrowed(text))
            } else {
                return Err(invalid(ty, text));
            }
        }
        SqlType::Enum(e) => match e.labels.iter().position(|l| l == text) {
            Some(i) => Datum::Enum(i as u32),
            None => {
                return Err(ValueError(format!(
                    "invalid input value for enum {}: \"{text}\" (labels: {})",
                    e.name,
                    e.labels.join(", ")
                )));
            }
        },
        SqlType::Array(elem) => {
            let parsed = array_text::parse_array(text).map_err(|e| ValueError(e.to_string()))?;
            let mut items = Vec::with_capacity(parsed.items.len());
            for item in parsed.items {
                items.push(match item {
                    None => Datum::Null,
                    Some(s) => parse_value(elem, &s)?.into_owned(),
                });
            }
            Datum::Array(Box::new(ArrayDatum {
                dims: parsed.dims,
                items,
            }))
        }
    })
}

impl Datum<'_> {
    /// Detaches the value from the row it borrows from.
    pub fn into_owned(self) -> Datum<'static> {
        match self {
            Datum::Text(t) => Datum::Text(Cow::Owned(t.into_owned())),
            Datum::Json(t) => Datum::Json(Cow::Owned(t.into_owned())),
            Datum::Array(a) => Datum::Array(Box::new(ArrayDatum {
                dims: a.dims,
                items: a.items.into_iter().map(Datum::into_owned).collect(),
            })),
            Datum::Null => Datum::Null,
            Datum::Bool(b) => Datum::Bool(b),
            Datum::Int(i) => Datum::Int(i),
            Datum::Numeric(n) => Datum::Numeric(n),
            Datum::Float(f) => Datum::Float(f),
            Datum::Uuid(u) => Datum::Uuid(u),
            Datum::Date(d) => Datum::Date(d),
            Datum::Time(t) => Datum::Time(t),
            Datum::Timestamp(t) => Datum::Timestamp(t),
            Datum::Interval(i) => Datum::Interval(i),
            Datum::Enum(e) => Datum::Enum(e),
        }
    }

    /// A cheap copy borrowing text from `self`.
    pub fn borrowed(&self) -> Datum<'_> {
        match self {
            Datum::Text(t) => Datum::Text(Cow::Borrowed(t)),
            Datum::Json(t) => Datum::Json(Cow::Borrowed(t)),
            other => other.clone(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }
}

/// Trailing spaces do not count in `bpchar` comparisons.
pub fn bpchar_trim(s: &str) -> &str {
    s.trim_end_matches(' ')
}

/// Compares two non-null values of type `ty` as Postgres does (byte order for text);
/// `None` if either is NULL.
pub fn compare(ty: &SqlType, a: &Datum<'_>, b: &Datum<'_>) -> Option<Ordering> {
    Some(match (a, b) {
        (Datum::Null, _) | (_, Datum::Null) => return None,
        (Datum::Bool(x), Datum::Bool(y)) => x.cmp(y),
        (Datum::Int(x), Datum::Int(y)) => x.cmp(y),
        // integer arithmetic beyond i64 (computed exactly) against plain integers
        (Datum::Int(x), Datum::Numeric(y)) => super::numeric::Numeric::from_i64(*x).cmp(y),
        (Datum::Numeric(x), Datum::Int(y)) => x.cmp(&super::numeric::Numeric::from_i64(*y)),
        (Datum::Numeric(x), Datum::Numeric(y)) => x.cmp(y),
        (Datum::Float(x), Datum::Float(y)) => float::cmp_float(*x, *y),
        (Datum::Text(x), Datum::Text(y)) => {
            if *ty == SqlType::Bpchar {
                bpchar_trim(x).as_bytes().cmp(bpchar_trim(y).as_bytes())
            } else {
                x.as_bytes().cmp(y.as_bytes())
            }
        }
        (Datum::Uuid(x), Datum::Uuid(y)) => x.cmp(y),
        (Datum::Date(x), Datum::Date(y))
        | (Datum::Time(x), Datum::Time(y))
        | (Datum::Timestamp(x), Datum::Timestamp(y)) => x.cmp(y),
        (Datum::Interval(x), Datum::Interval(y)) => x.span().cmp(&y.span()),
        (Datum::Enum(x), Datum::Enum(y)) => x.cmp(y),
        // jsonb is only compared for equality: unequal values are told apart, not ordered
        (Datum::Json(x), Datum::Json(y)) if *ty == SqlType::Jsonb => {
            let (x, y) = (
                super::jsonb::Jsonb::parse(x)?,
                super::jsonb::Jsonb::parse(y)?,
            );
            if super::jsonb::equal(&x, &y) {
                Ordering::Equal
            } else {
                Ordering::Less
            }
        }
        (Datum::Array(x), Datum::Array(y)) => {
            let elem = match ty {
                SqlType::Array(e) => e.as_ref(),
                other => other,
            };
            compare_arrays(elem, x, y)
        }
        _ => return None,
    })
}

/// Postgres' `array_cmp`: elements first (NULL after everything, equal to NULL), then item
/// count, dimension count, lengths, lower bounds.
fn compare_arrays(elem: &SqlType, a: &ArrayDatum<'_>, b: &ArrayDatum<'_>) -> Ordering {
    for (x, y) in a.items.iter().zip(&b.items) {
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => compare(elem, x, y).unwrap_or(Ordering::Equal),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.items
        .len()
        .cmp(&b.items.len())
        .then(a.dims.len().cmp(&b.dims.len()))
        .then_with(|| {
            let lens = |d: &[(i64, usize)]| d.iter().map(|x| x.1).collect::<Vec<_>>();
            lens(&a.dims).cmp(&lens(&b.dims))
        })
        .then_with(|| {
            let lbs = |d: &[(i64, usize)]| d.iter().map(|x| x.0).collect::<Vec<_>>();
            lbs(&a.dims).cmp(&lbs(&b.dims))
        })
}

/// Writes a non-null value as text that Postgres reads back as the same value of `ty` under
/// any session settings (the form sent as a bound parameter). `None` for NULL.
pub fn to_input_text(ty: &SqlType, v: &Datum<'_>) -> Option<String> {
    Some(match v {
        Datum::Null => return None,
        Datum::Bool(b) => if *b { "true" } else { "false" }.to_owned(),
        Datum::Int(i) => i.to_string(),
        Datum::Numeric(n) => n.to_string(),
        Datum::Float(f) => float::format_float(*f, *ty == SqlType::Float4),
        Datum::Text(t) | Datum::Json(t) => t.to_string(),
        Datum::Uuid(u) => format_uuid(*u),
        Datum::Date(d) => datetime::format_date(*d),
        Datum::Time(t) => datetime::format_time(*t),
        Datum::Timestamp(t) => datetime::format_timestamp(*t, *ty == SqlType::Timestamptz),
        Datum::Interval(i) => i.to_iso(),
        Datum::Enum(i) => match ty {
            SqlType::Enum(e) => e.labels.get(*i as usize)?.clone(),
            _ => return None,
        },
        Datum::Array(a) => {
            let elem = match ty {
                SqlType::Array(e) => e.as_ref(),
                other => other,
            };
            array_text::format_array(&ArrayText {
                dims: a.dims.clone(),
                items: a.items.iter().map(|i| to_input_text(elem, i)).collect(),
            })
        }
    })
}

/// A hash key under which equal values (by `=` of `ty`) always coincide: `1.0` and `1`,
/// `-0` and `0`, `'a '` and `'a'` for bpchar, `P1M` and `P30D`. `None` for NULL and for
/// types the routing index does not hash.
pub fn equality_key(ty: &SqlType, v: &Datum<'_>) -> Option<String> {
    Some(match v {
        Datum::Null | Datum::Json(_) | Datum::Array(_) => return None,
        Datum::Numeric(n) => n.normalized_key(),
        Datum::Float(f) if *f == 0.0 => "0".to_owned(),
        Datum::Float(f) if f.is_nan() => "NaN".to_owned(),
        Datum::Float(f) => format!("{f:e}"),
        Datum::Text(t) if *ty == SqlType::Bpchar => bpchar_trim(t).to_owned(),
        Datum::Interval(i) => i.span().to_string(),
        Datum::Enum(i) => i.to_string(),
        Datum::Date(d) | Datum::Time(d) | Datum::Timestamp(d) => d.to_string(),
        other => to_input_text(ty, other)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn bool_input_accepts_postgres_spellings_of_true(
        #[values("t", "TRUE", "yes", "on", "1", " y ")] t: &str,
    ) {
        assert_eq!(parse_bool(t), Ok(true), "{t}");
    }

    #[rstest]
    fn bool_input_accepts_postgres_spellings_of_false(
        #[values("f", "false", "no", "off", "0", "of")] t: &str,
    ) {
        assert_eq!(parse_bool(t), Ok(false), "{t}");
    }

    #[rstest]
    fn bool_input_refuses_other_spellings(#[values("o", "2", "", "truee")] t: &str) {
        assert!(parse_bool(t).is_err(), "{t}");
    }

    #[rstest]
    fn uuid_input_accepts_postgres_forms(
        #[values(
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11"
        )]
        t: &str,
    ) {
        let canonical = parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(parse_uuid(t).unwrap(), canonical, "{t}");
    }

    #[test]
    fn uuid_output_and_refusals() {
        let canonical = parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(
            format_uuid(canonical),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        assert!(parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1").is_err());
        assert!(parse_uuid("-a0eebc999c0b4ef8bb6d6bb9bd380a11").is_err());
    }

    #[test]
    fn equal_values_share_an_equality_key() {
        let key = |ty: &SqlType, t: &str| equality_key(ty, &parse_value(ty, t).unwrap());
        assert_eq!(key(&SqlType::Numeric, "1.00"), key(&SqlType::Numeric, "1"));
        assert_eq!(key(&SqlType::Float8, "-0"), key(&SqlType::Float8, "0"));
        assert_eq!(key(&SqlType::Bpchar, "a  "), key(&SqlType::Bpchar, "a"));
        assert_eq!(key(&SqlType::Int8, "01"), key(&SqlType::Int8, "1"));
        assert_eq!(
            key(&SqlType::Interval, "P1M"),
            key(&SqlType::Interval, "P30D")
        );
    }
}
