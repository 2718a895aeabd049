//! Which commit LSN each recent transaction got, as the replication stream sees it.
//!
//! A write through `/v1/mutations` knows its transaction id at once but its commit LSN (the `tx`
//! of shape offsets) only when that commit comes back through replication. The stream
//! [`record`](CommitWatch::record)s every commit; a writer [`wait_for`](CommitWatch::wait_for)s
//! its own, for a bounded time.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use shapes::lsn::{Lsn, Xid32};
use tokio::sync::Notify;

/// How many recent commits are remembered.
const REMEMBERED: usize = 65_536;

#[derive(Debug, Default)]
pub struct CommitWatch {
    state: Mutex<Recent>,
    committed: Notify,
}

#[derive(Debug, Default)]
struct Recent {
    by_xid: HashMap<Xid32, Lsn>,
    order: VecDeque<Xid32>,
}

impl CommitWatch {
    /// Notes that transaction `xid` (32-bit, as pgoutput sends it) committed at `commit_lsn`.
    pub fn record(&self, xid: Xid32, commit_lsn: Lsn) {
        {
            let mut recent = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if recent.by_xid.insert(xid, commit_lsn).is_none() {
                recent.order.push_back(xid);
            }
            while recent.order.len() > REMEMBERED {
                if let Some(old) = recent.order.pop_front() {
                    recent.by_xid.remove(&old);
                }
            }
        }
        self.committed.notify_waiters();
    }

    fn lookup(&self, xid: Xid32) -> Option<Lsn> {
        let recent = self.state.lock().unwrap_or_else(|e| e.into_inner());
        recent.by_xid.get(&xid).copied()
    }

    /// The commit LSN of `xid` once the stream has seen it, or `None` after `timeout`.
    pub async fn wait_for(&self, xid: Xid32, timeout: Duration) -> Option<Lsn> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.committed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(lsn) = self.lookup(xid) {
                return Some(lsn);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.lookup(xid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_learns_the_commit_lsn_recorded_after_it_started_waiting() {
        let watch = Arc::new(CommitWatch::default());
        let waiter = tokio::spawn({
            let watch = watch.clone();
            async move { watch.wait_for(Xid32(42), Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        watch.record(Xid32(41), Lsn(100));
        watch.record(Xid32(42), Lsn(200));
        assert_eq!(waiter.await.unwrap(), Some(Lsn(200)));
    }

    #[tokio::test]
    async fn an_unknown_transaction_times_out_with_none() {
        let watch = CommitWatch::default();
        assert_eq!(
            watch.wait_for(Xid32(7), Duration::from_millis(20)).await,
            None
        );
    }
}
