//! A reference consumer of [`proxy::replication::ReplicationStream`], as the integration tests
//! and the benchmark use it: it applies the stream's contract (skip re-sent transactions by
//! commit LSN, drop a transaction left open by a disconnect, publish flushed commit end LSNs)
//! and records what it saw.

use std::time::Duration;

use proxy::replication::{ReplicationEvent, ReplicationStream, StreamConfig, WalChange};
use shapes::lsn::Lsn;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A committed transaction as the consumer applied it.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub xid: u32,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time_micros: i64,
    pub changes: Vec<WalChange>,
}

/// A transaction that arrived again, with where the consumer stood.
#[derive(Debug, Clone, Copy)]
pub struct Duplicate {
    pub commit_lsn: Lsn,
    /// The commit LSN of the last transaction the consumer had applied.
    pub last_applied: Lsn,
    /// What the consumer had published as flushed.
    pub flushed: Lsn,
    /// Where the session that re-sent it started.
    pub session_start: Lsn,
}

#[derive(Debug)]
struct Open {
    xid: u32,
    commit_lsn: Lsn,
    commit_time_micros: i64,
    changes: Vec<WalChange>,
}

/// Receives the stream's events and keeps what a real consumer would keep.
#[derive(Debug)]
pub struct Consumer {
    pub events: mpsc::Receiver<ReplicationEvent>,
    flushed: watch::Sender<Lsn>,
    /// Publish the flushed position every this many commits (1: at once).
    pub flush_every: usize,
    unflushed: usize,
    last_commit: Lsn,
    last_end: Lsn,
    open: Option<Open>,
    pub transactions: Vec<Transaction>,
    /// How many inserts the applied transactions hold.
    pub inserts: usize,
    pub duplicates: Vec<Duplicate>,
    /// `Connected` events: (system id, timeline, start LSN).
    pub sessions: Vec<(u64, u32, Lsn)>,
    /// Everything else that is not part of a transaction (Disconnected, SlotLost, …).
    pub other: Vec<ReplicationEvent>,
}

/// Spawns a stream on `url` with test-friendly settings, and its consumer.
pub fn start_stream(
    url: &str,
    start_lsn: Lsn,
    channel: usize,
    configure: impl FnOnce(&mut StreamConfig),
) -> (ReplicationStream, Consumer, CancellationToken) {
    // The stream's logs show in the output of a failing test.
    static LOGGING: std::sync::Once = std::sync::Once::new();
    LOGGING.call_once(|| {
        proxy::observability::logging::init_logging(proxy::observability::logging::LogFormat::Text)
    });
    let mut config = StreamConfig::new(url.to_owned(), "shapesync".into(), "shapesync".into());
    config.reconnect_initial = Duration::from_millis(50);
    config.reconnect_max = Duration::from_millis(500);
    configure(&mut config);
    let (events_tx, events) = mpsc::channel(channel);
    let (flushed, flushed_rx) = watch::channel(start_lsn);
    let shutdown = CancellationToken::new();
    let stream =
        ReplicationStream::spawn(config, start_lsn, events_tx, flushed_rx, shutdown.clone());
    let consumer = Consumer {
        events,
        flushed,
        flush_every: 1,
        unflushed: 0,
        last_commit: start_lsn,
        last_end: start_lsn,
        open: None,
        transactions: Vec::new(),
        inserts: 0,
        duplicates: Vec::new(),
        sessions: Vec::new(),
        other: Vec::new(),
    };
    (stream, consumer, shutdown)
}

/// Shuts the stream down and waits for it, so that its walsender is gone before the test's
/// cluster stops (a walsender waits for its client's last acknowledgement when the server shuts
/// down).
pub async fn stop_stream(stream: ReplicationStream) {
    stream.shutdown().await.expect("the stream stops cleanly");
}

impl Consumer {
    /// The next event, or `None` when the stream ended; panics after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<ReplicationEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no replication event within {timeout:?}"))
    }

    /// Processes one event; `false` when the stream ended.
    pub async fn step(&mut self, timeout: Duration) -> bool {
        match self.recv(timeout).await {
            Some(event) => {
                self.apply(event);
                true
            }
            None => false,
        }
    }

    /// Processes events until `done` holds, panicking after `timeout` naming `what`.
    pub async fn until(&mut self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(event)) => self.apply(event),
                Ok(None) => panic!("the stream ended while waiting for {what}"),
                Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }

    /// What the consumer has published as flushed.
    pub fn flushed(&self) -> Lsn {
        *self.flushed.borrow()
    }

    /// Publishes everything applied so far as flushed.
    pub fn flush(&mut self) {
        self.unflushed = 0;
        self.flushed.send_replace(self.last_end);
    }

    pub fn apply(&mut self, event: ReplicationEvent) {
        match event {
            ReplicationEvent::Begin {
                xid,
                commit_lsn,
                commit_time_micros,
            } => {
                assert!(self.open.is_none(), "Begin inside a transaction");
                self.open = Some(Open {
                    xid: xid.0,
                    commit_lsn,
                    commit_time_micros,
                    changes: Vec::new(),
                });
            }
            ReplicationEvent::Change(change) => {
                self.open
                    .as_mut()
                    .expect("a change outside a transaction")
                    .changes
                    .push(change);
            }
            ReplicationEvent::Commit {
                xid,
                commit_lsn,
                end_lsn,
            } => self.commit(xid.0, commit_lsn, end_lsn),
            ReplicationEvent::Connected {
                system_id,
                timeline,
                start_lsn,
            } => {
                assert!(self.open.is_none(), "Connected inside a transaction");
                self.sessions.push((system_id, timeline, start_lsn));
            }
            ReplicationEvent::Disconnected { .. } => {
                self.open = None;
                self.other.push(event);
            }
            // Each session sends a table's Relation before its first change; the changes
            // carry it anyway.
            ReplicationEvent::RelationSent { .. } => {}
            other => self.other.push(other),
        }
    }

    fn commit(&mut self, xid: u32, commit_lsn: Lsn, end_lsn: Lsn) {
        let open = self.open.take().expect("Commit without Begin");
        assert_eq!((open.xid, open.commit_lsn), (xid, commit_lsn));
        if commit_lsn <= self.last_commit && !self.transactions.is_empty() {
            self.duplicates.push(Duplicate {
                commit_lsn,
                last_applied: self.last_commit,
                flushed: self.flushed(),
                session_start: self.sessions.last().map(|s| s.2).unwrap_or_default(),
            });
            return;
        }
        self.last_commit = commit_lsn;
        self.last_end = end_lsn;
        self.inserts += open
            .changes
            .iter()
            .filter(|c| matches!(c, WalChange::Insert { .. }))
            .count();
        self.transactions.push(Transaction {
            xid,
            commit_lsn,
            end_lsn,
            commit_time_micros: open.commit_time_micros,
            changes: open.changes,
        });
        self.unflushed += 1;
        if self.unflushed >= self.flush_every {
            self.flush();
        }
    }

    /// Every row inserted, as `(relation name, row)`.
    pub fn inserted_rows(&self) -> impl Iterator<Item = (&str, &shapes::schema::Row)> {
        self.transactions
            .iter()
            .flat_map(|t| &t.changes)
            .filter_map(|c| match c {
                WalChange::Insert { relation, new } => Some((relation.name.name.as_str(), new)),
                _ => None,
            })
    }
}
