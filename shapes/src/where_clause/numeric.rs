//! Postgres `numeric`: exact decimals with a *display scale*, plus `NaN` and `±Infinity`.
//!
//! A value is `mantissa × 10^-scale`; `scale` is Postgres' `dscale`, the number of digits
//! shown after the point, which arithmetic carries exactly as Postgres does (sum: the larger
//! scale; product: the sum of scales; quotient: [`Numeric::div`]'s rule), so that a result
//! cast to text reads as Postgres would print it.

use std::cmp::Ordering;
use std::fmt;

use num_bigint::{BigInt, Sign};
use num_integer::Integer;
use num_traits::{Signed, ToPrimitive, Zero};

/// Postgres refuses more digits than this in `numeric` input (`NUMERIC_MAX_PRECISION` is for
/// typmods; the format itself allows ~131072 before the point and 16383 after).
const MAX_INPUT_DIGITS: usize = 140_000;
const MAX_DISPLAY_SCALE: i64 = 1000;
const MIN_SIG_DIGITS: i64 = 16;

/// An exact Postgres `numeric`.
///
/// ```
/// use shapes::where_clause::numeric::Numeric;
/// let a: Numeric = "1.50".parse().unwrap();
/// let b: Numeric = "2".parse().unwrap();
/// assert_eq!(a.mul(&b).to_string(), "3.00");
/// assert_eq!(b.div(&"3".parse().unwrap()).unwrap().to_string(), "0.66666666666666666667");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numeric {
    NaN,
    PosInf,
    NegInf,
    Finite { mantissa: BigInt, scale: u32 },
}

/// Why a text is not a `numeric`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid input syntax for type numeric: \"{0}\"")]
pub struct NumericParseError(pub String);

impl std::str::FromStr for Numeric {
    type Err = NumericParseError;

    /// Parses as `numeric_in` does: surrounding spaces, a sign, digits with an optional point,
    /// an optional exponent; or `NaN`, `Infinity`, `inf` (any case, signed).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || NumericParseError(input.to_owned());
        let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let lower = body.to_ascii_lowercase();
        if lower == "nan" && body.len() == s.len() {
            return Ok(Numeric::NaN);
        }
        if lower == "infinity" || lower == "inf" {
            return Ok(if negative {
                Numeric::NegInf
            } else {
                Numeric::PosInf
            });
        }
        let (number, exponent) = match body.find(['e', 'E']) {
            Some(at) => {
                let exp: i64 = parse_exponent(&body[at + 1..]).ok_or_else(err)?;
                (&body[..at], exp)
            }
            None => (body, 0),
        };
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part)
            || !all_digits(frac_part)
            || int_part.len() + frac_part.len() == 0
            || int_part.len() + frac_part.len() > MAX_INPUT_DIGITS
        {
            return Err(err());
        }
        let digits = format!("{int_part}{frac_part}");
        let mut mantissa: BigInt = digits.parse().map_err(|_| err())?;
        if negative {
            mantissa = -mantissa;
        }
        let scale = frac_part.len() as i64 - exponent;
        if scale >= 0 {
            let scale = u32::try_from(scale).map_err(|_| err())?;
            Ok(Numeric::Finite { mantissa, scale })
        } else {
            let shift = u32::try_from(-scale).map_err(|_| err())?;
            Ok(Numeric::Finite {
                mantissa: mantissa * pow10(shift),
                scale: 0,
            })
        }
    }
}

fn parse_exponent(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    // Postgres refuses exponents beyond ±1000 (NUMERIC_MAX_PRECISION)
    if v > 1000 {
        return None;
    }
    Some(if neg { -v } else { v })
}

fn pow10(n: u32) -> BigInt {
    BigInt::from(10u8).pow(n)
}

impl Numeric {
    /// An integer as a numeric of scale 0.
    pub fn from_i64(v: i64) -> Self {
        Numeric::Finite {
            mantissa: BigInt::from(v),
            scale: 0,
        }
    }

    fn rescaled(mantissa: &BigInt, from: u32, to: u32) -> BigInt {
        debug_assert!(to >= from);
        mantissa * pow10(to - from)
    }

    /// Two mantissas brought to the larger of their scales, and that scale.
    fn aligned(a: &BigInt, sa: u32, b: &BigInt, sb: u32) -> (BigInt, BigInt, u32) {
        let s = sa.max(sb);
        (Self::rescaled(a, sa, s), Self::rescaled(b, sb, s), s)
    }

    pub fn is_nan(&self) -> bool {
        matches!(self, Numeric::NaN)
    }

    /// Sum (scale: the larger scale); `Inf + -Inf` is NaN.
    pub fn add(&self, other: &Numeric) -> Numeric {
        use Numeric::*;
        match (self, other) {
            (NaN, _) | (_, NaN) | (PosInf, NegInf) | (NegInf, PosInf) => NaN,
            (PosInf | NegInf, _) => self.clone(),
            (_, PosInf | NegInf) => other.clone(),
            (
                Finite {
                    mantissa: a,
                    scale: sa,
                },
                Finite {
                    mantissa: b,
                    scale: sb,
                },
            ) => {
                let (a, b, scale) = Self::aligned(a, *sa, b, *sb);
                Finite {
                    mantissa: a + b,
                    scale,
                }
            }
        }
    }

    /// Difference.
    pub fn sub(&self, other: &Numeric) -> Numeric {
        self.add(&other.neg())
    }

    /// Product (scale: the sum of the scales).
    pub fn mul(&self, other: &Numeric) -> Numeric {
        use Numeric::*;
        match (self, other) {
            (NaN, _) | (_, NaN) => NaN,
            (
                Finite {
                    mantissa: a,
                    scale: sa,
                },
                Finite {
                    mantissa: b,
                    scale: sb,
                },
            ) => Finite {
                mantissa: a * b,
                scale: sa + sb,
            },
            _ => match (self.signum(), other.signum()) {
                (0, _) | (_, 0) => NaN,
                (x, y) if x * y > 0 => PosInf,
                _ => NegInf,
            },
        }
    }

    /// -1, 0 or 1 (NaN: 0).
    pub fn signum(&self) -> i32 {
        match self {
            Numeric::NaN => 0,
            Numeric::PosInf => 1,
            Numeric::NegInf => -1,
            Numeric::Finite { mantissa, .. } => match mantissa.sign() {
                Sign::Minus => -1,
                Sign::NoSign => 0,
                Sign::Plus => 1,
            },
        }
    }

    /// Negation.
    pub fn neg(&self) -> Numeric {
        match self {
            Numeric::NaN => Numeric::NaN,
            Numeric::PosInf => Numeric::NegInf,
            Numeric::NegInf => Numeric::PosInf,
            Numeric::Finite { mantissa, scale } => Numeric::Finite {
                mantissa: -mantissa,
                scale: *scale,
            },
        }
    }

    /// Quotient rounded (half away from zero) to Postgres' `select_div_scale`; `None` when
    /// dividing by zero (the caller turns that into NULL, like `NULLIF(divisor, 0)`).
    pub fn div(&self, other: &Numeric) -> Option<Numeric> {
        use Numeric::*;
        if other.signum() == 0 && !other.is_nan() {
            return None;
        }
        Some(match (self, other) {
            (NaN, _) | (_, NaN) => NaN,
            (PosInf | NegInf, PosInf | NegInf) => NaN,
            (PosInf | NegInf, Finite { .. }) => {
                if self.signum() * other.signum() > 0 {
                    PosInf
                } else {
                    NegInf
                }
            }
            (Finite { .. }, PosInf | NegInf) => Numeric::from_i64(0),
            (
                Finite {
                    mantissa: a,
                    scale: sa,
                },
                Finite {
                    mantissa: b,
                    scale: sb,
                },
            ) => {
                let rscale = select_div_scale(a, *sa, b, *sb);
                // a/10^sa ÷ b/10^sb = (a × 10^(sb + rscale + 1 - sa)) / b, in units of 10^-(rscale+1)
                let num_exp = i64::from(*sb) + rscale + 1 - i64::from(*sa);
                let (num, den) = if num_exp >= 0 {
                    (a * pow10(num_exp as u32), b.clone())
                } else {
                    (a.clone(), b * pow10((-num_exp) as u32))
                };
                let q = &num / &den; // truncates toward zero
                let mantissa = round_last_digit_half_away(&q);
                Finite {
                    mantissa,
                    scale: rscale as u32,
                }
            }
        })
    }

    /// Truncated quotient (Postgres' `div(numeric, numeric)`, scale 0); `None` on zero divisor.
    pub fn div_trunc(&self, other: &Numeric) -> Option<Numeric> {
        use Numeric::*;
        if other.signum() == 0 && !other.is_nan() {
            return None;
        }
        Some(match (self, other) {
            (
                Finite {
                    mantissa: a,
                    scale: sa,
                },
                Finite {
                    mantissa: b,
                    scale: sb,
                },
            ) => {
                let (a, b, _) = Self::aligned(a, *sa, b, *sb);
                Finite {
                    mantissa: a / b,
                    scale: 0,
                }
            }
            (Finite { .. }, PosInf | NegInf) => Numeric::from_i64(0),
            (PosInf | NegInf, Finite { .. }) => {
                if self.signum() * other.signum() > 0 {
                    PosInf
                } else {
                    NegInf
                }
            }
            _ => NaN,
        })
    }

    /// Remainder with the dividend's sign (scale: the larger scale); `None` on zero divisor.
    pub fn rem(&self, other: &Numeric) -> Option<Numeric> {
        use Numeric::*;
        if other.signum() == 0 && !other.is_nan() {
            return None;
        }
        Some(match (self, other) {
            (
                Finite {
                    mantissa: a,
                    scale: sa,
                },
                Finite {
                    mantissa: b,
                    scale: sb,
                },
            ) => {
                let (a, b, s) = Self::aligned(a, *sa, b, *sb);
                Finite {
                    mantissa: a % b,
                    scale: s,
                }
            }
            (Finite { .. }, PosInf | NegInf) => self.clone(),
            _ => NaN,
        })
    }

    /// The value as the nearest `f64` (what Postgres' numeric → float8 cast gives).
    pub fn to_f64(&self) -> f64 {
        match self {
            Numeric::NaN => f64::NAN,
            Numeric::PosInf => f64::INFINITY,
            Numeric::NegInf => f64::NEG_INFINITY,
            Numeric::Finite { .. } => self.to_string().parse().unwrap_or(f64::NAN),
        }
    }

    /// Exact integer value when the number is integral and fits an `i64`.
    pub fn to_i64_exact(&self) -> Option<i64> {
        match self {
            Numeric::Finite { mantissa, scale } => {
                let (q, r) = mantissa.div_rem(&pow10(*scale));
                if r.is_zero() { q.to_i64() } else { None }
            }
            _ => None,
        }
    }

    /// A form where equal numbers print the same (trailing zeros removed), for hash keys.
    pub fn normalized_key(&self) -> String {
        match self {
            Numeric::Finite { mantissa, scale } => {
                let mut m = mantissa.clone();
                let mut s = *scale;
                let ten = BigInt::from(10u8);
                while s > 0 && (&m % &ten).is_zero() {
                    m /= &ten;
                    s -= 1;
                }
                Numeric::Finite {
                    mantissa: m,
                    scale: s,
                }
                .to_string()
            }
            other => other.to_string(),
        }
    }
}

/// Rounds a value given with one extra digit to the last digit, half away from zero.
fn round_last_digit_half_away(q: &BigInt) -> BigInt {
    let ten = BigInt::from(10u8);
    let (whole, last) = (q / &ten, q % &ten);
    let last = last.abs().to_u8().unwrap_or(0);
    if last >= 5 {
        if q.is_negative() {
            whole - 1
        } else {
            whole + 1
        }
    } else {
        whole
    }
}

/// Weight (base-10000 exponent) and first base-10000 digit of a non-zero value, as
/// Postgres' `NumericVar` holds it; (0, 0) for zero.
fn base10000_head(mantissa: &BigInt, scale: u32) -> (i64, u32) {
    if mantissa.is_zero() {
        return (0, 0);
    }
    let digits = mantissa.abs().to_string();
    // decimal exponent of the leading digit
    let exp10 = digits.len() as i64 - 1 - i64::from(scale);
    let weight = exp10.div_euclid(4);
    // leading group holds the digits from exponent 4*weight+3 down to 4*weight
    let lead_len = (exp10 - 4 * weight + 1) as usize;
    let head: String = digits.chars().take(lead_len).collect();
    let mut first: u32 = head.parse().unwrap_or(0);
    for _ in digits.len()..lead_len {
        first *= 10;
    }
    (weight, first)
}

fn select_div_scale(a: &BigInt, sa: u32, b: &BigInt, sb: u32) -> i64 {
    let (w1, f1) = base10000_head(a, sa);
    let (w2, f2) = base10000_head(b, sb);
    let mut qweight = w1 - w2;
    if f1 <= f2 {
        qweight -= 1;
    }
    let mut rscale = MIN_SIG_DIGITS - qweight * 4;
    rscale = rscale.max(i64::from(sa)).max(i64::from(sb)).max(0);
    rscale.min(MAX_DISPLAY_SCALE)
}

impl PartialOrd for Numeric {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Postgres order: `-Infinity` < finite < `Infinity` < `NaN`; NaN equals NaN; scale ignored.
impl Ord for Numeric {
    fn cmp(&self, other: &Self) -> Ordering {
        use Numeric::*;
        let rank = |n: &Numeric| match n {
            NegInf => 0,
            Finite { .. } => 1,
            PosInf => 2,
            NaN => 3,
        };
        match (self, other) {
            (
                Finite {
                    mantissa: a,
                    scale: sa,
                },
                Finite {
                    mantissa: b,
                    scale: sb,
                },
            ) => {
                let (a, b, _) = Self::aligned(a, *sa, b, *sb);
                a.cmp(&b)
            }
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

/// Postgres' `numeric_out`: exactly `scale` digits after the point.
impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Numeric::NaN => f.write_str("NaN"),
            Numeric::PosInf => f.write_str("Infinity"),
            Numeric::NegInf => f.write_str("-Infinity"),
            Numeric::Finite { mantissa, scale } => {
                let digits = mantissa.abs().to_string();
                let scale = *scale as usize;
                if mantissa.is_negative() {
                    f.write_str("-")?;
                }
                if scale == 0 {
                    return f.write_str(&digits);
                }
                let padded = if digits.len() <= scale {
                    format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
                } else {
                    digits
                };
                let (int, frac) = padded.split_at(padded.len() - scale);
                write!(f, "{int}.{frac}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn n(s: &str) -> Numeric {
        s.parse().unwrap()
    }

    #[rstest]
    #[case::integer("1", "1")]
    #[case::scale_kept("1.50", "1.50")]
    #[case::negative_zero("-0.00", "0.00")]
    #[case::exponent_with_spaces(" 1e2 ", "100")]
    #[case::fractional_exponent("1.5e1", "15")]
    #[case::exponent_keeps_extra_scale("1.50e1", "15.0")]
    #[case::negative_exponent("1e-2", "0.01")]
    #[case::leading_dot(".5", "0.5")]
    #[case::trailing_dot("5.", "5")]
    #[case::nan("nan", "NaN")]
    #[case::negative_infinity("-inf", "-Infinity")]
    #[case::positive_infinity("+Infinity", "Infinity")]
    fn parses_and_prints_like_numeric_in_and_out(#[case] input: &str, #[case] out: &str) {
        assert_eq!(n(input).to_string(), out, "{input}");
    }

    #[rstest]
    fn refuses_what_numeric_in_refuses(
        #[values("", ".", "1e", "e1", "1..2", "abc", "1 2", "-nan", "0x10", "1_000")] bad: &str,
    ) {
        assert!(bad.parse::<Numeric>().is_err(), "{bad}");
    }

    #[test]
    fn division_uses_postgres_result_scale() {
        assert_eq!(
            n("1").div(&n("3")).unwrap().to_string(),
            "0.33333333333333333333"
        );
        assert_eq!(
            n("10").div(&n("4")).unwrap().to_string(),
            "2.5000000000000000"
        );
        assert_eq!(
            n("2").div(&n("3")).unwrap().to_string(),
            "0.66666666666666666667"
        );
        assert_eq!(
            n("-2").div(&n("3")).unwrap().to_string(),
            "-0.66666666666666666667"
        );
        assert_eq!(
            n("1.000").div(&n("8")).unwrap().to_string(),
            "0.12500000000000000000"
        );
        assert_eq!(
            n("123456789").div(&n("1")).unwrap().to_string(),
            "123456789.000000000000"
        );
        assert!(n("1").div(&n("0.00")).is_none());
    }

    #[test]
    fn remainder_and_truncated_division() {
        assert_eq!(n("-7").rem(&n("2")).unwrap().to_string(), "-1");
        assert_eq!(n("7.5").rem(&n("2")).unwrap().to_string(), "1.5");
        assert_eq!(n("-7").div_trunc(&n("2")).unwrap().to_string(), "-3");
    }

    #[test]
    fn orders_special_values_like_postgres() {
        assert!(n("NaN") > n("Infinity"));
        assert!(n("Infinity") > n("1e100"));
        assert!(n("-Infinity") < n("-1e100"));
        assert_eq!(n("1.0").cmp(&n("1")), Ordering::Equal);
        assert_eq!(n("NaN"), n("nan"));
    }
}
