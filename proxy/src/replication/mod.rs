//! Logical replication: the read half of shapesync's path from the WAL to shape logs.
//!
//! - [`setup`]: the slot, the publication, and each table's membership with REPLICA
//!   IDENTITY FULL (ordinary SQL connection).
//! - [`pgoutput`]: the messages of pgoutput protocol 1, decoded as pure code over bytes.
//! - [`assembly`]: decoded messages → [`ReplicationEvent`]s, with a relation cache and
//!   unchanged-TOAST filling.
//! - [`stream`]: the task that owns the replication connection ([`ReplicationStream`]).
//!
//! # The contract with the consumer
//!
//! **Order.** Events arrive in commit order: `Begin`, its changes (and any
//! `RelationChanged`/transactional `LogicalMessage`) in WAL order, `Commit`. Each session
//! starts with `Connected`, and ends, when it fails, with `Disconnected`; a transaction open
//! at that point is void (its `Commit` never comes), and Postgres sends it again, whole.
//!
//! **Re-sent transactions.** A new session starts at the consumer's flushed position, and
//! Postgres may start earlier still (slot positions persist only at checkpoints), so
//! transactions the consumer has already seen can arrive again. They are passed on as they
//! come; the consumer skips every transaction whose `commit_lsn` is not above the last one
//! it processed (after a restart: every one whose `commit_lsn` is below its start position,
//! an end LSN, at which the next commit record may start). Transactions never arrive out of
//! order and none is skipped.
//!
//! **What the consumer publishes** on its `watch::Sender<Lsn>` (the stream's `flushed`):
//! the `end_lsn` of the latest `Commit` such that it and every earlier transaction are
//! durable (fsynced in every shape log they touched), including transactions that touched no
//! shape at all, which need nothing written but must still be published. Publish promptly
//! (every fsync group): the value is what Postgres is told it may forget.
//!
//! # LSN bookkeeping
//!
//! - The stream starts at `max(start_lsn, flushed)`: the consumer's own durable position,
//!   never the slot's, because the slot may be ahead of what the consumer persisted (a
//!   status update races a crash) or behind it (positions persist at checkpoints).
//! - A standby status update goes out every `status_interval` (~1 s, well under
//!   `wal_sender_timeout`), idle, busy or while the consumer is slow, and at once when a
//!   keepalive asks for a reply. It reports, as written, flushed and applied alike, the
//!   position of the stream's acknowledgement tracker: the consumer's flushed commit end
//!   LSN, or the WAL end of a keepalive that arrived between transactions once everything
//!   delivered before it is flushed (so an idle slot does not hold WAL). Never a commit's
//!   start LSN (that would make Postgres send the transaction once more), never anything
//!   not yet durable.
//! - The task reads the consumer's watch every `status_interval / 4` (at most 250 ms), not
//!   on every change: a wake-up per commit would cost more than a one-row transaction. So
//!   the slot's `confirmed_flush_lsn` trails the consumer's durable position by about one
//!   status interval, and a crash of either side loses nothing (the slot is behind, never
//!   ahead).
//! - A slot Postgres invalidated (`wal_status = 'lost'`, for exceeding
//!   `max_slot_wal_keep_size`) cannot stream again: the stream logs an ERROR, drops and
//!   recreates it, and sends `SlotLost`; the consumer must rotate every shape, since the
//!   changes in between are gone.

pub mod assembly;
pub mod commit_watch;
pub mod event;
pub mod pgoutput;
pub mod row_pool;
pub mod setup;
pub mod stream;

pub use assembly::{AssemblyError, TransactionAssembler};
pub use event::{
    OldRowKind, Relation, RelationColumn, ReplicaIdentity, ReplicationEvent, WalChange,
};
pub use setup::{
    PublicationState, SetupError, SlotState, TablePrepared, ensure_publication, ensure_slot,
    prepare_table,
};
pub use stream::{ReplicationError, ReplicationStream, StreamConfig, StreamStatus};
