//! Electric's tags and move events: which rows leave a shape when the server sends no delete
//! for them (`moves=events`), kept as TanStack DB's electric collection (0.4, DNF mode) keeps
//! them.
//!
//! Every row message of a shape whose `where` has subqueries carries `tags` (one per disjunct of
//! the `where`, its slots joined by `/`: empty where a position is not in the disjunct, `1` for
//! a plain condition, a hash of the row's compared value for a subquery test),
//! `active_conditions` (the truth of each position for the row) and, on updates,
//! `removed_tags`. A row's [`RowTags`] are the union of the tags it was sent less the removed
//! ones, and the last non-empty active conditions. A move-out pattern `(pos, value)` makes
//! position `pos` false on every row having a tag whose slot `pos` is `value`; a row none of
//! whose disjuncts is then all true has left the shape, and the client deletes it itself. A
//! move-in makes the position true again on the rows already there (rows that enter come as
//! inserts after it).
//!
//! A disjunct's positions are its tag's non-empty slots. They are read from each row's own tags
//! rather than kept per shape: every row carries one tag per disjunct, so every row gives the
//! same positions, and nothing but the rows has to be stored and restored.
//!
//! A row sent with tags but without active conditions (a server older than DNF tags) follows
//! Electric's earlier rule: a move-out removes the matching tags, and a row left without any is
//! gone.
//!
//! The rules are written once over [`TagRows`], row states by key with a lookup by slot: an
//! in-memory map in the tests, the client's SQLite tables in [`super::tag_table`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shapes::lsn::Xid32;
use shapes::wire::Operation;

/// Rows whose tags have `value` in slot `pos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovePattern {
    pub pos: usize,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// Positions became false: rows may leave.
    Out,
    /// Positions became true again on rows already there.
    In,
}

/// A `move-out` or `move-in` event message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub kind: MoveKind,
    pub patterns: Vec<MovePattern>,
    /// The transaction that moved the rows (`headers.txids`): a row it takes out is deleted
    /// as a server delete of that transaction would be, settling a local write it echoes.
    pub txid: Option<Xid32>,
}

/// The tag headers of one row message (absent ones empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagHeaders {
    pub tags: Vec<String>,
    pub removed_tags: Vec<String>,
    pub active_conditions: Vec<bool>,
}

/// What the client knows of one row's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowTags {
    pub tags: BTreeSet<String>,
    /// `None` until a message carries non-empty active conditions.
    pub active: Option<Vec<bool>>,
}

/// What a move-out leaves of a row it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterMoveOut {
    Stays,
    Gone,
}

/// The non-empty slots of a tag, with their positions.
pub fn slots(tag: &str) -> impl Iterator<Item = (usize, &str)> {
    tag.split('/')
        .enumerate()
        .filter(|(_, slot)| !slot.is_empty())
}

impl RowTags {
    /// A row message's headers: its tags join the set, its removed tags leave it, its active
    /// conditions (when present and non-empty) replace the row's.
    pub fn apply(&mut self, headers: &TagHeaders) {
        self.tags.extend(headers.tags.iter().cloned());
        for tag in &headers.removed_tags {
            self.tags.remove(tag);
        }
        if !headers.active_conditions.is_empty() {
            self.active = Some(headers.active_conditions.clone());
        }
    }

    /// The positions of each disjunct: each tag's non-empty slots.
    pub fn disjuncts(&self) -> Vec<Vec<usize>> {
        self.tags
            .iter()
            .map(|tag| slots(tag).map(|(pos, _)| pos).collect())
            .collect()
    }

    /// Whether some disjunct has all its positions true (a position never sent is false).
    pub fn satisfies_a_disjunct(&self) -> bool {
        let Some(active) = &self.active else {
            return !self.tags.is_empty();
        };
        self.disjuncts()
            .iter()
            .any(|positions| positions.iter().all(|&p| active.get(p) == Some(&true)))
    }

    /// Every `(position, value)` of the row's tags: what a pattern can match.
    pub fn all_slots(&self) -> BTreeSet<(usize, String)> {
        self.tags
            .iter()
            .flat_map(|tag| slots(tag).map(|(pos, value)| (pos, value.to_owned())))
            .collect()
    }

    pub fn matches(&self, pattern: &MovePattern) -> bool {
        self.tags.iter().any(|tag| tag_matches(tag, pattern))
    }

    /// Applies a move-out pattern the row matches.
    pub fn move_out(&mut self, pattern: &MovePattern) -> AfterMoveOut {
        match &mut self.active {
            Some(active) => set(active, pattern.pos, false),
            None => self.tags.retain(|tag| !tag_matches(tag, pattern)),
        }
        if self.satisfies_a_disjunct() {
            AfterMoveOut::Stays
        } else {
            AfterMoveOut::Gone
        }
    }

    /// Applies a move-in pattern the row matches.
    pub fn move_in(&mut self, pattern: &MovePattern) {
        if let Some(active) = &mut self.active {
            set(active, pattern.pos, true);
        }
    }
}

fn tag_matches(tag: &str, pattern: &MovePattern) -> bool {
    tag.split('/').nth(pattern.pos) == Some(pattern.value.as_str())
}

/// Sets a position, growing the list with false (positions never sent are false).
fn set(active: &mut Vec<bool>, pos: usize, value: bool) {
    if active.len() <= pos {
        active.resize(pos + 1, false);
    }
    active[pos] = value;
}

/// Row states of one shape, by row key.
pub trait TagRows {
    type Error;

    fn row(&mut self, key: &str) -> Result<Option<RowTags>, Self::Error>;

    /// Stores `row` for `key`, which held `before`.
    fn store(
        &mut self,
        key: &str,
        before: Option<&RowTags>,
        row: &RowTags,
    ) -> Result<(), Self::Error>;

    /// Forgets `key`, which held `row`.
    fn forget(&mut self, key: &str, row: &RowTags) -> Result<(), Self::Error>;

    /// The keys of the rows matching `pattern`.
    fn matching(&mut self, pattern: &MovePattern) -> Result<Vec<String>, Self::Error>;
}

/// A row message of `key`: a delete ends the row's state; another operation adds its headers.
pub fn on_change<R: TagRows>(
    rows: &mut R,
    key: &str,
    op: Operation,
    headers: Option<&TagHeaders>,
) -> Result<(), R::Error> {
    match (op, headers) {
        (Operation::Delete, _) => {
            if let Some(row) = rows.row(key)? {
                rows.forget(key, &row)?;
            }
        }
        (_, Some(headers)) => {
            let before = rows.row(key)?;
            let mut row = before.clone().unwrap_or_default();
            row.apply(headers);
            if before.as_ref() != Some(&row) {
                rows.store(key, before.as_ref(), &row)?;
            }
        }
        (_, None) => {}
    }
    Ok(())
}

/// A move event. Returns the keys of the rows a move-out takes out of the shape, in the order
/// they left; their state is forgotten (the caller deletes the rows).
pub fn on_move<R: TagRows>(rows: &mut R, event: &Move) -> Result<Vec<String>, R::Error> {
    let mut gone = Vec::new();
    for pattern in &event.patterns {
        for key in rows.matching(pattern)? {
            let Some(before) = rows.row(&key)? else {
                continue;
            };
            let mut row = before.clone();
            match event.kind {
                MoveKind::In => row.move_in(pattern),
                MoveKind::Out => {
                    if row.move_out(pattern) == AfterMoveOut::Gone {
                        rows.forget(&key, &before)?;
                        gone.push(key);
                        continue;
                    }
                }
            }
            if row != before {
                rows.store(&key, Some(&before), &row)?;
            }
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests;
