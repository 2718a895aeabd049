//! The sync status the app shows: one of `offline | connecting | syncing | up-to-date |
//! pending(n) | conflicts(n) | error`, with the last time every shape was up to date.
//!
//! Each subscription reports its own [`ShapePhase`]; the outbox and the conflict table report
//! their counts. [`StatusBoard`] folds them into one [`Status`] and publishes it on a
//! `tokio::sync::watch`, so the app can both query it and await changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

use shapes::lsn::Lsn;
use tokio::sync::watch;

/// Where one subscription is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapePhase {
    /// Not reachable (network down, server restarting, or [`crate::Client::set_online`]).
    Offline,
    /// A request is under way and nothing came back yet.
    Connecting,
    /// A first sync (or a refetch) that has not started: it waits until every shape of a
    /// higher priority is ready (see the README, "Priorities").
    Waiting,
    /// Receiving rows that are not yet up to date.
    Syncing,
    UpToDate,
    /// A definite error (the message says what to change).
    Error(String),
}

/// The one-word summary, by precedence: `error` > `offline` > `connecting` > `syncing` >
/// `conflicts(n)` > `pending(n)` > `up-to-date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    Offline,
    Connecting,
    Syncing,
    UpToDate,
    /// Local writes not yet acknowledged by the server.
    Pending(u64),
    /// Conflicts recorded and not yet resolved by the app.
    Conflicts(u64),
    Error(String),
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Offline => f.write_str("offline"),
            Self::Connecting => f.write_str("connecting"),
            Self::Syncing => f.write_str("syncing"),
            Self::UpToDate => f.write_str("up-to-date"),
            Self::Pending(n) => write!(f, "pending({n})"),
            Self::Conflicts(n) => write!(f, "conflicts({n})"),
            Self::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Everything about the client's sync, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub state: SyncState,
    /// Each subscription's phase, by local table name.
    pub shapes: BTreeMap<String, ShapePhase>,
    /// Local writes in the outbox (not yet answered by the server).
    pub pending: u64,
    /// Unresolved conflicts.
    pub conflicts: u64,
    /// The last time every shape was up to date at once.
    pub last_sync: Option<SystemTime>,
    /// Rows (changes) received from the server since the client started.
    pub rows_received: u64,
    /// How many times a shape had to be fetched again from scratch (409 / must-refetch).
    pub refetches: u64,
    /// Each subscription's "synced up to": the database position (LSN) its mirror includes —
    /// every transaction committed at or before it. 0 before its first up-to-date.
    pub synced_lsns: BTreeMap<String, Lsn>,
    /// Per sync priority in use (0 first … 3 last): whether it is ready — every shape of that
    /// priority or a higher one (a lower number) has completed its initial sync (or its last
    /// refetch) and is readable. An app can show settings (priority 0) before all notes.
    pub priorities: BTreeMap<u8, bool>,
    /// Each subscription's priority.
    pub shape_priorities: BTreeMap<String, u8>,
    /// Subscriptions whose initial sync (or last refetch) is complete.
    pub ready: BTreeSet<String>,
}

impl Status {
    fn new() -> Self {
        Self {
            state: SyncState::Connecting,
            shapes: BTreeMap::new(),
            pending: 0,
            conflicts: 0,
            last_sync: None,
            rows_received: 0,
            refetches: 0,
            synced_lsns: BTreeMap::new(),
            priorities: BTreeMap::new(),
            shape_priorities: BTreeMap::new(),
            ready: BTreeSet::new(),
        }
    }

    /// Whether a shape of `priority` may start its initial sync (or refetch): every shape of
    /// a higher priority is ready, or refused (a refused shape must not hold the others up).
    pub fn may_start(&self, priority: u8) -> bool {
        self.shape_priorities
            .iter()
            .filter(|(_, p)| **p < priority)
            .all(|(name, _)| {
                self.ready.contains(name)
                    || matches!(self.shapes.get(name), Some(ShapePhase::Error(_)))
            })
    }

    fn compute_priorities(&self) -> BTreeMap<u8, bool> {
        let used: BTreeSet<u8> = self.shape_priorities.values().copied().collect();
        used.into_iter()
            .map(|priority| {
                let ready = self
                    .shape_priorities
                    .iter()
                    .filter(|(_, p)| **p <= priority)
                    .all(|(name, _)| self.ready.contains(name));
                (priority, ready)
            })
            .collect()
    }

    /// "Synced up to": the database position the whole mirror includes (the lowest of the
    /// shapes'); `None` while some shape has none yet.
    pub fn synced_up_to(&self) -> Option<Lsn> {
        let lowest = self
            .shapes
            .keys()
            .map(|name| self.synced_lsns.get(name).copied().unwrap_or_default())
            .min()?;
        (lowest > Lsn::ZERO).then_some(lowest)
    }

    /// Every shape's mirror includes every transaction committed at or before `lsn`.
    pub fn synced_past(&self, lsn: Lsn) -> bool {
        self.shapes
            .keys()
            .all(|name| self.synced_lsns.get(name).is_some_and(|&l| l >= lsn))
    }

    fn summarize(&mut self) {
        let phases = self.shapes.values();
        let mut state = SyncState::UpToDate;
        let rank = |s: &SyncState| match s {
            SyncState::Error(_) => 5,
            SyncState::Offline => 4,
            SyncState::Connecting => 3,
            SyncState::Syncing => 2,
            _ => 0,
        };
        for phase in phases {
            let candidate = match phase {
                ShapePhase::Offline => SyncState::Offline,
                ShapePhase::Connecting | ShapePhase::Waiting => SyncState::Connecting,
                ShapePhase::Syncing => SyncState::Syncing,
                ShapePhase::UpToDate => SyncState::UpToDate,
                ShapePhase::Error(e) => SyncState::Error(e.clone()),
            };
            if rank(&candidate) > rank(&state) {
                state = candidate;
            }
        }
        if state == SyncState::UpToDate && self.conflicts > 0 {
            state = SyncState::Conflicts(self.conflicts);
        } else if state == SyncState::UpToDate && self.pending > 0 {
            state = SyncState::Pending(self.pending);
        }
        self.state = state;
    }

    /// Every subscribed shape is up to date.
    pub fn all_up_to_date(&self) -> bool {
        self.shapes.values().all(|p| *p == ShapePhase::UpToDate)
    }
}

/// Publishes the status; cheap to clone into every task.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    tx: watch::Sender<Status>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self {
            tx: watch::Sender::new(Status::new()),
        }
    }
}

impl StatusBoard {
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Status {
        self.tx.borrow().clone()
    }

    pub fn set_phase(&self, shape: &str, phase: ShapePhase) {
        self.tx.send_if_modified(|s| {
            if s.shapes.get(shape) == Some(&phase) {
                return false;
            }
            s.shapes.insert(shape.to_owned(), phase);
            if s.all_up_to_date() {
                s.last_sync = Some(SystemTime::now());
            }
            s.summarize();
            true
        });
    }

    /// Records that `shape` reached up-to-date again (refreshes the last sync time).
    pub fn up_to_date(&self, shape: &str) {
        self.set_phase(shape, ShapePhase::UpToDate);
        self.tx.send_modify(|s| {
            if s.all_up_to_date() {
                s.last_sync = Some(SystemTime::now());
            }
        });
    }

    pub fn set_counts(&self, pending: u64, conflicts: u64) {
        self.tx.send_if_modified(|s| {
            if (s.pending, s.conflicts) == (pending, conflicts) {
                return false;
            }
            s.pending = pending;
            s.conflicts = conflicts;
            s.summarize();
            true
        });
    }

    /// A subscription of `priority`; `ready` when its table already holds a complete sync.
    pub fn register(&self, shape: &str, priority: u8, ready: bool) {
        self.tx.send_modify(|s| {
            s.shape_priorities.insert(shape.to_owned(), priority);
            if ready {
                s.ready.insert(shape.to_owned());
            } else {
                s.ready.remove(shape);
            }
            s.priorities = s.compute_priorities();
        });
    }

    /// Marks `shape` ready (its sync committed) or not (a refetch starts); returns the
    /// priorities that became ready by it, highest first.
    pub fn set_ready(&self, shape: &str, ready: bool) -> Vec<u8> {
        let mut newly = Vec::new();
        self.tx.send_if_modified(|s| {
            let changed = if ready {
                s.ready.insert(shape.to_owned())
            } else {
                s.ready.remove(shape)
            };
            if !changed {
                return false;
            }
            let before = std::mem::take(&mut s.priorities);
            s.priorities = s.compute_priorities();
            newly = s
                .priorities
                .iter()
                .filter(|(p, ready)| **ready && before.get(p) != Some(&true))
                .map(|(p, _)| *p)
                .collect();
            true
        });
        newly
    }

    /// `shape` committed an up-to-date at `lsn` (never goes back).
    pub fn set_synced(&self, shape: &str, lsn: Lsn) {
        self.tx.send_if_modified(|s| {
            let current = s.synced_lsns.entry(shape.to_owned()).or_default();
            let advance = lsn > *current;
            *current = (*current).max(lsn);
            advance
        });
    }

    pub fn add_rows(&self, n: u64) {
        self.tx.send_modify(|s| s.rows_received += n);
    }

    pub fn add_refetch(&self) {
        self.tx.send_modify(|s| s.refetches += 1);
    }

    pub fn set_last_sync(&self, at: Option<SystemTime>) {
        self.tx.send_modify(|s| s.last_sync = s.last_sync.max(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_prefers_errors_then_offline_then_counts() {
        let board = StatusBoard::default();
        board.set_phase("a", ShapePhase::UpToDate);
        board.set_phase("b", ShapePhase::Syncing);
        assert_eq!(board.current().state, SyncState::Syncing);
        board.set_phase("b", ShapePhase::UpToDate);
        board.set_counts(3, 0);
        assert_eq!(board.current().state.to_string(), "pending(3)");
        board.set_counts(3, 1);
        assert_eq!(board.current().state.to_string(), "conflicts(1)");
        board.set_phase("a", ShapePhase::Offline);
        assert_eq!(board.current().state, SyncState::Offline);
        board.set_phase("b", ShapePhase::Error("bad where".into()));
        assert_eq!(board.current().state.to_string(), "error: bad where");
        assert!(board.current().last_sync.is_some());
    }

    #[test]
    fn a_priority_is_ready_when_it_and_every_higher_one_are() {
        let board = StatusBoard::default();
        board.register("settings", 0, false);
        board.register("profile", 1, false);
        board.register("notes", 3, false);
        board.register("files", 3, false);
        let status = board.current();
        assert!(status.may_start(0));
        assert!(!status.may_start(1) && !status.may_start(3));
        assert_eq!(board.set_ready("profile", true), Vec::<u8>::new());
        assert!(!board.current().may_start(3), "settings is not ready yet");
        assert_eq!(board.set_ready("settings", true), vec![0, 1]);
        assert!(board.current().may_start(3));
        assert_eq!(board.set_ready("notes", true), Vec::<u8>::new());
        assert_eq!(board.set_ready("files", true), vec![3]);
        assert_eq!(
            board.current().priorities,
            BTreeMap::from([(0, true), (1, true), (3, true)])
        );
        // A refetch of settings holds the others' refetches back until it is done.
        assert_eq!(board.set_ready("settings", false), Vec::<u8>::new());
        assert!(!board.current().may_start(1));
        assert!(!board.current().priorities[&3]);
        // A refused shape does not hold the rest up.
        board.set_phase("settings", ShapePhase::Error("no table".into()));
        assert!(board.current().may_start(3));
    }
}
