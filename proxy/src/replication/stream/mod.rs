//! The replication connection: one task owns the walsender session, decodes what it sends,
//! and hands committed transactions to the consumer; [`ReplicationStream`] is its handle.
//!
//! ```text
//!  Postgres walsender ──socket──► pgwire-replication worker ──► StreamTask ──events (bounded)──► consumer
//!        ▲   standby status (timer ~1 s, keepalive replies)        │  decode + assemble          │
//!        └──────────────── acknowledged LSN ◄─── AckTracker ◄──────┴──── flushed watch ◄───────────┘
//! ```
//!
//! Each session: (1) over an ordinary connection, make sure the publication and the slot
//! exist (recreating an invalidated slot, which the consumer hears as
//! [`SlotLost`](super::ReplicationEvent::SlotLost)); (2) open a replication connection with
//! the same display settings as snapshots ([`shapes::display::STARTUP_OPTIONS`]), read `IDENTIFY_SYSTEM`,
//! start streaming at the consumer's position and announce
//! [`Connected`](super::ReplicationEvent::Connected); (3) pump messages until shutdown or
//! an error. Transient errors (connection lost, Postgres restarting, the slot still held by
//! our previous session) end the session with
//! [`Disconnected`](super::ReplicationEvent::Disconnected) and reconnect with exponential
//! backoff and jitter. Definite errors (bad password, missing privilege, a slot held by
//! someone else for too long, a stream that breaks the protocol) are logged at ERROR and
//! returned by [`ReplicationStream::join`]; the events channel then closes.
//!
//! Backpressure: events go out on the caller's bounded channel. While it is full the task
//! stops reading, the replication client's own buffer (`client_buffer` events) fills, and
//! then the socket: memory stays bounded, Postgres waits, and status updates keep flowing
//! so the walsender does not time us out.
//!
//! Why `pgwire-replication` rather than a client of our own on `postgres-protocol`: the
//! replication sub-protocol (startup with `replication=database`, SCRAM, CopyBoth,
//! XLogData/keepalive framing, standby status updates on a timer, keepalive replies while
//! the consumer is slow) is a few hundred lines of careful, cancellation-safe socket code
//! that this crate already has, tested, and measured at `pg_recvlogical` speed on this
//! machine; `postgres-protocol` gives message codecs only, not that state machine. What it
//! leaves to us is what this module adds: pgoutput decoding, slots, reconnection, error
//! classification and the acknowledgement policy.

mod backoff;
mod error;
mod progress;
mod session;
mod task;

use std::sync::Arc;
use std::time::Duration;

use shapes::lsn::Lsn;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

pub use error::ReplicationError;

use super::event::ReplicationEvent;
use super::row_pool::RowPool;

/// How the stream connects and behaves.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// `postgres://user:password@host:port/db` (a `host=/dir` socket directory works too).
    pub database_url: String,
    /// Logical slot (`[a-z0-9_]`, at most 63 characters); created if missing.
    pub slot: String,
    /// Publication (created empty if missing).
    pub publication: String,
    /// How often a standby status update goes out, idle or not. Keep it well under the
    /// server's `wal_sender_timeout` (60 s by default).
    pub status_interval: Duration,
    /// First and largest delay between reconnection attempts.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// How long a slot held by another process is waited for before giving up. Longer than
    /// `wal_sender_timeout`: after a network cut our own old walsender holds the slot until
    /// it notices.
    pub slot_busy_timeout: Duration,
    /// `application_name` of the replication connection (visible in `pg_stat_replication`).
    pub application_name: String,
    /// Events buffered inside the replication client, ahead of decoding.
    pub client_buffer: usize,
    /// Where the rows of changes are filled: the consumer gives spent rows back to it.
    pub rows: Arc<RowPool>,
}

impl StreamConfig {
    pub fn new(database_url: String, slot: String, publication: String) -> Self {
        Self {
            database_url,
            slot,
            publication,
            status_interval: Duration::from_secs(1),
            reconnect_initial: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            slot_busy_timeout: Duration::from_secs(120),
            application_name: "shapesync".to_owned(),
            client_buffer: 1024,
            rows: Arc::default(),
        }
    }
}

/// Where the stream stands, for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStatus {
    Connecting,
    Streaming { system_id: u64, timeline: u32 },
    Reconnecting { attempt: u32, error: String },
    Failed { error: String },
    Stopped,
}

/// The handle of a running replication stream. Dropping it stops the stream (as
/// [`shutdown`](Self::shutdown) does); [`join`](Self::join) waits for the end instead.
#[derive(Debug)]
pub struct ReplicationStream {
    task: JoinHandle<Result<(), ReplicationError>>,
    status: watch::Receiver<StreamStatus>,
    /// A child of the caller's token: cancelled by the caller's, or by dropping the handle.
    shutdown: DropGuard,
}

impl ReplicationStream {
    /// Starts streaming on a task of its own.
    ///
    /// - `start_lsn`: the consumer's own durable position (the end LSN of the last commit it
    ///   made durable; `Lsn::ZERO` for a fresh start). Never the slot's position.
    /// - `events`: where events go, in order; its bound is the backpressure.
    /// - `flushed`: the consumer publishes there the commit end LSN up to which everything
    ///   is durable (see [`crate::replication`] for the contract).
    /// - `shutdown`: cancelling it ends the stream (and [`join`](Self::join) returns `Ok`).
    pub fn spawn(
        config: StreamConfig,
        start_lsn: Lsn,
        events: mpsc::Sender<ReplicationEvent>,
        flushed: watch::Receiver<Lsn>,
        shutdown: CancellationToken,
    ) -> Self {
        let (status_tx, status) = watch::channel(StreamStatus::Connecting);
        let shutdown = shutdown.child_token();
        let span = tracing::info_span!(
            "replication",
            slot = %config.slot,
            publication = %config.publication,
        );
        let task = task::StreamTask::new(
            config,
            start_lsn,
            events,
            flushed,
            shutdown.clone(),
            status_tx,
        );
        Self {
            task: tokio::spawn(task.run().instrument(span)),
            status,
            shutdown: shutdown.drop_guard(),
        }
    }

    /// Follows the stream's status.
    pub fn status(&self) -> watch::Receiver<StreamStatus> {
        self.status.clone()
    }

    /// Stops the stream (as cancelling its token does) and waits until its connection is
    /// closed.
    pub async fn shutdown(self) -> Result<(), ReplicationError> {
        self.shutdown.disarm().cancel();
        join_task(self.task).await
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the stream to end: `Ok` after shutdown or when the consumer dropped its
    /// receiver, the definite error that stopped it otherwise.
    pub async fn join(self) -> Result<(), ReplicationError> {
        // Waiting is not stopping: keep the token alive, uncancelled.
        let _token = self.shutdown.disarm();
        join_task(self.task).await
    }
}

async fn join_task(task: JoinHandle<Result<(), ReplicationError>>) -> Result<(), ReplicationError> {
    match task.await {
        Ok(result) => result,
        Err(err) => Err(ReplicationError::Internal(format!(
            "replication task ended abnormally: {err}"
        ))),
    }
}
