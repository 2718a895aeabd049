//! `date`, `time`, `timestamp`, `timestamptz` and `interval`: reading Postgres' ISO text
//! output (`DateStyle='ISO, DMY'`, `TimeZone=UTC`, `IntervalStyle=iso_8601`), reading the
//! unambiguous literal forms a `where` may use, and writing a canonical form that Postgres
//! reads back identically whatever the session settings.
//!
//! Dates are days from 1970-01-01 in the proleptic Gregorian calendar (year 0 is 1 BC, as in
//! Postgres); timestamps are microseconds from 2000-01-01 00:00 (UTC for `timestamptz`);
//! `±infinity` are the extreme `i64` values, which order them as Postgres does.

/// Why a text is not a date/time value of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateTimeError {
    #[error("invalid input syntax for type {ty}: \"{text}\" (use ISO 8601, e.g. {example})")]
    Syntax {
        ty: &'static str,
        text: String,
        example: &'static str,
    },
    #[error("\"{0}\" is not deterministic and cannot be used in a shape")]
    NotDeterministic(String),
    #[error("{ty} out of range: \"{text}\"")]
    OutOfRange { ty: &'static str, text: String },
}

const USECS_PER_DAY: i64 = 86_400_000_000;
const USECS_PER_SEC: i64 = 1_000_000;
/// Timestamps count from 2000-01-01, as Postgres does (from 1970 the last one overflows i64).
const PG_EPOCH_DAYS: i64 = 10_957;
/// 4714-11-24 BC (Julian day 0), the first date Postgres accepts.
const MIN_DATE_DAYS: i64 = -2_440_588;
/// 5874897-12-31, the last date.
const MAX_DATE_DAYS: i64 = 2_145_042_905;
/// 294276-12-31 23:59:59.999999 is the last timestamp.
const MAX_TS_DAYS: i64 = 106_762_939;

/// Days from 1970-01-01 of a proleptic Gregorian (year, month, day); year 0 = 1 BC.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub(crate) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// A cursor over ASCII text.
struct Scan<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn new(s: &'a str) -> Self {
        Scan {
            s: s.as_bytes(),
            at: 0,
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let start = self.at;
        while self.at - start < max && self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let n = self.at - start;
        if n < min {
            return None;
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).ok()?;
        Some((text.parse().ok()?, n))
    }
    fn rest(&self) -> &'a [u8] {
        &self.s[self.at..]
    }
    fn done(&self) -> bool {
        self.at == self.s.len()
    }
}

fn special_word(text: &str) -> Option<Result<i64, DateTimeError>> {
    match text.trim().to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => Some(Ok(i64::MAX)),
        "-infinity" => Some(Ok(i64::MIN)),
        w @ ("now" | "today" | "tomorrow" | "yesterday" | "current_date" | "current_timestamp") => {
            Some(Err(DateTimeError::NotDeterministic(w.to_owned())))
        }
        _ => None,
    }
}

/// `YYYY-MM-DD`, returning days; BC handled by the caller.
fn scan_date(sc: &mut Scan<'_>) -> Option<(i64, u32, u32)> {
    let (y, _) = sc.digits(4, 9)?;
    if !sc.eat(b'-') {
        return None;
    }
    let (m, _) = sc.digits(2, 2)?;
    if !sc.eat(b'-') {
        return None;
    }
    let (d, _) = sc.digits(2, 2)?;
    let (m, d) = (u32::try_from(m).ok()?, u32::try_from(d).ok()?);
    if y == 0 || !(1..=12).contains(&m) {
        return None;
    }
    Some((y, m, d))
}

/// `HH:MM[:SS[.ffffff]]` → microseconds since midnight (24:00:00 allowed).
fn scan_time(sc: &mut Scan<'_>) -> Option<i64> {
    let (h, _) = sc.digits(2, 2)?;
    if !sc.eat(b':') {
        return None;
    }
    let (mi, _) = sc.digits(2, 2)?;
    let (mut s, mut us) = (0, 0);
    if sc.eat(b':') {
        s = sc.digits(2, 2)?.0;
        if sc.eat(b'.') {
            let (frac, n) = sc.digits(1, 6)?;
            us = frac * 10i64.pow(6 - n as u32);
        }
    }
    if h > 24 || mi > 59 || s > 59 || (h == 24 && (mi, s, us) != (0, 0, 0)) {
        return None;
    }
    Some(((h * 60 + mi) * 60 + s) * USECS_PER_SEC + us)
}

/// `+HH[:MM[:SS]]`, `-HH…` or `Z` → seconds east of UTC.
fn scan_offset(sc: &mut Scan<'_>) -> Option<i64> {
    if sc.eat(b'Z') || sc.eat(b'z') {
        return Some(0);
    }
    let sign = if sc.eat(b'+') {
        1
    } else if sc.eat(b'-') {
        -1
    } else {
        return None;
    };
    let (h, _) = sc.digits(2, 2)?;
    let mut secs = h * 3600;
    if sc.eat(b':') {
        secs += sc.digits(2, 2)?.0 * 60;
        if sc.eat(b':') {
            secs += sc.digits(2, 2)?.0;
        }
    }
    if h > 15 {
        return None;
    }
    Some(sign * secs)
}

fn scan_bc(sc: &mut Scan<'_>) -> bool {
    if sc.rest() == b" BC" || sc.rest() == b" bc" {
        sc.at = sc.s.len();
        true
    } else {
        false
    }
}

fn civil_days(y: i64, m: u32, d: u32, bc: bool) -> Option<i64> {
    if d == 0 || d > days_in_month(if bc { 1 - y } else { y }, m) {
        return None;
    }
    Some(days_from_civil(if bc { 1 - y } else { y }, m, d))
}

/// Parses a `date` (`2024-02-29`, `0044-03-15 BC`, `infinity`).
///
/// ```
/// use shapes::where_clause::datetime::{parse_date, format_date};
/// let d = parse_date("2024-02-29").unwrap();
/// assert_eq!(format_date(d), "2024-02-29");
/// assert!(parse_date("2023-02-29").is_err());
/// ```
pub fn parse_date(text: &str) -> Result<i64, DateTimeError> {
    if let Some(special) = special_word(text) {
        return special;
    }
    let err = || DateTimeError::Syntax {
        ty: "date",
        text: text.to_owned(),
        example: "'2024-01-31'",
    };
    let t = text.trim();
    let mut sc = Scan::new(t);
    let (y, m, d) = scan_date(&mut sc).ok_or_else(err)?;
    let bc = scan_bc(&mut sc);
    if !sc.done() {
        return Err(err());
    }
    let days = civil_days(y, m, d, bc).ok_or_else(err)?;
    if !(MIN_DATE_DAYS..=MAX_DATE_DAYS).contains(&days) {
        return Err(DateTimeError::OutOfRange {
            ty: "date",
            text: text.to_owned(),
        });
    }
    Ok(days)
}

/// Parses a `time` (`13:45:00.5`).
pub fn parse_time(text: &str) -> Result<i64, DateTimeError> {
    let mut sc = Scan::new(text.trim());
    match scan_time(&mut sc) {
        Some(us) if sc.done() => Ok(us),
        _ => Err(DateTimeError::Syntax {
            ty: "time",
            text: text.to_owned(),
            example: "'13:45:00'",
        }),
    }
}

/// Parses a `timestamp` (`with_tz = false`; an offset, if any, is ignored as Postgres does) or
/// a `timestamptz` (an offset is applied; none means UTC) into microseconds.
pub fn parse_timestamp(text: &str, with_tz: bool) -> Result<i64, DateTimeError> {
    if let Some(special) = special_word(text) {
        return special;
    }
    let ty = if with_tz { "timestamptz" } else { "timestamp" };
    let err = || DateTimeError::Syntax {
        ty,
        text: text.to_owned(),
        example: "'2024-01-31 13:45:00+00'",
    };
    let mut sc = Scan::new(text.trim());
    let (y, m, d) = scan_date(&mut sc).ok_or_else(err)?;
    let mut micros = 0;
    let mut offset = 0;
    if sc.eat(b' ') || sc.eat(b'T') || sc.eat(b't') {
        micros = scan_time(&mut sc).ok_or_else(err)?;
        if !sc.done() && sc.rest() != b" BC" && sc.rest() != b" bc" {
            offset = scan_offset(&mut sc).ok_or_else(err)?;
        }
    }
    let bc = scan_bc(&mut sc);
    if !sc.done() {
        return Err(err());
    }
    let days = civil_days(y, m, d, bc).ok_or_else(err)?;
    let offset = if with_tz { offset } else { 0 };
    let days = days - PG_EPOCH_DAYS;
    let value = i128::from(days) * i128::from(USECS_PER_DAY) + i128::from(micros)
        - i128::from(offset) * i128::from(USECS_PER_SEC);
    let range = i128::from(MIN_DATE_DAYS - PG_EPOCH_DAYS) * i128::from(USECS_PER_DAY)
        ..i128::from(MAX_TS_DAYS + 1 - PG_EPOCH_DAYS) * i128::from(USECS_PER_DAY);
    if !range.contains(&value) {
        return Err(DateTimeError::OutOfRange {
            ty,
            text: text.to_owned(),
        });
    }
    i64::try_from(value).map_err(|_| DateTimeError::OutOfRange {
        ty,
        text: text.to_owned(),
    })
}

fn format_ymd(days: i64) -> (String, bool) {
    let (y, m, d) = civil_from_days(days);
    let (year, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
    (format!("{year:04}-{m:02}-{d:02}"), bc)
}

/// A date as Postgres' ISO output prints it.
pub fn format_date(days: i64) -> String {
    match days {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        _ => {
            let (ymd, bc) = format_ymd(days);
            if bc { format!("{ymd} BC") } else { ymd }
        }
    }
}

fn format_clock(micros: i64) -> String {
    let secs = micros / USECS_PER_SEC;
    let frac = micros % USECS_PER_SEC;
    let base = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        base
    } else {
        let f = format!("{frac:06}");
        format!("{base}.{}", f.trim_end_matches('0'))
    }
}

/// A time as Postgres prints it.
pub fn format_time(micros: i64) -> String {
    format_clock(micros)
}

/// A timestamp as Postgres' ISO output prints it (`+00` appended for `timestamptz` in UTC).
pub fn format_timestamp(micros: i64, with_tz: bool) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        _ => {
            let days = micros.div_euclid(USECS_PER_DAY) + PG_EPOCH_DAYS;
            let (ymd, bc) = format_ymd(days);
            let clock = format_clock(micros.rem_euclid(USECS_PER_DAY));
            let tz = if with_tz { "+00" } else { "" };
            let bc = if bc { " BC" } else { "" };
            format!("{ymd} {clock}{tz}{bc}")
        }
    }
}

/// An `interval` as Postgres holds it: months, days and microseconds, each with its own sign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl Interval {
    /// The value Postgres compares intervals by: a month counts 30 days, a day 24 hours.
    pub fn span(&self) -> i128 {
        (i128::from(self.months) * 30 + i128::from(self.days)) * i128::from(USECS_PER_DAY)
            + i128::from(self.micros)
    }

    /// ISO 8601 with designators, which Postgres reads back exactly.
    pub fn to_iso(&self) -> String {
        let sign = if self.micros < 0 { "-" } else { "" };
        let abs = self.micros.unsigned_abs();
        let secs = abs / 1_000_000;
        let frac = abs % 1_000_000;
        let frac = if frac == 0 {
            String::new()
        } else {
            format!(".{}", format!("{frac:06}").trim_end_matches('0'))
        };
        format!("P{}M{}DT{sign}{secs}{frac}S", self.months, self.days)
    }
}

/// One `<number><designator>` of an ISO 8601 interval.
fn iso_field(sc: &mut Scan<'_>) -> Option<(bool, i64, i64, u8)> {
    let neg = if sc.eat(b'-') {
        true
    } else {
        sc.eat(b'+');
        false
    };
    let (whole, _) = sc.digits(1, 18)?;
    let mut frac_us = 0;
    if sc.eat(b'.') {
        let (f, n) = sc.digits(1, 6)?;
        frac_us = f * 10i64.pow(6 - n as u32);
    }
    let unit = sc.peek()?;
    sc.at += 1;
    Some((neg, whole, frac_us, unit.to_ascii_uppercase()))
}

fn parse_iso_interval(text: &str) -> Option<Interval> {
    let mut sc = Scan::new(text);
    if !(sc.eat(b'P') || sc.eat(b'p')) || sc.done() {
        return None;
    }
    let mut iv = Interval {
        months: 0,
        days: 0,
        micros: 0,
    };
    let mut in_time = false;
    let mut any = false;
    while !sc.done() {
        if !in_time && (sc.eat(b'T') || sc.eat(b't')) {
            in_time = true;
            continue;
        }
        let (neg, whole, frac, unit) = iso_field(&mut sc)?;
        any = true;
        let sign = if neg { -1 } else { 1 };
        if frac != 0 && !(in_time && unit == b'S') {
            return None; // fractional years, days… are not accepted
        }
        let w = sign * whole;
        match (in_time, unit) {
            (false, b'Y') => {
                iv.months = iv
                    .months
                    .checked_add(i32::try_from(w.checked_mul(12)?).ok()?)?
            }
            (false, b'M') => iv.months = iv.months.checked_add(i32::try_from(w).ok()?)?,
            (false, b'W') => {
                iv.days = iv
                    .days
                    .checked_add(i32::try_from(w.checked_mul(7)?).ok()?)?
            }
            (false, b'D') => iv.days = iv.days.checked_add(i32::try_from(w).ok()?)?,
            (true, b'H') => {
                iv.micros = iv
                    .micros
                    .checked_add(w.checked_mul(3_600 * USECS_PER_SEC)?)?
            }
            (true, b'M') => {
                iv.micros = iv.micros.checked_add(w.checked_mul(60 * USECS_PER_SEC)?)?
            }
            (true, b'S') => {
                iv.micros = iv
                    .micros
                    .checked_add(w.checked_mul(USECS_PER_SEC)?)?
                    .checked_add(sign * frac)?
            }
            _ => return None,
        }
    }
    any.then_some(iv)
}

/// `1 day 2 hours`, `-3 months`: integer quantities with Postgres' unit names.
fn parse_verbose_interval(text: &str) -> Option<Interval> {
    let mut iv = Interval {
        months: 0,
        days: 0,
        micros: 0,
    };
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return None;
    }
    for pair in words.chunks(2) {
        let n: i64 = pair[0].parse().ok()?;
        let unit = pair[1].to_ascii_lowercase();
        let unit = match unit.as_str() {
            "years" | "yrs" | "y" => "year",
            "months" | "mons" => "month",
            "weeks" | "w" => "week",
            "days" | "d" => "day",
            "hours" | "hrs" | "h" => "hour",
            "minutes" | "mins" | "m" => "minute",
            "seconds" | "secs" | "s" => "second",
            "milliseconds" | "ms" | "msecs" => "millisecond",
            "microseconds" | "us" | "usecs" => "microsecond",
            other => other,
        };
        let add_months = |iv: &mut Interval, k: i64| -> Option<()> {
            iv.months = iv
                .months
                .checked_add(i32::try_from(n.checked_mul(k)?).ok()?)?;
            Some(())
        };
        match unit {
            "year" | "yr" => add_months(&mut iv, 12)?,
            "month" | "mon" => add_months(&mut iv, 1)?,
            "week" => {
                iv.days = iv
                    .days
                    .checked_add(i32::try_from(n.checked_mul(7)?).ok()?)?
            }
            "day" => iv.days = iv.days.checked_add(i32::try_from(n).ok()?)?,
            _ => {
                let per = match unit {
                    "hour" | "hr" => 3_600 * USECS_PER_SEC,
                    "minute" | "min" => 60 * USECS_PER_SEC,
                    "second" | "sec" => USECS_PER_SEC,
                    "millisecond" | "msec" => 1_000,
                    "microsecond" | "usec" => 1,
                    _ => return None,
                };
                iv.micros = iv.micros.checked_add(n.checked_mul(per)?)?;
            }
        }
    }
    Some(iv)
}

/// Parses an interval: ISO 8601 (`P1Y2M3DT4H5M6.5S`, what values arrive as) or integer
/// quantities with units (`1 day 2 hours`).
///
/// ```
/// use shapes::where_clause::datetime::parse_interval;
/// assert_eq!(parse_interval("P1M").unwrap().span(), parse_interval("30 days").unwrap().span());
/// ```
pub fn parse_interval(text: &str) -> Result<Interval, DateTimeError> {
    let t = text.trim();
    parse_iso_interval(t)
        .or_else(|| parse_verbose_interval(t))
        .ok_or_else(|| DateTimeError::Syntax {
            ty: "interval",
            text: text.to_owned(),
            example: "'P1DT2H' or '1 day 2 hours'",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn dates_including_bc_and_leap_days_print_as_read(
        #[values(
            "2024-02-29",
            "0044-03-15 BC",
            "0001-01-01",
            "0001-12-31 BC",
            "10000-01-01"
        )]
        d: &str,
    ) {
        assert_eq!(format_date(parse_date(d).unwrap()), d);
    }

    #[test]
    fn reads_dates_within_postgres_range_only() {
        assert_eq!(parse_date("1970-01-01").unwrap(), 0);
        assert!(parse_date("1900-02-29").is_err());
        assert!(parse_date("2000-02-30").is_err());
        assert!(parse_date("today").is_err());
        assert!(parse_date("4714-11-23 BC").is_err());
        assert!(parse_date("4714-11-24 BC").is_ok());
        assert!(parse_date("5874897-12-31").is_ok());
        assert!(parse_date("5874898-01-01").is_err());
        assert!(parse_timestamp("294276-12-31 23:59:59.999999", false).is_ok());
        assert!(parse_timestamp("294277-01-01 00:00:00", false).is_err());
    }

    #[test]
    fn reads_timestamps_with_offsets() {
        let a = parse_timestamp("2024-01-02 03:04:05.123456+00", true).unwrap();
        let b = parse_timestamp("2024-01-02T05:04:05.123456+02:00", true).unwrap();
        assert_eq!(a, b);
        assert_eq!(format_timestamp(a, true), "2024-01-02 03:04:05.123456+00");
        let bc = parse_timestamp("0044-03-15 12:00:00+00 BC", true).unwrap();
        assert_eq!(format_timestamp(bc, true), "0044-03-15 12:00:00+00 BC");
        assert_eq!(
            parse_timestamp("2024-01-01 10:00+05", false).unwrap(),
            parse_timestamp("2024-01-01 10:00:00", false).unwrap()
        );
        assert!(parse_timestamp("now", true).is_err());
    }

    #[test]
    fn interval_compares_by_span() {
        let iso = parse_interval("P1Y2M3DT4H5M6.5S").unwrap();
        assert_eq!(
            iso,
            Interval {
                months: 14,
                days: 3,
                micros: 14_706_500_000
            }
        );
        assert_eq!(parse_interval(&iso.to_iso()).unwrap(), iso);
        assert_eq!(parse_interval("PT-1.5S").unwrap().micros, -1_500_000);
        assert_eq!(parse_interval("-1 day 2 hours").unwrap().days, -1);
        assert!(parse_interval("P1.5Y").is_err());
    }
}
