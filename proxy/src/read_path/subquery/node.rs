//! One level of a subquery shape: a table, its `where`, the rows of it that are in, and the
//! subqueries its `where` reads (each a [`View`] of another level). Pure: no I/O.
//!
//! A level keeps the rows that are in it (by message key), with only the columns it needs to
//! decide again later: the key, the columns its `where` reads (so a move can re-evaluate the
//! row), the compared columns of a view, and, on the outer level of a `replica=full` shape,
//! the selected columns (a delete carries the whole old row).
//!
//! Whether a change puts a row in or out is decided against that set, not against the old row:
//! the stream and the move-in queries may have told different stories about a row's past
//! (a moved-in row was read at a later snapshot), and the set is what the shape's log says.

use std::collections::HashSet;
use std::sync::Arc;

use shapes::lsn::{Lsn, Xid32};
use shapes::routing::{RowChange, TableSlot};
use shapes::schema::{Row, TableSchema};
use shapes::where_clause::types::SqlType;
use shapes::where_clause::{Subquery, SubqueryValues, ValueKey, WhereClause};
use shapes::wire;

use super::counts::{ValueCounts, value_hash};
use super::kept::KeptRows;
use crate::read_path::router::SnapshotHolds;

/// Deepest nesting of subqueries a shape may have (the `where` language refuses deeper).
pub const MAX_DEPTH: usize = 8;

/// Changes a snapshot already holds: those of the transactions it sees, for the rows of some
/// keys (those a move-in query read) or for all of them (the shape's snapshot).
#[derive(Debug, Clone)]
struct Hold {
    holds: Arc<SnapshotHolds>,
    /// The keys, as rows of key columns only.
    keys: Option<Box<KeptRows>>,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// The level's number in its shape (unique in it; see [`super::SubqueryShape::new`]).
    pub level: u32,
    pub layout: Arc<TableSchema>,
    pub slot: Option<TableSlot>,
    /// Shared with the shape's definition (or its subquery).
    pub where_clause: Option<Arc<WhereClause>>,
    pub children: Vec<View>,
    /// The rows that are in, each with the columns kept.
    pub present: KeptRows,
    holds: Vec<Hold>,
    /// Keys (by [`super::kept::key_hash`]) that came into `present` (`true`) or left it since
    /// the router last looked: its index of subquery shapes follows them.
    pub trace: Vec<(u64, bool)>,
}

/// A subquery's current rows, as the values they offer (counted: several rows may offer one).
#[derive(Debug, Clone)]
pub struct View {
    pub subquery: Arc<Subquery>,
    pub node: Node,
    counts: ValueCounts,
    nulls: u32,
    /// Values whose presence changed since the last move, and whether something changed for
    /// every row: whether NULLs are offered, or whether the view is empty (both decide
    /// `NOT IN` and `IN` for rows whose own value is not offered or is NULL).
    touched: HashSet<ValueKey>,
    touched_nulls: bool,
    /// Values (by [`value_hash`]) that came to be offered (`true`) or no longer are since the
    /// router last looked.
    pub trace: Vec<(u64, bool)>,
}

/// The values of a level's subqueries, for its `where`.
pub struct Values<'a>(pub &'a [View]);

impl SubqueryValues for Values<'_> {
    fn contains(&self, subquery: usize, key: &ValueKey) -> bool {
        self.0.get(subquery).is_some_and(|v| v.counts.contains(key))
    }

    fn has_null(&self, subquery: usize) -> bool {
        self.0.get(subquery).is_some_and(|v| v.nulls > 0)
    }

    fn is_empty(&self, subquery: usize) -> bool {
        self.0
            .get(subquery)
            .is_none_or(|v| v.nulls == 0 && v.counts.is_empty())
    }
}

/// Rows a move-in reads: those whose `columns`, cast to `types`, equal one of `keys`.
#[derive(Debug)]
pub struct Candidates {
    pub columns: Vec<usize>,
    pub types: Vec<String>,
    pub keys: Vec<ValueKey>,
}

/// Types whose values a move-in query may look up by their canonical text.
fn sargable(ty: &SqlType) -> bool {
    ty.is_integer()
        || matches!(
            ty,
            SqlType::Numeric
                | SqlType::Text
                | SqlType::Varchar
                | SqlType::Uuid
                | SqlType::Date
                | SqlType::Bool
        )
}

/// Values that came into and left a level's subqueries (subquery number, value).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MovedValues {
    pub came: Vec<(usize, ValueKey)>,
    pub left: Vec<(usize, ValueKey)>,
}

/// What a change did to a level: the row that left (as kept) and whether one came in.
#[derive(Debug, Default)]
pub struct Outcome {
    pub change: Option<RowChange>,
    pub left: Option<Row>,
}

impl Node {
    /// A level over `layout` filtered by `where_clause`; `extra` are columns to keep besides
    /// those the `where` and the key read.
    pub fn new(
        layout: Arc<TableSchema>,
        where_clause: Option<Arc<WhereClause>>,
        extra: &[usize],
        depth: usize,
    ) -> Node {
        let key_columns = wire::key_columns(&layout);
        let mut keep: Vec<usize> = extra.to_vec();
        let mut children = Vec::new();
        if let Some(w) = &where_clause {
            keep.extend(w.columns_used());
            if depth < MAX_DEPTH {
                children = w
                    .subqueries()
                    .iter()
                    .map(|subquery| View::new(subquery.clone(), depth + 1))
                    .collect();
            }
        }
        let present = KeptRows::new(layout.columns.len(), &key_columns, &keep);
        Node {
            level: 0,
            layout,
            slot: None,
            where_clause,
            children,
            present,
            holds: Vec::new(),
            trace: Vec::new(),
        }
    }

    /// The message key of `row` (what a shape's log names it by).
    pub fn key(&self, row: &Row) -> Box<str> {
        wire::message_key(
            &self.layout.name,
            self.present.key_columns().map(|i| row[i].as_deref()),
        )
        .into()
    }

    /// Whether two rows have the same key.
    fn same_key(&self, a: &Row, b: &Row) -> bool {
        self.present.key_columns().all(|i| a.get(i) == b.get(i))
    }

    /// Whether `row` is in, with the subqueries as they are now.
    pub fn admits(&self, row: &Row) -> bool {
        match &self.where_clause {
            None => true,
            Some(w) => w.matches_with(row, &Values(&self.children)),
        }
    }

    /// Skip the changes of transactions `holds` sees, for every row (`None`) or for those
    /// with the key of one of `rows`.
    pub fn hold(&mut self, holds: &Arc<SnapshotHolds>, rows: Option<&[Row]>) {
        let keys = match rows {
            None => None,
            Some([]) => return,
            Some(rows) => {
                let key_columns: Vec<usize> = self.present.key_columns().collect();
                let mut keys = KeptRows::new(self.layout.columns.len(), &key_columns, &[]);
                for row in rows {
                    keys.insert(row);
                }
                keys.shrink_to_fit();
                Some(Box::new(keys))
            }
        };
        self.holds.reserve_exact(1);
        self.holds.push(Hold {
            holds: holds.clone(),
            keys,
        });
    }

    /// Frees the room the level holds beyond what it keeps.
    pub fn shrink_to_fit(&mut self) {
        self.present.shrink_to_fit();
        for child in &mut self.children {
            child.counts.shrink_to_fit();
        }
    }

    /// Every level, this one last (children before their parents).
    pub fn for_each_mut(&mut self, f: &mut dyn FnMut(&mut Node)) {
        for child in &mut self.children {
            child.node.for_each_mut(f);
        }
        f(self);
    }

    pub fn for_each(&self, f: &mut dyn FnMut(&Node)) {
        for child in &self.children {
            child.node.for_each(f);
        }
        f(self);
    }

    fn held(&mut self, xid: Xid32, commit_lsn: Lsn, rows: [Option<&Row>; 2]) -> bool {
        if !self.holds.is_empty() {
            self.holds.retain(|h| commit_lsn < h.holds.below);
            if self.holds.is_empty() {
                self.holds = Vec::new();
            }
        }
        self.holds
            .iter()
            .any(|h| hold_covers(h, xid, commit_lsn, rows))
    }

    /// Whether [`Node::change`] would change anything (a row of this level is in, or would
    /// come in), without changing it: most changes of a table concern none of the many
    /// subquery shapes that read it.
    pub fn would_change(
        &self,
        xid: Xid32,
        commit_lsn: Lsn,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> bool {
        // Without an old row (an update under the default replica identity) the new one
        // names the row.
        let old_row = old.or(new);
        let held = self
            .holds
            .iter()
            .any(|h| commit_lsn < h.holds.below && hold_covers(h, xid, commit_lsn, [old_row, new]));
        if held {
            return false;
        }
        old_row.is_some_and(|r| self.present.contains(r)) || new.is_some_and(|r| self.admits(r))
    }

    /// A row change of this level's table: decides it against the rows that are in.
    pub fn change(
        &mut self,
        xid: Xid32,
        commit_lsn: Lsn,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> Outcome {
        let old_row = old.or(new);
        if self.held(xid, commit_lsn, [old_row, new]) {
            return Outcome::default();
        }
        let left = old_row.and_then(|r| self.present.remove(r));
        let now = new.filter(|r| self.admits(r));
        let stays = match (&left, now, old_row) {
            (Some(_), Some(now), Some(old)) => self.same_key(old, now),
            _ => false,
        };
        if let (Some(old), false) = (old_row, stays || left.is_none()) {
            self.trace.push((self.present.hash_of(old), false));
        }
        if let Some(row) = now {
            if !stays {
                self.trace.push((self.present.hash_of(row), true));
            }
            self.present.insert(row);
        }
        let change = match (&left, now) {
            (Some(_), Some(_)) => Some(RowChange::Update),
            (Some(_), None) => Some(RowChange::Delete),
            (None, Some(_)) => Some(RowChange::Insert),
            (None, None) => None,
        };
        Outcome { change, left }
    }

    /// Rows that were read by a move-in query (or a snapshot): those not in yet that the
    /// `where` admits come in. Returns them.
    pub fn admit_read(&mut self, rows: Vec<Row>) -> Vec<Row> {
        let mut admitted = Vec::new();
        for row in rows {
            if self.present.contains(&row) || !self.admits(&row) {
                continue;
            }
            self.trace.push((self.present.hash_of(&row), true));
            self.present.insert(&row);
            admitted.push(row);
        }
        admitted
    }

    /// Whether a subquery of this level changed since its last move.
    pub fn unsettled(&self) -> bool {
        self.children
            .iter()
            .any(|c| c.touched_nulls || !c.touched.is_empty())
    }

    /// The rows that leave because their subqueries changed (checked only for rows that
    /// offer a touched value).
    pub fn move_out(&mut self) -> Vec<Row> {
        let Some(w) = &self.where_clause else {
            return Vec::new();
        };
        let children = &self.children;
        let values = Values(children);
        let touched = |row: &Row| {
            children.iter().enumerate().any(|(i, c)| {
                c.touched_nulls || w.outer_key(i, row).is_some_and(|k| c.touched.contains(&k))
            })
        };
        let leaving = self
            .present
            .remove_if(|row| touched(row) && !w.matches_with(row, &values));
        for row in &leaving {
            self.trace.push((self.present.hash_of(row), false));
        }
        leaving
    }

    /// What a move-in query must read: for each touched subquery, the values it reads rows
    /// by, or `None` when every row must be read (NULLs changed, or the compared side is not
    /// plain columns).
    pub fn move_in_candidates(&self) -> Option<Vec<Candidates>> {
        let w = self.where_clause.as_ref()?;
        let mut out = Vec::new();
        for (i, c) in self.children.iter().enumerate() {
            if c.touched.is_empty() && !c.touched_nulls {
                continue;
            }
            let columns = w.outer_columns(i)?;
            let types = &c.subquery.types;
            if c.touched_nulls || columns.len() != types.len() || !types.iter().all(sargable) {
                return None;
            }
            out.push(Candidates {
                columns,
                types: types.iter().map(SqlType::sql_name).collect(),
                keys: c.touched.iter().cloned().collect(),
            });
        }
        Some(out)
    }

    /// The values whose presence in a subquery changed since the last move: those offered
    /// now (came in) and those no longer (left), each with its subquery's number.
    pub fn moved_values(&self) -> MovedValues {
        let mut moved = MovedValues::default();
        for (i, c) in self.children.iter().enumerate() {
            for key in &c.touched {
                if c.counts.contains(key) {
                    moved.came.push((i, key.clone()));
                } else {
                    moved.left.push((i, key.clone()));
                }
            }
        }
        moved
    }

    /// Forgets what its subqueries' last changes were (their moves are done).
    pub fn settle(&mut self) {
        for c in &mut self.children {
            // Emptied, not cleared: most levels sit idle until their next move.
            c.touched = HashSet::new();
            c.touched_nulls = false;
        }
    }
}

impl View {
    fn new(subquery: Arc<Subquery>, depth: usize) -> View {
        let parts = subquery.columns.len();
        let node = Node::new(
            subquery.schema.clone(),
            subquery.where_clause.clone(),
            &subquery.columns,
            depth,
        );
        View {
            subquery,
            node,
            counts: ValueCounts::new(parts),
            nulls: 0,
            touched: HashSet::new(),
            touched_nulls: false,
            trace: Vec::new(),
        }
    }

    /// The values the subquery's rows offer now, by [`value_hash`].
    pub fn offered(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.hashes()
    }

    fn total(&self) -> usize {
        self.counts.len() + self.nulls as usize
    }

    /// A row came into the view.
    pub fn add(&mut self, row: &Row) {
        // Empty or not decides `NULL NOT IN (…)` (true only when empty): every row may move.
        self.touched_nulls |= self.total() == 0;
        match self.subquery.key_of_inner(row) {
            None => {
                self.nulls += 1;
                self.touched_nulls |= self.nulls == 1;
            }
            Some(key) => {
                if self.counts.add(&key) == 1 {
                    self.trace.push((value_hash(&key), true));
                    self.touched.insert(key);
                }
            }
        }
    }

    /// A row left the view.
    pub fn remove(&mut self, row: &Row) {
        match self.subquery.key_of_inner(row) {
            None => {
                self.nulls = self.nulls.saturating_sub(1);
                self.touched_nulls |= self.nulls == 0;
            }
            Some(key) => {
                if self.counts.remove(&key) == Some(0) {
                    self.trace.push((value_hash(&key), false));
                    self.touched.insert(key);
                }
            }
        }
        self.touched_nulls |= self.total() == 0;
    }

    /// Applies what a change did to the view's level to its values.
    pub fn apply(&mut self, outcome: &Outcome, new: Option<&Row>) {
        if let Some(left) = &outcome.left {
            self.remove(left);
        }
        if matches!(outcome.change, Some(RowChange::Insert | RowChange::Update))
            && let Some(new) = new
        {
            self.add(new);
        }
    }
}

/// Whether `hold` holds a change of a transaction (`xid`, `commit_lsn`) to the rows with the
/// keys of `rows`.
fn hold_covers(hold: &Hold, xid: Xid32, commit_lsn: Lsn, rows: [Option<&Row>; 2]) -> bool {
    hold.holds.holds(xid, commit_lsn)
        && match &hold.keys {
            None => true,
            Some(keys) => rows.iter().flatten().any(|r| keys.contains(r)),
        }
}
