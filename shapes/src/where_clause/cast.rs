//! Type conversions: which ones exist, which ones cannot fail (the only ones allowed on
//! column values, so a snapshot query can never fail on a cast), and doing them.

use std::borrow::Cow;

use num_bigint::BigInt;

use super::numeric::Numeric;
use super::types::SqlType;
use super::value::{self, Datum, bpchar_trim, to_input_text};

/// Whether a value of `from` converts to `to` for every possible value.
pub fn infallible(from: &SqlType, to: &SqlType) -> bool {
    use SqlType::*;
    if from == to {
        return true;
    }
    match (from, to) {
        (Array(a), Array(b)) => infallible(a, b),
        (f, Text | Varchar | Bpchar) if f.is_string() => true,
        (Int2, Int4 | Int8) | (Int4, Int8) => true,
        (f, Numeric | Float4 | Float8) if f.is_integer() => true,
        (Float4, Float8) | (Float4 | Float8, Numeric) => true,
        (Bool | Int2 | Int4 | Int8 | Numeric | Uuid | Enum(_) | Json | Jsonb, Text | Varchar) => {
            true
        }
        (Jsonb, Json) => true,
        // read as UTC (the session time zone of every proxy connection), so exact both ways
        (Timestamp, Timestamptz) | (Timestamptz, Timestamp) => true,
        _ => false,
    }
}

/// Whether an implicit conversion (the kind Postgres inserts for operators) exists.
pub fn implicit(from: &SqlType, to: &SqlType) -> bool {
    use SqlType::*;
    from == to
        || matches!(
            (from, to),
            (Int2, Int4 | Int8 | Numeric | Float4 | Float8)
                | (Int4, Int8 | Numeric | Float4 | Float8)
                | (Int8, Numeric | Float4 | Float8)
                | (Float4, Float8)
                | (Varchar | Bpchar, Text)
                | (Text, Varchar)
                | (Varchar, Bpchar)
                | (Bpchar, Varchar)
                | (Timestamp, Timestamptz)
        )
}

fn out_of_range(to: &SqlType) -> String {
    format!("value out of range for type {to}")
}

fn numeric_to_int(n: &Numeric, to: &SqlType) -> Result<i64, String> {
    let Numeric::Finite { mantissa, scale } = n else {
        return Err(format!("cannot convert {n} to {to}"));
    };
    let div = BigInt::from(10u8).pow(*scale);
    let twice = mantissa * 2i32;
    // round half away from zero: (2m ± d) / 2d truncated
    let rounded = if twice.sign() == num_bigint::Sign::Minus {
        (twice - &div) / (div * 2i32)
    } else {
        (twice + &div) / (div * 2i32)
    };
    let v: i64 = rounded.try_into().map_err(|_| out_of_range(to))?;
    int_in_range(v, to)
}

fn int_in_range(v: i64, to: &SqlType) -> Result<i64, String> {
    let ok = match to {
        SqlType::Int2 => i16::try_from(v).is_ok(),
        SqlType::Int4 => i32::try_from(v).is_ok(),
        _ => true,
    };
    if ok { Ok(v) } else { Err(out_of_range(to)) }
}

fn float_to_numeric(f: f64, single: bool) -> Numeric {
    if f.is_nan() {
        return Numeric::NaN;
    }
    if f.is_infinite() {
        return if f > 0.0 {
            Numeric::PosInf
        } else {
            Numeric::NegInf
        };
    }
    // Postgres prints FLT_DIG/DBL_DIG significant digits (`%.*g`), then reads that back
    let sci = if single {
        format!("{:.5e}", f as f32)
    } else {
        format!("{f:.14e}")
    };
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let mant = if mant.contains('.') {
        mant.trim_end_matches('0').trim_end_matches('.')
    } else {
        mant
    };
    format!("{mant}e{exp}").parse().unwrap_or(Numeric::NaN)
}

/// Converts `v` (of type `from`) to `to`; `Err` says why it cannot.
pub fn cast<'a>(from: &SqlType, to: &SqlType, v: Datum<'a>) -> Result<Datum<'a>, String> {
    use SqlType::*;
    if v.is_null() || from == to {
        return Ok(v);
    }
    // integer arithmetic can exceed i64 (it is exact): such values stay numeric
    let v = match v {
        Datum::Numeric(n) if from.is_integer() => match n.to_i64_exact() {
            Some(i) => Datum::Int(i),
            None => {
                return match to {
                    t if t.is_integer() || *t == Numeric => Ok(Datum::Numeric(n)),
                    Text | Varchar => Ok(Datum::Text(Cow::Owned(n.to_string()))),
                    Float8 => Ok(Datum::Float(n.to_f64())),
                    Float4 => Ok(Datum::Float(f64::from(n.to_f64() as f32))),
                    t => Err(format!("cannot cast type {from} to {t}")),
                };
            }
        },
        v => v,
    };
    Ok(match (from, to, v) {
        (Array(a), Array(b), Datum::Array(arr)) => {
            let mut items = Vec::with_capacity(arr.items.len());
            for item in arr.items {
                items.push(cast(a, b, item)?);
            }
            Datum::Array(Box::new(super::value::ArrayDatum {
                dims: arr.dims,
                items,
            }))
        }
        (Bpchar, Text | Varchar, Datum::Text(t)) => Datum::Text(match t {
            Cow::Borrowed(s) => Cow::Borrowed(bpchar_trim(s)),
            Cow::Owned(s) => Cow::Owned(bpchar_trim(&s).to_owned()),
        }),
        (f, Text | Varchar | Bpchar, v @ Datum::Text(_)) if f.is_string() => v,
        (f, t, Datum::Int(i)) if f.is_integer() && t.is_integer() => {
            Datum::Int(int_in_range(i, t)?)
        }
        (f, Numeric, Datum::Int(i)) if f.is_integer() => {
            Datum::Numeric(super::numeric::Numeric::from_i64(i))
        }
        (f, Float8, Datum::Int(i)) if f.is_integer() => Datum::Float(i as f64),
        (f, Float4, Datum::Int(i)) if f.is_integer() => Datum::Float(f64::from(i as f32)),
        (Float4, Float8, v) => v,
        (Float4 | Float8, Numeric, Datum::Float(f)) => {
            Datum::Numeric(float_to_numeric(f, *from == Float4))
        }
        (Numeric, Float8 | Float4, Datum::Numeric(n)) => {
            let f = if *to == Float4 {
                f64::from(n.to_f64() as f32)
            } else {
                n.to_f64()
            };
            if f.is_infinite()
                && !matches!(
                    n,
                    super::numeric::Numeric::PosInf | super::numeric::Numeric::NegInf
                )
            {
                return Err(out_of_range(to));
            }
            Datum::Float(f)
        }
        (Numeric, t, Datum::Numeric(n)) if t.is_integer() => Datum::Int(numeric_to_int(&n, t)?),
        (Float4 | Float8, t, Datum::Float(f)) if t.is_integer() => {
            let r = f.round_ties_even();
            if !r.is_finite() || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r)
            {
                return Err(out_of_range(t));
            }
            Datum::Int(int_in_range(r as i64, t)?)
        }
        (Bool, Text | Varchar, Datum::Bool(b)) => {
            Datum::Text(Cow::Borrowed(if b { "true" } else { "false" }))
        }
        (Jsonb, Json, v) => v,
        // both count microseconds from 2000-01-01, a timestamp being read as UTC
        (Timestamp, Timestamptz, v) | (Timestamptz, Timestamp, v) => v,
        (Json | Jsonb, Text | Varchar, Datum::Json(t)) => Datum::Text(t),
        (f, Text | Varchar, v) if infallible(f, to) => {
            Datum::Text(Cow::Owned(to_input_text(f, &v).unwrap_or_default()))
        }
        (f, t, Datum::Text(s)) if f.is_string() => {
            value::parse_value(t, &s).map_err(|e| e.0)?.into_owned()
        }
        (f, t, _) => return Err(format!("cannot cast type {f} to {t}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Datum<'static> {
        Datum::Numeric(s.parse().unwrap())
    }

    #[test]
    fn numeric_to_int_rounds_half_away_from_zero() {
        assert_eq!(
            cast(&SqlType::Numeric, &SqlType::Int4, n("2.5")),
            Ok(Datum::Int(3))
        );
        assert_eq!(
            cast(&SqlType::Numeric, &SqlType::Int4, n("-2.5")),
            Ok(Datum::Int(-3))
        );
        assert_eq!(
            cast(&SqlType::Numeric, &SqlType::Int4, n("2.4")),
            Ok(Datum::Int(2))
        );
        assert!(cast(&SqlType::Numeric, &SqlType::Int2, n("40000")).is_err());
    }

    #[test]
    fn float_to_numeric_keeps_fifteen_digits() {
        assert_eq!(float_to_numeric(0.1, false).to_string(), "0.1");
        assert_eq!(
            float_to_numeric(1.0 / 3.0, false).to_string(),
            "0.333333333333333"
        );
        assert_eq!(
            float_to_numeric(1.5e20, false).to_string(),
            "150000000000000000000"
        );
        assert_eq!(float_to_numeric(1e-5, false).to_string(), "0.00001");
    }

    #[test]
    fn bpchar_to_text_drops_padding() {
        let v = cast(
            &SqlType::Bpchar,
            &SqlType::Text,
            Datum::Text(Cow::Borrowed("ab  ")),
        )
        .unwrap();
        assert_eq!(v, Datum::Text(Cow::Borrowed("ab")));
    }
}
