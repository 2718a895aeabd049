//! Merging the history of a merge window into one message per key (pure code).
//!
//! A window is a run of log entries. For every key changed in it, the merged entry takes the
//! offset of the key's **last** change in the window and says the key's state there:
//!
//! | the key's changes in the window | merged entry |
//! |---|---|
//! | one change | that change, byte for byte |
//! | updates | one update: every column any of them changed, at its last value (`old_value`, when present, the first old value of each) |
//! | insert, then updates | one insert of the final row |
//! | anything, then delete | the delete |
//! | anything, delete, insert, then updates | one insert of the final row |
//!
//! Applied to the key's state at *any* point of the window before that offset, the merged
//! entry gives the state the history gives: an update sets the columns the later updates
//! set, an insert replaces the whole row (Electric clients and ours replace a row an insert
//! names), and a delete removes the row or finds it gone (a no-op). So an insert followed by
//! a delete leaves the delete, not nothing: a device that resumed between the two holds the
//! row and must see it go.
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
    #[error("log entries out of order at {0}")]
    OutOfOrder(Offset),
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
    /// The key's last change: its offset and stored bytes.
    last_offset: Offset,
    last: Vec<u8>,
    changes: usize,
    /// About the bytes the merged entry takes: the largest message of the run.
    size: u64,
}

impl KeyRun {
    fn start(change: Change, offset: Offset, payload: &[u8]) -> Self {
        let folded = match change.operation {
            Operation::Insert => Folded::Insert(change.value),
            Operation::Update => Folded::Update {
                value: change.value,
                old_value: change.old_value,
            },
            Operation::Delete => Folded::Delete,
        };
        Self {
            folded,
            last_offset: offset,
            last: payload.to_vec(),
            changes: 1,
            size: payload.len() as u64,
        }
    }

    fn push(&mut self, change: Change, offset: Offset, payload: &[u8]) -> Result<(), MergeError> {
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
        self.last_offset = offset;
        self.last.clear();
        self.last.extend_from_slice(payload);
        self.changes += 1;
        self.size = self.size.max(payload.len() as u64);
        Ok(())
    }

    /// The merged entry's bytes.
    fn finish(self, key: &str) -> Result<Vec<u8>, MergeError> {
        let last_op = shapes::wire::operation_of(&self.last);
        let verbatim = self.changes == 1
            || matches!(
                (&self.folded, last_op),
                (Folded::Delete, _) | (Folded::Insert(_), Some(Operation::Insert))
            );
        if verbatim {
            return Ok(self.last);
        }
        let mut out = Vec::with_capacity(self.last.len() * 2);
        match &self.folded {
            Folded::Insert(row) => {
                message::write(&mut out, key, Operation::Insert, row, None, &self.last)?;
            }
            Folded::Update { value, old_value } => message::write(
                &mut out,
                key,
                Operation::Update,
                value,
                old_value.as_ref(),
                &self.last,
            )?,
            Folded::Delete => return Ok(self.last),
        }
        Ok(out)
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
    pub fn push(&mut self, offset: Offset, payload: &[u8]) -> Result<(), MergeError> {
        if self.last_offset.is_some_and(|last| last >= offset) {
            return Err(MergeError::OutOfOrder(offset));
        }
        self.last_offset = Some(offset);
        let change = message::parse(payload)?;
        match self.runs.get_mut(&change.key) {
            Some(run) => {
                let before = run.size;
                run.push(change, offset, payload)?;
                self.size += run.size - before;
            }
            None => {
                let key = change.key.clone();
                let run = KeyRun::start(change, offset, payload);
                self.size += run.size;
                self.runs.insert(key, run);
            }
        }
        Ok(())
    }

    /// About the bytes the merged window takes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The merged entries in offset order; the window is empty again after (the next window
    /// continues after the last offset).
    pub fn take(&mut self) -> Result<Vec<(Offset, Vec<u8>)>, MergeError> {
        let mut merged = Vec::with_capacity(self.runs.len());
        for (key, run) in self.runs.drain() {
            let offset = run.last_offset;
            merged.push((offset, run.finish(&key)?));
        }
        merged.sort_unstable_by_key(|(offset, _)| *offset);
        self.size = 0;
        Ok(merged)
    }
}

#[cfg(test)]
#[path = "merge_properties.rs"]
mod properties;
