//! Per-token limits: new shapes per minute, and live (long-poll or SSE) connections at once.
//! A token over a limit gets 429 with `retry-after`; other tokens are not affected.
//!
//! Tokens are known by a hash of their text. The state is a counter per token seen recently:
//! entries of idle tokens are dropped once the table grows, so memory stays bounded by the
//! number of tokens active in the last minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries kept before idle ones are dropped.
const PRUNE_ABOVE: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);

/// A limit was reached: try again after `retry_after` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub message: String,
    pub retry_after: u64,
}

/// A token bucket refilled continuously: `per_minute` new shapes a minute, bursts up to that.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct Limits {
    new_shapes_per_minute: u32,
    live_per_token: u32,
    buckets: Mutex<HashMap<u64, Bucket>>,
    live: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Limits {
    /// `0` disables a limit.
    pub fn new(new_shapes_per_minute: u32, live_per_token: u32) -> Self {
        Self {
            new_shapes_per_minute,
            live_per_token,
            buckets: Mutex::default(),
            live: Arc::default(),
        }
    }

    /// Counts a new shape made for `token`, or refuses it.
    pub fn admit_new_shape(&self, token: u64) -> Result<(), Limited> {
        self.admit_new_shape_at(token, Instant::now())
    }

    fn admit_new_shape_at(&self, token: u64, now: Instant) -> Result<(), Limited> {
        let capacity = f64::from(self.new_shapes_per_minute);
        if self.new_shapes_per_minute == 0 {
            return Ok(());
        }
        let per_sec = capacity / WINDOW.as_secs_f64();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            // A bucket full again is the same as no bucket.
            buckets.retain(|_, b| now.duration_since(b.at) < WINDOW);
        }
        let bucket = buckets.entry(token).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / per_sec).ceil();
        Err(Limited {
            message: format!(
                "this token made {} new shapes in the last minute, the most allowed \
                 (--max-new-shapes-per-minute); existing shapes still work",
                self.new_shapes_per_minute
            ),
            // whole seconds, at least one
            retry_after: (wait as u64).max(1),
        })
    }

    /// Holds one live connection of `token` until the guard is dropped, or refuses it.
    pub fn live_connection(&self, token: u64) -> Result<LiveGuard, Limited> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let count = live.entry(token).or_insert(0);
        if self.live_per_token != 0 && *count >= self.live_per_token {
            return Err(Limited {
                message: format!(
                    "this token has {} live connections open, the most allowed \
                     (--max-live-connections-per-token)",
                    self.live_per_token
                ),
                retry_after: 1,
            });
        }
        *count += 1;
        Ok(LiveGuard {
            token,
            live: self.live.clone(),
        })
    }
}

/// One open live connection; dropping it (the response ended or the client left) frees it.
#[derive(Debug)]
pub struct LiveGuard {
    token: u64,
    live: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = live.get_mut(&self.token) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                live.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_shapes_refill_over_the_minute_and_tokens_are_independent() {
        let limits = Limits::new(3, 0);
        let t0 = Instant::now();
        for _ in 0..3 {
            limits.admit_new_shape_at(1, t0).unwrap();
        }
        let refused = limits.admit_new_shape_at(1, t0).unwrap_err();
        assert_eq!(refused.retry_after, 20);
        limits.admit_new_shape_at(2, t0).unwrap();
        limits
            .admit_new_shape_at(1, t0 + Duration::from_secs(20))
            .unwrap();
        assert!(
            limits
                .admit_new_shape_at(1, t0 + Duration::from_secs(20))
                .is_err()
        );
    }

    #[test]
    fn live_connections_are_freed_when_their_guard_drops() {
        let limits = Limits::new(0, 2);
        let a = limits.live_connection(7).unwrap();
        let _b = limits.live_connection(7).unwrap();
        assert!(limits.live_connection(7).is_err());
        let _other = limits.live_connection(8).unwrap();
        drop(a);
        let _c = limits.live_connection(7).unwrap();
    }

    #[test]
    fn zero_means_unlimited() {
        let limits = Limits::new(0, 0);
        let guards: Vec<_> = (0..100)
            .map(|_| limits.live_connection(1).unwrap())
            .collect();
        for _ in 0..100 {
            limits.admit_new_shape(1).unwrap();
        }
        drop(guards);
    }
}
