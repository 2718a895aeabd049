//! Merging the history of a merge window into one message per key (pure code).
//!
//! A window is a run of log entries. For every key changed in it, the merged entry takes the
//! offset of the key's **last** change in the window and says the key's state there:
//!
//! | the key's changes in the window | merged entries |
//! |---|---|
//! | one change | that change, byte for byte |
//! | updates | one update: every column any of them changed, at its last value (`old_value`, when present, the first old value of each) |
//! | insert, then updates | one insert of the final row |
//! | insert, …, delete | a [`Retraction`](super::super::record::Retraction) of the last delete: the row was born and died in the window |
//! | update or delete, …, delete | the delete |
//! | update or delete, …, delete, insert, then updates | that delete, then one insert of the final row |
//! | insert, …, delete, insert, then updates | one insert of the final row |
//!
//! Applied to the key's state at *any* point of the window before that offset, the merged
//! entries give the state the history gives: an update sets the columns the later updates
//! set, an insert replaces the whole row (Electric clients and ours replace a row an insert
//! names), and a delete removes the row or finds it gone (a no-op). A retraction is served
//! only to a reader that resumed at or after the key's first insert in the window (and, like
//! every entry, before its offset): one that may hold the row. So a reader from the start of
//! a window (a new device from `-1`, or one at the end of an earlier window) gets exactly the
//! messages of a clean history: never a delete of a row it does not hold, never an insert
//! of one it holds, and nothing at all of a row that lived and died inside the window.
//!
//! A key's first insert in an older compacted window is known only by that window: the
//! retraction is then served to every reader inside that window (one from before the older
//! compaction may get a delete of a row it never got: a no-op) and after it. A
//! range compacted before retractions existed ([`Origin::Merged`] without `fresh_inserts`)
//! may hold an insert that replaced a row present before its window; such an insert counts
//! as a change of a row that existed, so its later delete stays a delete.
//!
//! Keys are independent: a key change (a delete of the old key at op `n`, an insert of the
//! new one at `n + 1`) is two keys' histories, merged each on its own.

use std::collections::HashMap;

use shapes::offset::Offset;
use shapes::wire::Operation;

use super::message::{self, Change, MessageError, Values};

/// Why a window cannot be merged; the log is left as it is.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("key {key} is updated at {offset} after it was deleted")]
    UpdateAfterDelete { key: String, offset: Offset },
    #[error("key {key} is retracted at {offset} while the history holds its row")]
    RetractionOfHeldRow { key: String, offset: Offset },
    #[error("log entries out of order at {0}")]
    OutOfOrder(Offset),
}

/// Where an entry given to a window comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A change as the writer logged it.
    Logged,
    /// An entry of a window an earlier compaction merged; `window_from`: the first offset a
    /// reader inside that window may hold (right after the window before it);
    /// `fresh_inserts`: that compaction wrote a merged insert only for a key without a row
    /// before the window (`CommitMark::FRESH_INSERTS`).
    Merged {
        window_from: Offset,
        fresh_inserts: bool,
    },
}

/// One entry of a merged window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergedEntry {
    /// A message every reader past its offset gets.
    Change(Vec<u8>),
    /// A delete served only to readers resuming at or after `held_from`.
    Retraction { held_from: Offset, message: Vec<u8> },
}

/// What a key's changes so far come to.
#[derive(Debug, Clone)]
enum Folded {
    Insert(Values),
    Update {
        value: Values,
        old_value: Option<Values>,
    },
    Delete,
}

#[derive(Debug)]
struct KeyRun {
    folded: Folded,
    /// The key had a row before the window (its first change is not an insert of a new row).
    existed_before: bool,
    /// The first offset at which a reader may hold a row of the key that the window saw.
    held_from: Offset,
    /// The key's last delete before its last insert, when one came after a delete.
    last_delete: Option<(Offset, Vec<u8>)>,
    /// The key's last change: its offset and stored bytes.
    last_offset: Offset,
    last: Vec<u8>,
    changes: usize,
    /// About the bytes the merged entry takes: the largest message of the run.
    size: u64,
}

impl KeyRun {
    fn start(change: Change, offset: Offset, payload: &[u8], origin: Origin) -> Self {
        let existed_before = match (change.operation, origin) {
            (Operation::Insert, Origin::Logged) => false,
            (Operation::Insert, Origin::Merged { fresh_inserts, .. }) => !fresh_inserts,
            _ => true,
        };
        let held_from = match origin {
            Origin::Logged => offset,
            Origin::Merged { window_from, .. } => window_from,
        };
        let folded = match change.operation {
            Operation::Insert => Folded::Insert(change.value),
            Operation::Update => Folded::Update {
                value: change.value,
                old_value: change.old_value,
            },
            Operation::Delete => Folded::Delete,
        };
        Self::first(folded, existed_before, held_from, offset, payload)
    }

    /// A run of one change at `offset`, stored as `payload`.
    fn first(
        folded: Folded,
        existed_before: bool,
        held_from: Offset,
        offset: Offset,
        payload: &[u8],
    ) -> Self {
        Self {
            folded,
            existed_before,
            held_from,
            last_delete: None,
            last_offset: offset,
            last: payload.to_vec(),
            changes: 1,
            size: payload.len() as u64,
        }
    }

    /// Records the run's latest change, at `offset`, stored as `payload`.
    fn follow(&mut self, offset: Offset, payload: &[u8]) {
        self.last_offset = offset;
        self.last.clear();
        self.last.extend_from_slice(payload);
        self.changes += 1;
        self.size = self.size.max(payload.len() as u64);
    }

    fn push(&mut self, change: Change, offset: Offset, payload: &[u8]) -> Result<(), MergeError> {
        if change.operation == Operation::Insert && matches!(self.folded, Folded::Delete) {
            // The row comes back: a reader from before the window must see the delete first.
            self.last_delete = Some((self.last_offset, std::mem::take(&mut self.last)));
        }
        self.folded = match (std::mem::replace(&mut self.folded, Folded::Delete), change) {
            (
                _,
                Change {
                    operation: Operation::Delete,
                    ..
                },
            ) => Folded::Delete,
            (
                _,
                Change {
                    operation: Operation::Insert,
                    value,
                    ..
                },
            ) => Folded::Insert(value),
            (Folded::Insert(mut row), Change { value, .. }) => {
                row.overlay(&value);
                Folded::Insert(row)
            }
            (
                Folded::Update {
                    mut value,
                    old_value,
                },
                Change {
                    value: newer,
                    old_value: newer_old,
                    ..
                },
            ) => {
                value.overlay(&newer);
                let old_value = match (old_value, newer_old) {
                    (Some(mut old), Some(newer_old)) => {
                        old.underlay(&newer_old);
                        Some(old)
                    }
                    (old, newer_old) => old.or(newer_old),
                };
                Folded::Update { value, old_value }
            }
            (Folded::Delete, change) => {
                return Err(MergeError::UpdateAfterDelete {
                    key: change.key,
                    offset,
                });
            }
        };
        self.follow(offset, payload);
        Ok(())
    }

    /// A run that starts with a retraction: no row before it, none after.
    fn retraction(offset: Offset, held_from: Offset, message: &[u8]) -> Self {
        Self::first(Folded::Delete, false, held_from, offset, message)
    }

    /// A retraction after the run's changes: the row must be gone by then (it was not there
    /// before the retraction's window), and is gone after it.
    fn push_retraction(
        &mut self,
        key: &str,
        offset: Offset,
        message: &[u8],
    ) -> Result<(), MergeError> {
        if !matches!(self.folded, Folded::Delete) {
            return Err(MergeError::RetractionOfHeldRow {
                key: key.to_owned(),
                offset,
            });
        }
        self.follow(offset, message);
        Ok(())
    }

    /// Appends the merged entries (one, or a delete and an insert) to `out`.
    fn finish(self, key: &str, out: &mut Vec<(Offset, MergedEntry)>) -> Result<(), MergeError> {
        // The last change already says what the run comes to.
        let verbatim = self.changes == 1
            || matches!(
                (&self.folded, shapes::wire::operation_of(&self.last)),
                (Folded::Insert(_), Some(Operation::Insert))
            );
        let entry = match self.folded {
            Folded::Delete if self.existed_before => MergedEntry::Change(self.last),
            Folded::Delete => MergedEntry::Retraction {
                held_from: self.held_from,
                message: self.last,
            },
            Folded::Insert(row) => {
                if let (true, Some((offset, delete))) = (self.existed_before, self.last_delete) {
                    out.push((offset, MergedEntry::Change(delete)));
                }
                if verbatim {
                    MergedEntry::Change(self.last)
                } else {
                    let mut bytes = Vec::with_capacity(self.last.len() * 2);
                    message::write(&mut bytes, key, Operation::Insert, &row, None, &self.last)?;
                    MergedEntry::Change(bytes)
                }
            }
            Folded::Update { value, old_value } => {
                if verbatim {
                    MergedEntry::Change(self.last)
                } else {
                    let mut bytes = Vec::with_capacity(self.last.len() * 2);
                    message::write(
                        &mut bytes,
                        key,
                        Operation::Update,
                        &value,
                        old_value.as_ref(),
                        &self.last,
                    )?;
                    MergedEntry::Change(bytes)
                }
            }
        };
        out.push((self.last_offset, entry));
        Ok(())
    }
}

/// The window being merged.
#[derive(Debug, Default)]
pub struct Window {
    runs: HashMap<String, KeyRun>,
    last_offset: Option<Offset>,
    /// About the bytes of the merged entries.
    size: u64,
}

impl Window {
    /// Adds the next entry of the log (offsets must increase).
    pub fn push(
        &mut self,
        offset: Offset,
        payload: &[u8],
        origin: Origin,
    ) -> Result<(), MergeError> {
        self.advance(offset)?;
        let change = message::parse(payload)?;
        match self.runs.get_mut(&change.key) {
            Some(run) => {
                let before = run.size;
                run.push(change, offset, payload)?;
                self.size += run.size - before;
            }
            None => {
                let key = change.key.clone();
                let run = KeyRun::start(change, offset, payload, origin);
                self.size += run.size;
                self.runs.insert(key, run);
            }
        }
        Ok(())
    }

    /// Adds a retraction an earlier compaction wrote (offsets must increase): the whole
    /// history of its key in its window, a row that was not there before it nor after.
    pub fn push_retraction(
        &mut self,
        offset: Offset,
        held_from: Offset,
        message: &[u8],
    ) -> Result<(), MergeError> {
        self.advance(offset)?;
        let key = message::parse(message)?.key;
        match self.runs.get_mut(&key) {
            Some(run) => {
                let before = run.size;
                run.push_retraction(key.as_str(), offset, message)?;
                self.size += run.size - before;
            }
            None => {
                let run = KeyRun::retraction(offset, held_from, message);
                self.size += run.size;
                self.runs.insert(key, run);
            }
        }
        Ok(())
    }

    fn advance(&mut self, offset: Offset) -> Result<(), MergeError> {
        if self.last_offset.is_some_and(|last| last >= offset) {
            return Err(MergeError::OutOfOrder(offset));
        }
        self.last_offset = Some(offset);
        Ok(())
    }

    /// About the bytes the merged window takes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The merged entries in offset order; the window is empty again after (the next window
    /// continues after the last offset).
    pub fn take(&mut self) -> Result<Vec<(Offset, MergedEntry)>, MergeError> {
        let mut merged = Vec::with_capacity(self.runs.len());
        for (key, run) in self.runs.drain() {
            run.finish(&key, &mut merged)?;
        }
        merged.sort_unstable_by_key(|(offset, _)| *offset);
        self.size = 0;
        Ok(merged)
    }
}

#[cfg(test)]
#[path = "merge_properties.rs"]
mod properties;
