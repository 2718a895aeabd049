//! Turning decoded pgoutput messages into [`ReplicationEvent`]s: a relation cache, the
//! transaction state machine, and rows built from tuples.
//!
//! Pure: no I/O, one message in, at most one event out. pgoutput v1 sends only committed
//! transactions, whole and in commit order, so assembly needs no buffering: a `Begin`, its
//! changes, its `Commit`.
//!
//! Unchanged TOAST values: an update that does not touch a TOASTed column sends `u` for it
//! instead of its value. With REPLICA IDENTITY FULL the old row arrives whole (Postgres
//! detoasts it), and the new row's hole is filled from it. Without a whole old row the hole
//! cannot be filled: the position is listed in `unfilled_toast` rather than guessed.

use foldhash::HashMap;
use std::sync::Arc;

use shapes::lsn::{Lsn, Xid32};
use shapes::schema::{QualifiedName, Row};

use super::event::{OldRowKind, Relation, RelationColumn, ReplicationEvent, WalChange};
use super::pgoutput::{self, ColumnValue, OldTuple, PgOutputMessage, TextValue, TupleData};
use super::row_pool::{self, RowPool, RowSource};

/// Messages that break the protocol's promises. All definite: resending the same stream
/// would fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("pgoutput sent a change for relation oid {0} before its Relation message")]
    UnknownRelation(u32),
    #[error("pgoutput sent a row of {got} columns for {relation}, whose Relation has {expected}")]
    ColumnCount {
        relation: QualifiedName,
        expected: usize,
        got: usize,
    },
    #[error(
        "column {column} of {relation} is not valid UTF-8: shapesync needs a database with \
         encoding UTF8"
    )]
    InvalidUtf8 {
        relation: QualifiedName,
        column: String,
    },
    #[error("column {column} of {relation} arrived in binary format, but the stream asks for text")]
    BinaryValue {
        relation: QualifiedName,
        column: String,
    },
    #[error("pgoutput sent {0} outside a transaction")]
    OutsideTransaction(&'static str),
    #[error("pgoutput sent Begin (xid {new}) while transaction {open} was open")]
    NestedBegin { open: Xid32, new: Xid32 },
    #[error("pgoutput Commit at {commit} does not match its Begin at {begin}")]
    CommitMismatch { begin: Lsn, commit: Lsn },
}

#[derive(Debug, Clone, Copy)]
struct OpenTransaction {
    xid: Xid32,
    commit_lsn: Lsn,
}

/// The relation cache and the transaction state of one stream. Lives across reconnects (a
/// new session resends Relation messages; unchanged ones are not announced again).
#[derive(Debug, Default)]
pub struct TransactionAssembler {
    relations: HashMap<u32, Arc<Relation>>,
    open: Option<OpenTransaction>,
    /// Where rows to fill come from.
    rows: RowSource,
}

impl TransactionAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// An assembler filling rows the consumer gave back to `pool`.
    pub fn with_pool(pool: Arc<RowPool>) -> Self {
        Self {
            rows: RowSource::new(pool),
            ..Self::default()
        }
    }

    /// Whether a `Begin` was seen without its `Commit`.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Forgets the open transaction (the session ended; Postgres will send it again), and
    /// returns its xid.
    pub fn abandon(&mut self) -> Option<Xid32> {
        self.open.take().map(|t| t.xid)
    }

    /// The cached relation for `oid`.
    pub fn relation(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.relations.get(&oid)
    }

    /// Applies one message; returns the event it makes, if any (Type and Origin messages and
    /// unknown kinds make none).
    pub fn apply(
        &mut self,
        message: PgOutputMessage<'_>,
    ) -> Result<Option<ReplicationEvent>, AssemblyError> {
        let event = match message {
            PgOutputMessage::Begin(begin) => Some(self.begin(begin)?),
            PgOutputMessage::Commit(commit) => Some(self.commit(commit)?),
            PgOutputMessage::Relation(relation) => self.relation_message(relation),
            PgOutputMessage::Insert(insert) => {
                self.require_transaction("Insert")?;
                let relation = self.lookup(insert.relation_oid)?;
                let new = self.build_row(&relation, insert.new)?;
                Some(ReplicationEvent::Change(WalChange::Insert {
                    relation,
                    new,
                }))
            }
            PgOutputMessage::Update(update) => {
                self.require_transaction("Update")?;
                Some(ReplicationEvent::Change(self.update(update)?))
            }
            PgOutputMessage::Delete(delete) => {
                self.require_transaction("Delete")?;
                let relation = self.lookup(delete.relation_oid)?;
                let (tuple, old_kind) = match delete.old {
                    OldTuple::Key(tuple) => (tuple, OldRowKind::KeyOnly),
                    OldTuple::Full(tuple) => (tuple, OldRowKind::Full),
                };
                let old = self.build_row(&relation, tuple)?;
                Some(ReplicationEvent::Change(WalChange::Delete {
                    relation,
                    old,
                    old_kind,
                }))
            }
            PgOutputMessage::Truncate(truncate) => {
                self.require_transaction("Truncate")?;
                let relations = truncate
                    .relation_oids
                    .iter()
                    .map(|&oid| self.lookup(oid))
                    .collect::<Result<_, _>>()?;
                Some(ReplicationEvent::Change(WalChange::Truncate {
                    relations,
                    cascade: truncate.cascade(),
                    restart_identity: truncate.restart_identity(),
                }))
            }
            PgOutputMessage::Message(message) => Some(ReplicationEvent::LogicalMessage {
                transactional: message.transactional(),
                lsn: message.lsn,
                prefix: message.prefix.to_owned(),
                content: bytes::Bytes::copy_from_slice(message.content),
            }),
            PgOutputMessage::Origin(_)
            | PgOutputMessage::Type(_)
            | PgOutputMessage::Unknown { .. } => None,
        };
        Ok(event)
    }

    fn begin(&mut self, begin: pgoutput::Begin) -> Result<ReplicationEvent, AssemblyError> {
        if let Some(open) = self.open {
            return Err(AssemblyError::NestedBegin {
                open: open.xid,
                new: begin.xid,
            });
        }
        self.open = Some(OpenTransaction {
            xid: begin.xid,
            commit_lsn: begin.final_lsn,
        });
        Ok(ReplicationEvent::Begin {
            xid: begin.xid,
            commit_lsn: begin.final_lsn,
            commit_time_micros: begin.commit_time_micros,
        })
    }

    fn commit(&mut self, commit: pgoutput::Commit) -> Result<ReplicationEvent, AssemblyError> {
        let open = self
            .open
            .take()
            .ok_or(AssemblyError::OutsideTransaction("Commit"))?;
        if open.commit_lsn != commit.commit_lsn {
            return Err(AssemblyError::CommitMismatch {
                begin: open.commit_lsn,
                commit: commit.commit_lsn,
            });
        }
        Ok(ReplicationEvent::Commit {
            xid: open.xid,
            commit_lsn: commit.commit_lsn,
            end_lsn: commit.end_lsn,
        })
    }

    fn relation_message(&mut self, message: pgoutput::Relation) -> Option<ReplicationEvent> {
        let relation = Relation {
            oid: message.oid,
            name: QualifiedName::new(namespace_name(message.namespace), message.name),
            replica_identity: message.replica_identity,
            columns: message
                .columns
                .into_iter()
                .map(|c| RelationColumn {
                    is_key: c.is_key(),
                    name: c.name,
                    type_oid: c.type_oid,
                    type_mod: c.type_mod,
                })
                .collect(),
        };
        match self.relations.get(&relation.oid) {
            Some(cached) if **cached == relation => Some(ReplicationEvent::RelationSent {
                relation: cached.clone(),
            }),
            Some(_) => {
                let relation = Arc::new(relation);
                self.relations.insert(relation.oid, relation.clone());
                Some(ReplicationEvent::RelationChanged { relation })
            }
            None => {
                let relation = Arc::new(relation);
                self.relations.insert(relation.oid, relation.clone());
                Some(ReplicationEvent::RelationSent { relation })
            }
        }
    }

    fn update(&mut self, update: pgoutput::Update<'_>) -> Result<WalChange, AssemblyError> {
        let relation = self.lookup(update.relation_oid)?;
        let (old, old_kind) = match update.old {
            None => (None, OldRowKind::Absent),
            Some(OldTuple::Key(tuple)) => {
                (Some(self.build_row(&relation, tuple)?), OldRowKind::KeyOnly)
            }
            Some(OldTuple::Full(tuple)) => {
                (Some(self.build_row(&relation, tuple)?), OldRowKind::Full)
            }
        };
        let full_old = old_kind == OldRowKind::Full;
        let mut new = self.build_row(&relation, update.new)?;
        let mut unfilled_toast = Vec::new();
        for (i, value) in update.new.columns().enumerate() {
            if value != ColumnValue::UnchangedToast {
                continue;
            }
            match (&old, new.get_mut(i)) {
                (Some(old), Some(slot)) if full_old => *slot = old.get(i).cloned().flatten(),
                _ => unfilled_toast.push(i),
            }
        }
        Ok(WalChange::Update {
            relation,
            old,
            old_kind,
            new,
            unfilled_toast,
        })
    }

    fn lookup(&self, oid: u32) -> Result<Arc<Relation>, AssemblyError> {
        self.relations
            .get(&oid)
            .cloned()
            .ok_or(AssemblyError::UnknownRelation(oid))
    }

    fn require_transaction(&self, what: &'static str) -> Result<(), AssemblyError> {
        if self.open.is_some() {
            Ok(())
        } else {
            Err(AssemblyError::OutsideTransaction(what))
        }
    }
}

/// pgoutput sends an empty namespace for `pg_catalog`.
fn namespace_name(namespace: String) -> String {
    if namespace.is_empty() {
        "pg_catalog".to_owned()
    } else {
        namespace
    }
}

impl TransactionAssembler {
    /// A row from a tuple: text values copied once into their `String`s (reused from a spent
    /// row when the pool has one); NULLs and unchanged TOAST values as `None` (the caller fills
    /// the latter).
    fn build_row(
        &mut self,
        relation: &Relation,
        tuple: TupleData<'_>,
    ) -> Result<Row, AssemblyError> {
        if tuple.len() != relation.columns.len() {
            return Err(AssemblyError::ColumnCount {
                relation: relation.name.clone(),
                expected: relation.columns.len(),
                got: tuple.len(),
            });
        }
        let mut row = self.rows.row(tuple.len());
        let mut filled = 0;
        for (i, (value, column)) in tuple.text_columns().zip(&relation.columns).enumerate() {
            let text = match value {
                TextValue::Null | TextValue::UnchangedToast => None,
                TextValue::Text(text) => Some(text),
                TextValue::InvalidUtf8 => {
                    return Err(AssemblyError::InvalidUtf8 {
                        relation: relation.name.clone(),
                        column: column.name.clone(),
                    });
                }
                TextValue::Binary => {
                    return Err(AssemblyError::BinaryValue {
                        relation: relation.name.clone(),
                        column: column.name.clone(),
                    });
                }
            };
            row_pool::fill(&mut row, i, text);
            filled = i + 1;
        }
        // The tuple was checked when decoded, so every value was read; were one not, no value
        // of the row this one was before may stay behind.
        row.truncate(filled);
        Ok(row)
    }
}

#[cfg(test)]
mod tests;
