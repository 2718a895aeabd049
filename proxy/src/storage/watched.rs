//! A value that tasks wait on: what tokio's `watch` channel does for a shape, in a quarter
//! of its memory.
//!
//! tokio's channel spreads its receivers over eight wait lists, so that thousands of them
//! wake without contending for one lock; that costs about 370 bytes per channel. Every shape
//! holds two (its state, and the last offset of its log), most of them without a single
//! receiver: 74 MB for 100,000 shapes. Here a change wakes one list ([`Notify`]), which is as
//! fast for the few requests a shape usually has waiting, and costs about 90 bytes.
//!
//! The semantics are `watch`'s: a [`Watcher`] sees whether the value changed since it last
//! looked (not every value in between), and learns when the [`Watched`] is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The [`Watched`] value was dropped (its shape is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the watched value is gone")]
pub struct Closed;

struct Shared<T> {
    value: Mutex<T>,
    /// Changes made, times two, plus one once the [`Watched`] is dropped.
    version: AtomicU64,
    changed: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changes(&self) -> u64 {
        self.version.load(Ordering::Acquire) >> 1
    }
}

/// The value, as its owner holds it.
pub struct Watched<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Watched<T> {
    pub fn new(value: T) -> Self {
        Self {
            shared: Arc::new(Shared {
                value: Mutex::new(value),
                version: AtomicU64::new(0),
                changed: Notify::new(),
            }),
        }
    }

    /// Sets the value and wakes every watcher; returns the old one.
    pub fn send_replace(&self, value: T) -> T {
        let old = std::mem::replace(&mut *self.shared.lock(), value);
        self.shared.version.fetch_add(2, Ordering::AcqRel);
        self.shared.changed.notify_waiters();
        old
    }

    /// The value now (do not hold it across an `.await`).
    pub fn borrow(&self) -> MutexGuard<'_, T> {
        self.shared.lock()
    }

    /// A watcher that has seen the value as it is now.
    pub fn subscribe(&self) -> Watcher<T> {
        Watcher {
            seen: self.shared.changes(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        self.shared.version.fetch_or(1, Ordering::AcqRel);
        self.shared.changed.notify_waiters();
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Watched").field(&*self.borrow()).finish()
    }
}

/// One task's view of a [`Watched`] value.
pub struct Watcher<T> {
    shared: Arc<Shared<T>>,
    /// The changes seen.
    seen: u64,
}

impl<T> Watcher<T> {
    /// The value now (do not hold it across an `.await`).
    pub fn borrow(&self) -> MutexGuard<'_, T> {
        self.shared.lock()
    }

    /// Marks the value as it is now as seen.
    pub fn mark_seen(&mut self) {
        self.seen = self.shared.changes();
    }

    /// The value now, marked as seen.
    pub fn borrow_and_update(&mut self) -> MutexGuard<'_, T> {
        // Read before the value: a change in between is seen now and reported again later
        // (a spurious wake-up), never missed.
        self.seen = self.shared.changes();
        self.shared.lock()
    }

    /// Whether the value changed since it was last seen; `Err` once it is dropped and
    /// every change was seen.
    pub fn has_changed(&self) -> Result<bool, Closed> {
        let version = self.shared.version.load(Ordering::Acquire);
        match (version >> 1 != self.seen, version & 1 == 1) {
            (true, _) => Ok(true),
            (false, true) => Err(Closed),
            (false, false) => Ok(false),
        }
    }

    /// Waits until the value changes from what was last seen (at once if it already has),
    /// and marks it seen; `Err` once it is dropped and every change was seen.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Registered before the version is read: a change right after it wakes us.
            notified.as_mut().enable();
            if self.has_changed()? {
                self.seen = self.shared.changes();
                return Ok(());
            }
            notified.await;
        }
    }

    /// Waits until `ready` holds for the value (at once if it does), and gives a copy of it.
    pub async fn wait_for(&mut self, mut ready: impl FnMut(&T) -> bool) -> Result<T, Closed>
    where
        T: Clone,
    {
        loop {
            {
                let value = self.borrow_and_update();
                if ready(&value) {
                    return Ok(value.clone());
                }
            }
            self.changed().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_watcher_wakes_for_a_change_made_before_or_while_it_waits() {
        let watched = Watched::new(0);
        let mut watcher = watched.subscribe();
        assert_eq!(watcher.has_changed(), Ok(false));
        watched.send_replace(1);
        assert_eq!(watcher.has_changed(), Ok(true));
        watcher.changed().await.unwrap();
        assert_eq!(*watcher.borrow(), 1);
        assert_eq!(watcher.has_changed(), Ok(false), "seen");

        let waiting = tokio::spawn(async move {
            watcher.changed().await.unwrap();
            watcher.wait_for(|_| true).await.unwrap()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        watched.send_replace(2);
        assert_eq!(waiting.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn many_changes_wake_once_and_the_latest_value_is_seen() {
        let watched = Watched::new(0);
        let mut watcher = watched.subscribe();
        for n in 1..=5 {
            watched.send_replace(n);
        }
        watcher.changed().await.unwrap();
        assert_eq!(*watcher.borrow_and_update(), 5);
        assert_eq!(watcher.has_changed(), Ok(false));
    }

    #[tokio::test]
    async fn dropping_the_value_ends_every_wait_after_its_last_change_is_seen() {
        let watched = Watched::new("creating");
        let mut first = watched.subscribe();
        let mut second = watched.subscribe();
        let waiting = tokio::spawn(async move { first.wait_for(|s| *s == "ready").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        watched.send_replace("gone");
        drop(watched);
        assert_eq!(waiting.await.unwrap(), Err(Closed));
        // The change made before the drop is still reported once.
        assert_eq!(second.changed().await, Ok(()));
        assert_eq!(*second.borrow(), "gone");
        assert_eq!(second.changed().await, Err(Closed));
    }

    #[tokio::test]
    async fn wait_for_returns_at_once_when_the_value_already_holds() {
        let watched = Watched::new(3);
        let mut watcher = watched.subscribe();
        assert_eq!(watcher.wait_for(|n| *n > 2).await, Ok(3));
    }

    #[test]
    fn it_stays_small() {
        let shared = std::mem::size_of::<Shared<Option<(u64, u64)>>>();
        assert!(shared <= 112, "{shared} bytes");
    }
}
