//! `float4`/`float8` text as Postgres reads and writes it (with `extra_float_digits ≥ 1`:
//! shortest digits that read back exactly; fixed notation for decimal exponents in
//! `-4..15` (float8) or `-4..6` (float4), else `1.5e+20`).

use std::cmp::Ordering;

/// Why a text is not a float of the expected width.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FloatError {
    #[error("invalid input syntax for type {ty}: \"{text}\"")]
    Syntax { ty: &'static str, text: String },
    #[error("\"{text}\" is out of range for type {ty}")]
    OutOfRange { ty: &'static str, text: String },
}

/// Parses as `float8in`/`float4in` (`single`): decimal or exponent notation, `NaN`,
/// `[+-]Infinity`, `[+-]inf`; overflow and underflow to zero are errors.
pub fn parse_float(text: &str, single: bool) -> Result<f64, FloatError> {
    let ty = if single { "real" } else { "double precision" };
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let lower = t.to_ascii_lowercase();
    let special = match lower.as_str() {
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    };
    if let Some(v) = special {
        return Ok(v);
    }
    let syntax = || FloatError::Syntax {
        ty,
        text: text.to_owned(),
    };
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let mantissa_ok = !mantissa.is_empty()
        && mantissa != "."
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let exp_ok = exp.is_none_or(|e| {
        let d = e.strip_prefix(['+', '-']).unwrap_or(e);
        !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
    });
    if !mantissa_ok || !exp_ok {
        return Err(syntax());
    }
    let value = if single {
        f64::from(t.parse::<f32>().map_err(|_| syntax())?)
    } else {
        t.parse::<f64>().map_err(|_| syntax())?
    };
    let nonzero_digits = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if value.is_infinite() || (value == 0.0 && nonzero_digits) {
        return Err(FloatError::OutOfRange {
            ty,
            text: text.to_owned(),
        });
    }
    Ok(value)
}

/// Formats as `float8out`/`float4out` do with `extra_float_digits = 1`.
///
/// ```
/// use shapes::where_clause::float::format_float;
/// assert_eq!(format_float(0.1, false), "0.1");
/// assert_eq!(format_float(1e15, false), "1e+15");
/// assert_eq!(format_float(123456.0, false), "123456");
/// assert_eq!(format_float(1234567.0, true), "1.234567e+06");
/// assert_eq!(format_float(0.0001, false), "0.0001");
/// assert_eq!(format_float(0.00001, false), "1e-05");
/// ```
pub fn format_float(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e-7"
    let sci = if single {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    let upper = if single { 6 } else { 15 };
    if (-4..upper).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}e{esign}{:02}", exp.abs())
    }
}

/// Postgres' float order: NaN is greater than everything and equal to itself; -0 = 0.
pub fn cmp_float(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_float_out() {
        assert_eq!(format_float(1e-5, false), "1e-05");
        assert_eq!(format_float(-1.5e300, false), "-1.5e+300");
        assert_eq!(format_float(f64::MAX, false), "1.7976931348623157e+308");
        assert_eq!(format_float(100.0, false), "100");
        assert_eq!(format_float(f64::from(0.1f32), true), "0.1");
        assert_eq!(
            format_float(f64::from(3.4028235e38f32), true),
            "3.4028235e+38"
        );
        assert_eq!(format_float(123456789012345.0, false), "123456789012345");
        assert_eq!(format_float(-0.0, false), "-0");
    }

    #[test]
    fn parses_like_float_in() {
        assert_eq!(parse_float(" 1.5 ", false).unwrap(), 1.5);
        assert!(parse_float("-inf", false).unwrap().is_infinite());
        assert!(parse_float("NaN", false).unwrap().is_nan());
        assert!(parse_float("1e400", false).is_err());
        assert!(parse_float("1e-400", false).is_err());
        assert!(parse_float("1e39", true).is_err());
        assert!(parse_float("0x10", false).is_err());
        assert!(parse_float("1e", false).is_err());
        assert_eq!(parse_float("0.1", true).unwrap(), f64::from(0.1f32));
    }

    #[test]
    fn nan_sorts_last_and_equals_itself() {
        assert_eq!(cmp_float(f64::NAN, f64::NAN), Ordering::Equal);
        assert_eq!(cmp_float(f64::NAN, f64::INFINITY), Ordering::Greater);
        assert_eq!(cmp_float(-0.0, 0.0), Ordering::Equal);
    }
}
