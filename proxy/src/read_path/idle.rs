//! `--replication-idle-timeout`: with no live client and nothing streamed for a while, the
//! proxy closes its replication connection (and its idle metadata connection), so a database
//! that scales to zero may suspend; the next request opens it again and waits until every
//! change committed meanwhile is in the shape logs.
//!
//! [`Demand`] is what requests and the consumer report to, and what the stream's supervisor
//! asks before it closes the stream. Pausing is decided under the same lock that counts live
//! requests, so a live request either keeps the stream open or finds it closed and reopens it:
//! none waits on a closed stream.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Where the replication connection is, as requests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Open (or reconnecting by itself): requests are served at once.
    Open,
    /// Closed for idleness: the next request opens it.
    Closed,
    /// Opened again; catching up with what was committed while it was closed.
    Reopening,
}

#[derive(Debug)]
struct Counts {
    live: usize,
    last_active: Instant,
}

/// What keeps the replication stream open.
#[derive(Debug)]
pub struct Demand {
    counts: Mutex<Counts>,
    stream: watch::Sender<Stream>,
    /// A request needs the stream open.
    wanted: Notify,
}

impl Default for Demand {
    fn default() -> Self {
        Self {
            counts: Mutex::new(Counts {
                live: 0,
                last_active: Instant::now(),
            }),
            stream: watch::channel(Stream::Open).0,
            wanted: Notify::new(),
        }
    }
}

/// A live request, counted while it waits (keeps the stream open).
#[derive(Debug)]
pub struct LiveRequest(Arc<Demand>);

impl Drop for LiveRequest {
    fn drop(&mut self) {
        let mut counts = self.0.counts();
        counts.live -= 1;
        counts.last_active = Instant::now();
    }
}

impl Demand {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Something happened (a request, a streamed transaction): the idle time starts again.
    pub fn touch(&self) {
        self.counts().last_active = Instant::now();
    }

    /// Counts a live request until the guard is dropped.
    pub fn live(self: &Arc<Self>) -> LiveRequest {
        let mut counts = self.counts();
        counts.live += 1;
        counts.last_active = Instant::now();
        LiveRequest(self.clone())
    }

    /// Where the stream is now.
    pub fn stream(&self) -> Stream {
        *self.stream.borrow()
    }

    /// Waits until the stream is open and caught up (asking for it if it is closed), at most
    /// `timeout`; `false` if it is not by then.
    pub async fn wait_open(&self, timeout: Duration) -> bool {
        self.touch();
        if self.stream() == Stream::Open {
            return true;
        }
        self.wanted.notify_one();
        let mut stream = self.stream.subscribe();
        matches!(
            tokio::time::timeout(timeout, stream.wait_for(|s| *s == Stream::Open)).await,
            Ok(Ok(_))
        )
    }

    /// Returns once nothing has happened for `timeout` with no live request, having marked
    /// the stream [`Stream::Closed`]: the caller closes it.
    pub async fn until_idle(&self, timeout: Duration) {
        loop {
            let wake_at = {
                let mut counts = self.counts();
                let idle_at = counts.last_active + timeout;
                // Never while reopening: the catch-up would mark it open afterwards.
                let open = self.stream() == Stream::Open;
                if counts.live == 0 && open && Instant::now() >= idle_at {
                    self.stream.send_replace(Stream::Closed);
                    // Whoever finds it closed from now on asks for it again.
                    counts.last_active = Instant::now();
                    return;
                }
                if counts.live > 0 || !open {
                    Instant::now() + timeout
                } else {
                    idle_at
                }
            };
            tokio::time::sleep_until(wake_at).await;
        }
    }

    /// Waits until a request asks for the closed stream.
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// The supervisor reopened the stream; requests keep waiting until [`Demand::opened`].
    pub fn reopening(&self) {
        self.stream.send_replace(Stream::Reopening);
    }

    /// The reopened stream caught up: requests go on.
    pub fn opened(&self) {
        self.touch();
        self.stream.send_replace(Stream::Open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_stream_closes_only_after_the_timeout_with_no_live_request() {
        let demand = Arc::new(Demand::default());
        let timeout = Duration::from_secs(60);
        let live = demand.live();
        let idle = tokio::spawn({
            let demand = demand.clone();
            async move { demand.until_idle(timeout).await }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!idle.is_finished(), "a live request keeps it open");
        drop(live);
        tokio::time::sleep(Duration::from_secs(59)).await;
        demand.touch();
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!idle.is_finished(), "demand restarts the idle time");
        tokio::time::sleep(Duration::from_secs(2)).await;
        idle.await.unwrap();
        assert_eq!(demand.stream(), Stream::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_still_catching_up_is_not_closed_again() {
        let demand = Arc::new(Demand::default());
        demand.until_idle(Duration::from_secs(1)).await;
        demand.reopening();
        let idle = tokio::spawn({
            let demand = demand.clone();
            async move { demand.until_idle(Duration::from_secs(1)).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!idle.is_finished(), "reopening takes as long as it takes");
        assert_eq!(demand.stream(), Stream::Reopening);
        demand.opened();
        tokio::time::sleep(Duration::from_secs(3)).await;
        idle.await.unwrap();
        assert_eq!(demand.stream(), Stream::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_on_a_closed_stream_asks_for_it_and_waits_until_it_caught_up() {
        let demand = Arc::new(Demand::default());
        demand.until_idle(Duration::from_secs(1)).await;
        let request = tokio::spawn({
            let demand = demand.clone();
            async move { demand.wait_open(Duration::from_secs(30)).await }
        });
        demand.wanted().await;
        demand.reopening();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !request.is_finished(),
            "it waits while the stream catches up"
        );
        demand.opened();
        assert!(request.await.unwrap());
        // Nobody opens it: the request gives up after its timeout.
        demand.until_idle(Duration::from_secs(1)).await;
        assert!(!demand.wait_open(Duration::from_secs(5)).await);
    }
}
