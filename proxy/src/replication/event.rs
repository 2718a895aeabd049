//! What the replication stream hands its consumer: committed transactions as
//! `Begin, Change…, Commit`, in commit order, plus the session's lifecycle.

use std::sync::Arc;

use bytes::Bytes;
use shapes::lsn::{Lsn, Xid32};
use shapes::schema::{QualifiedName, Row};

pub use super::pgoutput::ReplicaIdentity;

/// One event of the stream, in the order the consumer must process them.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicationEvent {
    /// A session started streaming (first connect and every reconnect). An open transaction
    /// (a `Begin` without its `Commit`) from before it is void; Postgres sends it again.
    Connected {
        /// `IDENTIFY_SYSTEM`'s system identifier: a different value means a different
        /// database cluster (restore, failover, `pg_upgrade`), and every shape must rotate.
        system_id: u64,
        /// The server's timeline; it changes after a promotion.
        timeline: u32,
        /// Where the session asked to start; Postgres begins at the slot's confirmed
        /// position if that is later.
        start_lsn: Lsn,
    },
    /// A transaction starts; its changes follow, then its `Commit`.
    Begin {
        xid: Xid32,
        /// The commit record's LSN (pgoutput's `final_lsn`): the transaction's commit LSN.
        commit_lsn: Lsn,
        /// Microseconds since 2000-01-01 UTC (the Postgres epoch).
        commit_time_micros: i64,
    },
    Change(WalChange),
    Commit {
        xid: Xid32,
        commit_lsn: Lsn,
        /// The end of the commit record. Publish this on the flushed watch once the
        /// transaction is durable (see the module docs of `replication`).
        end_lsn: Lsn,
    },
    /// A Relation message whose name, replica identity or columns differ from the one cached
    /// for that oid: the table's schema changed. Arrives inside the transaction, before the
    /// first change that uses the new shape. The first Relation seen for an oid is a
    /// [`ReplicationEvent::RelationSent`]; every change carries its relation anyway.
    RelationChanged {
        relation: Arc<Relation>,
    },
    /// A Relation message that changes no columns: the first one for its oid, or one equal
    /// to the one cached. Postgres sends one again after anything invalidated the table's
    /// catalog entry (a constraint or the primary key changed; also at the start of each
    /// session): its columns are the same, but what the catalog says of them may not be.
    /// Carries the cached relation.
    RelationSent {
        relation: Arc<Relation>,
    },
    /// A `pg_logical_emit_message` message. Transactional ones arrive between their
    /// transaction's `Begin` and `Commit`; others on their own.
    LogicalMessage {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    /// The session ended with a transient error; the stream reconnects. `abandoned_xid` is
    /// the transaction that was open (its `Commit` will not come; it is sent again in full).
    Disconnected {
        reason: String,
        abandoned_xid: Option<Xid32>,
    },
    /// Postgres invalidated (or someone dropped) the slot: the changes after the consumer's
    /// position are gone. The slot was recreated; every shape must be rotated (refetched from
    /// a new snapshot). Streaming continues from the new slot.
    SlotLost {
        slot: String,
        reason: String,
        /// The new slot's consistent point: changes committed after it will arrive.
        new_slot_lsn: Lsn,
    },
}

/// A row change inside a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum WalChange {
    Insert {
        relation: Arc<Relation>,
        new: Row,
    },
    Update {
        relation: Arc<Relation>,
        /// The old row: whole when the relation's identity is
        /// [`ReplicaIdentity::Full`]; otherwise only the key columns carry values (the rest
        /// are `None`), and it is absent when the key did not change.
        old: Option<Row>,
        /// What `old` holds, as pgoutput said.
        old_kind: OldRowKind,
        /// The new row. Unchanged TOAST values (which Postgres does not send) are filled in
        /// from the old row.
        new: Row,
        /// Columns of `new` that held an unchanged TOAST value *and* could not be filled
        /// because the old row was not whole (the table lacks REPLICA IDENTITY FULL). Their
        /// value in `new` is `None`, which here means "unchanged, unknown", not NULL. Always
        /// empty for tables prepared with [`prepare_table`](super::setup::prepare_table).
        unfilled_toast: Vec<usize>,
    },
    Delete {
        relation: Arc<Relation>,
        /// Whole with REPLICA IDENTITY FULL, key columns only otherwise.
        old: Row,
        /// What `old` holds, as pgoutput said ([`OldRowKind::Absent`] never).
        old_kind: OldRowKind,
    },
    Truncate {
        relations: Vec<Arc<Relation>>,
        cascade: bool,
        restart_identity: bool,
    },
}

/// How much of the old row an update or delete carries (pgoutput's `K` or `O` tuple, or
/// none). Only a whole old row tells a shape whether the row was in it before: with less, a
/// shape whose `where` reads other columns cannot see a row move out or go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldRowKind {
    /// No old row (an update that kept the key, on a table whose identity is not FULL).
    Absent,
    /// The replica identity key's columns only (`K`); the others are `None`.
    KeyOnly,
    /// The whole row (`O`: REPLICA IDENTITY FULL).
    Full,
}

impl WalChange {
    /// The relation an insert, update or delete is about (`None` for a truncate).
    pub fn relation(&self) -> Option<&Arc<Relation>> {
        match self {
            Self::Insert { relation, .. }
            | Self::Update { relation, .. }
            | Self::Delete { relation, .. } => Some(relation),
            Self::Truncate { .. } => None,
        }
    }

    /// Whether a shape of the table may miss what this change does to it: an update or
    /// delete without the whole old row, or an update whose unchanged TOAST values are unknown.
    pub fn lacks_old_row(&self) -> bool {
        match self {
            Self::Update {
                old_kind,
                unfilled_toast,
                ..
            } => *old_kind != OldRowKind::Full || !unfilled_toast.is_empty(),
            Self::Delete { old_kind, .. } => *old_kind != OldRowKind::Full,
            Self::Insert { .. } | Self::Truncate { .. } => false,
        }
    }
}

/// A table as the replication stream describes it (from its latest Relation message).
///
/// Rows of changes to it hold one value per entry of `columns`, in that order: the table's
/// attribute order without dropped columns and (Postgres < 16) without generated columns.
/// The `Arc` stays the same until the relation changes, so consumers can cache by pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub name: QualifiedName,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod` (-1 when none).
    pub type_mod: i32,
    /// Part of the replica identity key (with identity FULL: every column).
    pub is_key: bool,
}

impl Relation {
    /// Position of a column by exact name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}
