//! Shapes whose `where` has subqueries (`project_id IN (SELECT project_id FROM members WHERE
//! user_id = $1)`): their rows move in and out as the inner tables change, without a refetch.
//!
//! - **Levels** ([`node`]): the outer table and each subquery's table are levels of one tree
//!   per shape. Every level keeps the keys of the rows that are in it; a subquery's level also
//!   counts the values its rows offer ([`node::View`]). Changes of any level's table are
//!   decided against those sets, deepest level first, in stream order.
//! - **Moves** ([`moves`]): at the commit of a transaction that changed a subquery's values,
//!   the levels above re-decide. Rows that leave are found in the kept rows (no query). Rows
//!   that come in are read by one query per level, restricted to the changed values, at a
//!   snapshot that sees the transaction; they are appended to the shape's log inside that
//!   transaction, as inserts (and leaving rows as deletes), so every client, the plain
//!   `@electric-sql/client` `Shape` included, ends with the right rows. Changes of
//!   transactions that snapshot already saw are skipped for the rows it read (the snapshot
//!   boundary rule of the shape's own snapshot, per move).
//! - **Creation** ([`initial`]): the consumer itself takes the shape's snapshot and reads every
//!   level in that one snapshot, between two transactions of the stream, so the levels and the
//!   stream agree on where each begins. The stream waits meanwhile.
//! - **A restart** ([`resync`]) reads the levels again at a new snapshot and appends one
//!   transaction taking the shape's log from what it held to that snapshot: no refetch.

mod counts;
pub mod initial;
pub mod kept;
pub mod moves;
pub mod node;
mod packed;
pub mod resync;
pub mod routes;
pub mod tags;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use shapes::definition::{ReplicaMode, ShapeDefinition};
use shapes::lsn::{Lsn, Xid32};
use shapes::routing::TableSlot;
use shapes::schema::{QualifiedName, Row, TableSchema};

use crate::read_path::router::SnapshotHolds;
use node::{Node, Outcome};

/// The levels of one subquery shape.
#[derive(Debug, Clone)]
pub struct SubqueryShape {
    pub root: Node,
    /// The tombstone column of the outer table: a row with it set is not there.
    pub tombstone: Option<usize>,
}

/// A change of what a subquery shape's levels hold (see [`SubqueryShape::drain_traces`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traced {
    /// A row of the table in `slot` is now kept by a level (`kept`) or no longer.
    Row {
        slot: TableSlot,
        key: u64,
        kept: bool,
    },
    /// Subquery `subquery` of level `level`'s `where` now offers a value (`key`: its
    /// [`counts::value_hash`]) or no longer.
    Value {
        level: u32,
        subquery: usize,
        key: u64,
        offered: bool,
    },
}

/// Whether a shape needs the subquery machinery.
pub fn has_subqueries(definition: &ShapeDefinition) -> bool {
    definition
        .where_clause()
        .is_some_and(|w| w.has_subqueries())
}

impl SubqueryShape {
    pub fn new(
        layout: Arc<TableSchema>,
        definition: &ShapeDefinition,
        tombstone: Option<usize>,
    ) -> SubqueryShape {
        // A delete of `replica=full` carries the whole old row: keep what it shows.
        let extra: Vec<usize> = match definition.replica() {
            ReplicaMode::Full => definition.selected_columns().to_vec(),
            ReplicaMode::Default => Vec::new(),
        };
        let mut root = Node::new(layout, definition.shared_where_clause().cloned(), &extra, 0);
        let mut level = 0;
        root.for_each_mut(&mut |n| {
            n.level = level;
            level += 1;
        });
        SubqueryShape { root, tombstone }
    }

    /// Hands `f` what changed in the levels since the last call (what the router's index of
    /// subquery shapes follows), and forgets it.
    pub fn drain_traces(&mut self, f: &mut dyn FnMut(Traced)) {
        fn walk(node: &mut Node, f: &mut dyn FnMut(Traced)) {
            for (i, child) in node.children.iter_mut().enumerate() {
                walk(&mut child.node, f);
                // Taken, not drained: the levels keep no room for traces between changes.
                for (key, offered) in std::mem::take(&mut child.trace) {
                    f(Traced::Value {
                        level: node.level,
                        subquery: i,
                        key,
                        offered,
                    });
                }
            }
            let trace = std::mem::take(&mut node.trace);
            if let Some(slot) = node.slot {
                for (key, kept) in trace {
                    f(Traced::Row { slot, key, kept });
                }
            }
        }
        walk(&mut self.root, f);
    }

    /// Forgets what changed in the levels (they are about to be indexed whole).
    pub fn clear_traces(&mut self) {
        self.drain_traces(&mut |_| {});
    }

    /// Every row kept by some level, as its level's table and [`kept::key_hash`], and every
    /// value a subquery offers, as the level whose `where` reads it.
    pub fn for_each_held(&self, f: &mut dyn FnMut(Traced)) {
        fn walk(node: &Node, f: &mut dyn FnMut(Traced)) {
            for (i, child) in node.children.iter().enumerate() {
                walk(&child.node, f);
                for key in child.offered() {
                    f(Traced::Value {
                        level: node.level,
                        subquery: i,
                        key,
                        offered: true,
                    });
                }
            }
            if let Some(slot) = node.slot {
                for key in node.present.hashes() {
                    f(Traced::Row {
                        slot,
                        key,
                        kept: true,
                    });
                }
            }
        }
        walk(&self.root, f);
    }

    /// Every table a level reads, with the columns it was made against.
    pub fn layouts(&self) -> Vec<Arc<TableSchema>> {
        let mut out = Vec::new();
        self.root.for_each(&mut |n| out.push(n.layout.clone()));
        out
    }

    pub fn tables(&self) -> Vec<QualifiedName> {
        let mut out: Vec<QualifiedName> = self.layouts().iter().map(|l| l.name.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn assign_slots(&mut self, slot_of: &mut dyn FnMut(&QualifiedName) -> TableSlot) {
        self.root
            .for_each_mut(&mut |n| n.slot = Some(slot_of(&n.layout.name)));
    }

    /// Every level skips what `holds` saw.
    pub fn hold_all(&mut self, holds: &SnapshotHolds) {
        let holds = Arc::new(holds.clone());
        self.root.for_each_mut(&mut |n| n.hold(&holds, None));
    }

    /// Frees the room the levels hold beyond what they keep (after they were read whole).
    pub fn shrink_to_fit(&mut self) {
        self.root.for_each_mut(&mut |n| n.shrink_to_fit());
    }

    /// A change of the table in `slot`: the subquery levels first, then the outer level,
    /// whose outcome is returned (what the shape's log gets).
    pub fn change(
        &mut self,
        slot: TableSlot,
        xid: Xid32,
        commit_lsn: Lsn,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> Option<Outcome> {
        fn level(
            node: &mut Node,
            slot: TableSlot,
            xid: Xid32,
            commit_lsn: Lsn,
            old: Option<&Row>,
            new: Option<&Row>,
        ) -> Option<Outcome> {
            for child in &mut node.children {
                if let Some(outcome) = level(&mut child.node, slot, xid, commit_lsn, old, new) {
                    child.apply(&outcome, new);
                }
            }
            (node.slot == Some(slot)).then(|| node.change(xid, commit_lsn, old, new))
        }
        let tombstone = self.tombstone;
        fn exists(row: Option<&Row>, tombstone: Option<usize>) -> Option<&Row> {
            row.filter(|r| tombstone.is_none_or(|c| r.get(c).is_none_or(Option::is_none)))
        }
        for child in &mut self.root.children {
            if let Some(outcome) = level(&mut child.node, slot, xid, commit_lsn, old, new) {
                child.apply(&outcome, new);
            }
        }
        if self.root.slot != Some(slot) {
            return None;
        }
        // Tombstones apply to the outer table only.
        let outcome = self.root.change(
            xid,
            commit_lsn,
            exists(old, tombstone),
            exists(new, tombstone),
        );
        outcome.change.is_some().then_some(outcome)
    }

    /// Whether [`SubqueryShape::change`] would change any level (so the levels are worth
    /// keeping a copy of before it).
    pub fn would_change(
        &self,
        slot: TableSlot,
        xid: Xid32,
        commit_lsn: Lsn,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> bool {
        let tombstone = self.tombstone;
        let exists = |row: Option<&Row>| -> bool {
            row.is_some_and(|r| tombstone.is_none_or(|c| r.get(c).is_none_or(Option::is_none)))
        };
        let mut any = false;
        self.root.for_each(&mut |node| {
            if any || node.slot != Some(slot) {
                return;
            }
            let root = std::ptr::eq(node, &self.root);
            let (old, new) = if root && tombstone.is_some() {
                (
                    old.filter(|r| exists(Some(r))),
                    new.filter(|r| exists(Some(r))),
                )
            } else {
                (old, new)
            };
            any = node.would_change(xid, commit_lsn, old, new);
        });
        any
    }

    /// Whether a subquery's values changed and the levels above must move rows.
    pub fn unsettled(&self) -> bool {
        let mut any = false;
        self.root.for_each(&mut |n| any |= n.unsettled());
        any
    }

    /// Forgets which values changed: the levels were just read whole, nothing has to move.
    pub fn settle(&mut self) {
        self.root.for_each_mut(&mut Node::settle);
    }

    /// The values the outer level's subqueries offer now.
    pub fn values(&self) -> node::Values<'_> {
        node::Values(&self.root.children)
    }

    /// Kept rows of the outer level (what the shape's clients hold).
    pub fn rows(&self) -> usize {
        self.root.present.len()
    }
}

/// Every table the subqueries of `where_clause` read, at any depth.
pub fn tables_read(where_clause: &shapes::where_clause::WhereClause) -> Vec<QualifiedName> {
    let mut out = Vec::new();
    for subquery in where_clause.subqueries() {
        out.push(subquery.table.clone());
        if let Some(inner) = &subquery.where_clause {
            out.extend(tables_read(inner));
        }
    }
    out.sort();
    out.dedup();
    out
}
