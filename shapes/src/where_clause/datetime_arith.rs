//! Date and time arithmetic as Postgres does it: `date ± integer`, `date - date`,
//! `timestamp[tz] ± interval`.
//!
//! Where Postgres raises an error (a result out of range, `infinity - date`) the result is
//! NULL instead, as for division by zero: a shape must never fail. The rebuilt SQL guards
//! each operation so that Postgres takes the same branch ([`super::rebuild`]):
//! - `date ± n` is NULL unless `date - '2000-01-01' ± n` lies in Postgres' date range;
//! - `date - date` is NULL unless both dates are finite;
//! - `timestamp ± interval` (a constant interval) is NULL unless the timestamp lies in
//!   [`IntervalGuard`]'s range, which leaves room for the largest move the interval can make,
//!   so no intermediate step of Postgres' computation leaves the timestamp range either.
//!
//! `timestamptz` arithmetic is done in UTC, the time zone of every proxy connection.

use super::datetime::Interval;

const USECS_PER_DAY: i64 = 86_400_000_000;
/// 1970-01-01 − 2000-01-01 in days: dates count from 1970, Postgres' from 2000.
pub(crate) const DAYS_1970_TO_2000: i64 = 10_957;
/// The first and last dates Postgres accepts, in days from 1970-01-01.
pub(crate) const MIN_DATE: i64 = -2_440_588;
pub(crate) const MAX_DATE: i64 = 2_145_042_905;
/// The first timestamp Postgres accepts (4714-11-24 BC) and the first it does not
/// (294277-01-01), in microseconds from 2000-01-01.
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

/// `±infinity` dates and timestamps are the extreme `i64` values.
fn finite(v: i64) -> bool {
    v != i64::MIN && v != i64::MAX
}

/// `date + days` (`days` negated for `-`); `None` = NULL where Postgres raises an error.
pub fn date_plus_days(date: i64, days: i64) -> Option<i64> {
    if !finite(date) {
        return Some(date);
    }
    let r = date.checked_add(days)?;
    (MIN_DATE..=MAX_DATE).contains(&r).then_some(r)
}

/// `a - b` in days; `None` where Postgres raises "cannot subtract infinite dates".
pub fn date_diff(a: i64, b: i64) -> Option<i64> {
    (finite(a) && finite(b)).then(|| a - b)
}

/// The timestamps `timestamp ± interval` is computed for: outside, NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalGuard {
    pub lowest: i64,
    pub highest: i64,
}

impl IntervalGuard {
    /// The range that leaves room for the largest move `iv` can make in each direction (a
    /// month moves a date by at most 31 days), so no step of the computation leaves the
    /// timestamp range. Within that much of either end of the range, a result Postgres could
    /// still compute is NULL too.
    pub fn for_interval(iv: &Interval) -> IntervalGuard {
        let day = i128::from(USECS_PER_DAY);
        let parts = [
            i128::from(iv.months) * 31 * day,
            i128::from(iv.days) * day,
            i128::from(iv.micros),
        ];
        let forward: i128 = parts.iter().map(|p| (*p).max(0)).sum();
        let backward: i128 = parts.iter().map(|p| (-*p).max(0)).sum();
        let lowest = i128::from(MIN_TIMESTAMP) + backward;
        let highest = i128::from(END_TIMESTAMP) - 1 - forward;
        if lowest > highest {
            // nothing finite qualifies: an empty range of valid timestamps
            return IntervalGuard {
                lowest: END_TIMESTAMP - 1,
                highest: MIN_TIMESTAMP,
            };
        }
        IntervalGuard {
            lowest: i64::try_from(lowest).unwrap_or(i64::MAX),
            highest: i64::try_from(highest).unwrap_or(i64::MIN),
        }
    }

    fn admits(&self, ts: i64) -> bool {
        (self.lowest..=self.highest).contains(&ts)
    }
}

/// `ts + iv` (pass `iv.negated()` for `-`), as Postgres' `timestamp_pl_interval` computes it:
/// months first (the day clamped to the end of the month), then days, then microseconds.
pub fn timestamp_plus_interval(ts: i64, iv: &Interval, guard: &IntervalGuard) -> Option<i64> {
    if !finite(ts) {
        return Some(ts);
    }
    if !guard.admits(ts) {
        return None;
    }
    let mut days = ts.div_euclid(USECS_PER_DAY) + DAYS_1970_TO_2000;
    let time = ts.rem_euclid(USECS_PER_DAY);
    if iv.months != 0 {
        let (y, m, d) = super::datetime::civil_from_days(days);
        let months = i64::from(m) - 1 + i64::from(iv.months);
        let year = y + months.div_euclid(12);
        let month = (months.rem_euclid(12) + 1) as u32;
        let day = d.min(super::datetime::days_in_month(year, month));
        days = super::datetime::days_from_civil(year, month, day);
    }
    days += i64::from(iv.days);
    let result = (days - DAYS_1970_TO_2000) * USECS_PER_DAY + time + iv.micros;
    Some(result)
}

/// `-iv`, as Postgres negates an interval for `timestamp - interval`.
pub fn negated(iv: &Interval) -> Interval {
    Interval {
        months: iv.months.wrapping_neg(),
        days: iv.days.wrapping_neg(),
        micros: iv.micros.wrapping_neg(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::where_clause::datetime::{format_timestamp, parse_interval, parse_timestamp};

    fn plus(ts: &str, iv: &str) -> Option<String> {
        let iv = parse_interval(iv).unwrap();
        let ts = parse_timestamp(ts, false).unwrap();
        timestamp_plus_interval(ts, &iv, &IntervalGuard::for_interval(&iv))
            .map(|t| format_timestamp(t, false))
    }

    #[test]
    fn months_clamp_to_the_end_of_the_month() {
        assert_eq!(
            plus("2024-01-31 10:00:00", "P1M").as_deref(),
            Some("2024-02-29 10:00:00")
        );
        assert_eq!(
            plus("2024-03-31 00:00:00", "P-1M1D").as_deref(),
            Some("2024-03-01 00:00:00")
        );
        assert_eq!(
            plus("2023-12-31 23:00:00", "PT2H").as_deref(),
            Some("2024-01-01 01:00:00")
        );
    }

    #[test]
    fn out_of_range_is_null_and_infinity_stays() {
        assert_eq!(date_plus_days(MAX_DATE, 1), None);
        assert_eq!(date_plus_days(i64::MAX, 1), Some(i64::MAX));
        assert_eq!(date_diff(i64::MIN, 0), None);
        assert_eq!(plus("294276-12-31 00:00:00", "P1D"), None);
    }
}
