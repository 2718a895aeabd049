//! Exponential backoff with jitter, honouring the server's `retry-after`.

use std::time::Duration;

/// Delays between retries: `base · 2^attempt`, capped at `max`, each drawn uniformly from its
/// upper half ("equal jitter": never zero, never in lockstep with other devices).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay; `retry_after` (from the server) wins when longer.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        let delay = half + jitter;
        match retry_after {
            Some(asked) if asked > delay => asked,
            _ => delay,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_respect_retry_after() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay(None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(b.next_delay(None) <= Duration::from_secs(1));
        }
        assert!(b.next_delay(None) >= Duration::from_millis(500));
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        b.reset();
        assert!(b.next_delay(None) <= Duration::from_millis(100));
    }
}
