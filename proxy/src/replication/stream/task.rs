//! The stream's task: sessions one after another, with backoff between them, until shutdown
//! or a definite error.

use std::time::Instant;

use shapes::lsn::Lsn;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::progress::AckTracker;
use super::{ReplicationError, StreamConfig, StreamStatus};
use crate::replication::assembly::TransactionAssembler;
use crate::replication::event::ReplicationEvent;
use crate::replication::setup::{SetupError, SlotState};

/// Why a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionEnd {
    Shutdown,
    /// The consumer dropped its events receiver or its flushed watch.
    ConsumerGone,
}

/// Everything that outlives one session.
pub(super) struct StreamTask {
    pub(super) config: StreamConfig,
    pub(super) events: mpsc::Sender<ReplicationEvent>,
    pub(super) flushed: watch::Receiver<Lsn>,
    pub(super) shutdown: CancellationToken,
    status: watch::Sender<StreamStatus>,
    pub(super) assembler: TransactionAssembler,
    pub(super) acks: AckTracker,
    /// The earliest position the next session may start from: the consumer's start, or a
    /// recreated slot's consistent point.
    pub(super) resume_from: Lsn,
    /// Whether the slot should exist: a missing slot then means changes were lost.
    pub(super) slot_expected: bool,
    /// The last session was told the slot is invalidated; recreate it.
    pub(super) force_recreate: bool,
    pub(super) sessions: u64,
}

impl StreamTask {
    pub(super) fn new(
        config: StreamConfig,
        start_lsn: Lsn,
        events: mpsc::Sender<ReplicationEvent>,
        flushed: watch::Receiver<Lsn>,
        shutdown: CancellationToken,
        status: watch::Sender<StreamStatus>,
    ) -> Self {
        Self {
            assembler: TransactionAssembler::with_pool(config.rows.clone()),
            config,
            events,
            flushed,
            shutdown,
            status,
            acks: AckTracker::new(start_lsn),
            resume_from: start_lsn,
            slot_expected: start_lsn > Lsn::ZERO,
            force_recreate: false,
            sessions: 0,
        }
    }

    pub(super) async fn run(mut self) -> Result<(), ReplicationError> {
        if let Err(err) = validate(&self.config) {
            return Err(self.fail(err));
        }
        let mut backoff = Backoff::new(self.config.reconnect_initial, self.config.reconnect_max);
        let mut busy_since: Option<Instant> = None;
        loop {
            let mut streamed = false;
            let err = match self.session(&mut streamed).await {
                Ok(end) => {
                    tracing::info!(?end, "replication stream stopped");
                    self.status.send_replace(StreamStatus::Stopped);
                    return Ok(());
                }
                Err(err) => err,
            };
            if streamed {
                backoff.reset();
                busy_since = None;
                let abandoned_xid = self.assembler.abandon();
                let disconnected = ReplicationEvent::Disconnected {
                    reason: err.to_string(),
                    abandoned_xid,
                };
                if self.events.send(disconnected).await.is_err() {
                    return Ok(());
                }
            }
            let err = self.escalate_busy_slot(err, &mut busy_since);
            if !err.is_transient() {
                return Err(self.fail(err));
            }
            if matches!(err, ReplicationError::SlotInvalidated { .. }) {
                self.force_recreate = true;
            }
            let delay = backoff.next_delay();
            tracing::warn!(error = %err, attempt = backoff.attempt(), ?delay, "replication session ended; reconnecting");
            self.status.send_replace(StreamStatus::Reconnecting {
                attempt: backoff.attempt(),
                error: err.to_string(),
            });
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    self.status.send_replace(StreamStatus::Stopped);
                    return Ok(());
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn fail(&self, err: ReplicationError) -> ReplicationError {
        tracing::error!(error = %err, "replication stopped; shapes receive no more changes");
        self.status.send_replace(StreamStatus::Failed {
            error: err.to_string(),
        });
        err
    }

    pub(super) fn set_streaming(&self, system_id: u64, timeline: u32) {
        self.status.send_replace(StreamStatus::Streaming {
            system_id,
            timeline,
        });
    }

    /// A slot held by another process is worth waiting for (our own previous walsender may
    /// not have noticed yet that we left), but not forever.
    fn escalate_busy_slot(
        &self,
        err: ReplicationError,
        busy_since: &mut Option<Instant>,
    ) -> ReplicationError {
        let message = match &err {
            ReplicationError::SlotBusy { message, .. } => message.clone(),
            ReplicationError::Setup(setup @ SetupError::SlotInUse { .. }) => setup.to_string(),
            _ => {
                *busy_since = None;
                return err;
            }
        };
        let since = *busy_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.config.slot_busy_timeout {
            return err;
        }
        ReplicationError::SlotBusyTooLong {
            slot: self.config.slot.clone(),
            waited: since.elapsed(),
            message,
        }
    }

    /// After `ensure_slot`: the event announcing lost changes, if any. A slot is lost when
    /// Postgres invalidated it, or when it was missing although the consumer has a position
    /// in it.
    pub(super) fn slot_lost(&mut self, state: SlotState) -> Option<ReplicationEvent> {
        let (lsn, reason) = match state {
            SlotState::Existing { .. } => None,
            SlotState::Created { .. } if !self.slot_expected => None,
            SlotState::Created { lsn } => Some((
                lsn,
                "it did not exist although the stream had a position in it: it was dropped, \
                 or this is a different database cluster"
                    .to_owned(),
            )),
            SlotState::Recreated { lsn, reason } => Some((lsn, reason)),
        }?;
        tracing::error!(
            slot = %self.config.slot,
            %reason,
            new_slot_lsn = %lsn,
            "replication slot lost: changes after the consumer's position are gone; \
             recreated the slot, every shape must be rotated"
        );
        self.resume_from = lsn;
        // Nothing before the new slot can be re-sent, so nothing before it is owed: what was
        // delivered from the old slot must not hold back the new one's acknowledgements.
        self.acks = AckTracker::new(lsn);
        Some(ReplicationEvent::SlotLost {
            slot: self.config.slot.clone(),
            reason,
            new_slot_lsn: lsn,
        })
    }
}

fn validate(config: &StreamConfig) -> Result<(), ReplicationError> {
    let slot_ok = !config.slot.is_empty()
        && config.slot.len() <= 63
        && config
            .slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !slot_ok {
        return Err(ReplicationError::Config(format!(
            "slot name {:?}: use 1 to 63 lower-case letters, digits and underscores",
            config.slot
        )));
    }
    if config.publication.is_empty() || config.publication.contains([',', '\'', ' ']) {
        return Err(ReplicationError::Config(format!(
            "publication name {:?}: must be non-empty, without commas, quotes or spaces",
            config.publication
        )));
    }
    if config.status_interval.is_zero() || config.client_buffer == 0 {
        return Err(ReplicationError::Config(
            "status_interval and client_buffer must be positive".to_owned(),
        ));
    }
    Ok(())
}
