//! Caching headers of shape responses: `electric-cursor`, `cache-control`, `etag`.
//!
//! Responses for a (handle, offset) never change, so shared caches and CDNs can serve them.
//! Live requests carry a cursor that changes every 20 seconds, so a cache collapses the live
//! requests of many clients into one without serving a stale answer for long.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shapes::handle::Handle;
use shapes::offset::Offset;

/// 2024-10-09T00:00:00Z in Unix seconds.
const CURSOR_EPOCH: u64 = 1_728_432_000;
const CURSOR_STEP: u64 = 20;

/// The `electric-cursor` for a live response: seconds since 2024-10-09 rounded up to a
/// multiple of 20. When the answer leaves the client at the offset it asked from (a long-poll
/// that timed out) and that is not past the client's cursor: the client's cursor plus one, so
/// its next URL is new (a cache would otherwise answer it from itself).
///
/// Deterministic on purpose: every client that asks one URL gets one answer, so their next
/// URLs stay one URL a cache can collapse, even when the cache let two of them through to the
/// proxy. A random cursor split such clients into groups that never met again: behind nginx,
/// 10,000 long-polling clients grew from one origin request per change to hundreds.
pub fn next_cursor(request_cursor: Option<u64>, offset_moved: bool) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(CURSOR_EPOCH);
    cursor_at(now, request_cursor.filter(|_| !offset_moved))
}

fn cursor_at(now_secs: u64, request_cursor: Option<u64>) -> u64 {
    let since = now_secs.saturating_sub(CURSOR_EPOCH);
    let cursor = since.div_ceil(CURSOR_STEP) * CURSOR_STEP;
    match request_cursor {
        Some(previous) if cursor <= previous => previous + 1,
        _ => cursor,
    }
}

/// How long caches may keep a non-live response after the first (`--cache-max-age`,
/// `--cache-stale-age`; Electric's `ELECTRIC_CACHE_MAX_AGE`/`_STALE_AGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchupAges {
    pub max_age: Duration,
    pub stale_age: Duration,
}

impl CatchupAges {
    pub fn of(settings: &crate::config::ServeConfig) -> Self {
        Self {
            max_age: settings.cache_max_age,
            stale_age: settings.cache_stale_age,
        }
    }
}

/// Which kind of response, for `cache-control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// `offset=-1`: the first snapshot chunk.
    Initial,
    /// Any other non-live response.
    Catchup(CatchupAges),
    LongPoll,
    Sse,
}

/// `cache-control` for a successful shape response. Shapes that depend on a user's claims
/// are `private`: shared caches must not hand them to someone else.
pub fn cache_control(kind: CacheKind, private: bool) -> String {
    let scope = if private { "private" } else { "public" };
    match kind {
        CacheKind::Initial => {
            format!("{scope}, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746")
        }
        CacheKind::Catchup(ages) => format!(
            "{scope}, max-age={}, stale-while-revalidate={}",
            ages.max_age.as_secs(),
            ages.stale_age.as_secs()
        ),
        CacheKind::LongPoll => format!("{scope}, max-age=5, stale-while-revalidate=5"),
        CacheKind::Sse => format!("{scope}, max-age=59"),
    }
}

/// `cache-control` for a subset snapshot: made for one request, so never reused without
/// asking; for a shape that depends on the caller's claims also `private`, as the shape's
/// own responses are.
pub fn subset_cache_control(private: bool) -> &'static str {
    if private {
        "private, no-cache"
    } else {
        "no-cache"
    }
}

/// For a shape that depends on the caller's claims: besides `private` (no shared cache may
/// keep it), a browser's own cache must not hand one user's response to the next user of
/// the same browser for the same URL.
pub fn vary_on_credentials(headers: &mut axum::http::HeaderMap) {
    headers.append(
        axum::http::header::VARY,
        axum::http::HeaderValue::from_static("authorization"),
    );
}

/// `"<handle>:<request offset>:<response offset>"`.
pub fn etag(handle: &Handle, request: &str, response: Offset) -> String {
    format!("\"{handle}:{request}:{response}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_up_to_twenty_seconds_and_never_repeat_the_clients() {
        assert_eq!(cursor_at(CURSOR_EPOCH + 1, None), 20);
        assert_eq!(cursor_at(CURSOR_EPOCH + 20, None), 20);
        assert_eq!(cursor_at(CURSOR_EPOCH + 21, None), 40);
        assert_eq!(cursor_at(CURSOR_EPOCH + 21, Some(20)), 40);
        assert_eq!(cursor_at(CURSOR_EPOCH + 21, Some(40)), 41);
        assert_eq!(cursor_at(CURSOR_EPOCH + 21, Some(1000)), 1001);
        // An answer that moves the offset makes a new URL by itself: the time's cursor,
        // whatever the client sent, so clients that split meet again.
        let far = 10_000_000_000;
        assert!(next_cursor(Some(far), true) < far);
        assert_eq!(next_cursor(Some(far), false), far + 1);
    }

    #[test]
    fn cache_control_values_match_the_protocol() {
        assert_eq!(
            cache_control(CacheKind::Initial, false),
            "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
        );
        let defaults = CatchupAges {
            max_age: Duration::from_secs(60),
            stale_age: Duration::from_secs(300),
        };
        assert_eq!(
            cache_control(CacheKind::Catchup(defaults), false),
            "public, max-age=60, stale-while-revalidate=300"
        );
        let configured = CatchupAges {
            max_age: Duration::from_secs(5),
            stale_age: Duration::from_secs(0),
        };
        assert_eq!(
            cache_control(CacheKind::Catchup(configured), true),
            "private, max-age=5, stale-while-revalidate=0"
        );
        assert_eq!(
            cache_control(CacheKind::LongPoll, false),
            "public, max-age=5, stale-while-revalidate=5"
        );
        assert_eq!(cache_control(CacheKind::Sse, true), "private, max-age=59");
        assert_eq!(subset_cache_control(false), "no-cache");
        assert_eq!(subset_cache_control(true), "private, no-cache");
    }
}
