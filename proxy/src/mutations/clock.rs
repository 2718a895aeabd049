//! Clocks of last-write-wins registers: a mutation's timestamp (microseconds since the Unix
//! epoch, Postgres' own resolution) and then its client id as the tie-break.
//!
//! Plain SQL writes carry the empty client id, so at the same microsecond any mutation wins
//! over them. A timestamp too far ahead of the server is clamped to server time + max skew, so
//! a device with a broken clock cannot make a row unwritable for everyone else.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The client id of writes made with plain SQL (detected through the LWW column).
pub const PLAIN_SQL_CLIENT: &str = "";

/// A register's clock. Ordered by time, then client id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "(i64, String)", into = "(i64, String)")]
pub struct Clock {
    /// Microseconds since 1970-01-01T00:00:00Z.
    pub micros: i64,
    pub client: String,
}

impl Clock {
    pub fn new(micros: i64, client: impl Into<String>) -> Self {
        Self {
            micros,
            client: client.into(),
        }
    }

    /// The clock of a plain SQL write whose LWW column says `micros`.
    pub fn plain_sql(micros: i64) -> Self {
        Self::new(micros, PLAIN_SQL_CLIENT)
    }

    /// Whether a write with this clock replaces a register holding `current`. Equal clocks
    /// come from one client at one microsecond; the later arrival (the client's own order) wins.
    pub fn overwrites(&self, current: Option<&Clock>) -> bool {
        current.is_none_or(|current| self >= current)
    }
}

impl From<(i64, String)> for Clock {
    fn from((micros, client): (i64, String)) -> Self {
        Self { micros, client }
    }
}

impl From<Clock> for (i64, String) {
    fn from(clock: Clock) -> Self {
        (clock.micros, clock.client)
    }
}

/// Parses an RFC 3339 timestamp with a zone (`2026-11-22T10:30:00.123456Z`, `…+02:00`) into
/// microseconds since the epoch. Sub-microsecond digits are dropped.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
        .map_err(|e| {
            format!(
                "`{text}` is not an RFC 3339 timestamp with a zone, like \
                 2026-11-22T10:30:00.123Z ({e})"
            )
        })
}

/// `micros` as RFC 3339 in UTC with microseconds.
pub fn format_micros(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros).map_or_else(
        || micros.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Micros, true),
    )
}

/// The effective timestamp of a mutation: its own, or server time + `max_skew` when it is
/// further ahead than that (then also returned as the second value).
pub fn clamp(micros: i64, server_now: i64, max_skew: Duration) -> (i64, Option<i64>) {
    let skew = i64::try_from(max_skew.as_micros()).unwrap_or(i64::MAX);
    let limit = server_now.saturating_add(skew);
    if micros > limit {
        (limit, Some(limit))
    } else {
        (micros, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_order_by_time_then_client() {
        assert!(Clock::new(2, "a") > Clock::new(1, "z"));
        assert!(Clock::new(1, "b") > Clock::new(1, "a"));
        assert!(Clock::new(1, "a") > Clock::plain_sql(1));
        assert!(Clock::new(1, "a").overwrites(None));
        assert!(Clock::new(1, "a").overwrites(Some(&Clock::new(1, "a"))));
        assert!(!Clock::new(1, "a").overwrites(Some(&Clock::new(1, "b"))));
    }

    #[test]
    fn clocks_store_as_a_pair() {
        let text = serde_json::to_string(&Clock::new(5, "d")).unwrap();
        assert_eq!(text, r#"[5,"d"]"#);
        assert_eq!(
            serde_json::from_str::<Clock>(&text).unwrap(),
            Clock::new(5, "d")
        );
    }

    #[test]
    fn parses_rfc3339_with_zones_to_microseconds() {
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:01.000002Z").unwrap(),
            1_000_002
        );
        assert_eq!(
            parse_timestamp("1970-01-01T01:00:00+01:00").unwrap(),
            0,
            "offset applied"
        );
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00.0000019Z").unwrap(),
            1,
            "nanoseconds dropped"
        );
        assert!(parse_timestamp("2026-11-22T10:30:00").is_err(), "no zone");
        assert!(parse_timestamp("yesterday").is_err());
        assert_eq!(format_micros(1_000_002), "1970-01-01T00:00:01.000002Z");
    }

    #[test]
    fn timestamps_beyond_the_skew_are_clamped() {
        let skew = Duration::from_secs(60);
        assert_eq!(clamp(10, 0, skew), (10, None));
        assert_eq!(clamp(60_000_000, 0, skew), (60_000_000, None));
        assert_eq!(clamp(60_000_001, 0, skew), (60_000_000, Some(60_000_000)));
    }
}
