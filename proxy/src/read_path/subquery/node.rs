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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use shapes::lsn::{Lsn, Xid32};
use shapes::routing::{RowChange, TableSlot};
use shapes::schema::{QualifiedName, Row, TableSchema};
use shapes::where_clause::types::SqlType;
use shapes::where_clause::{Subquery, SubqueryValues, ValueKey, WhereClause};
use shapes::wire;

use crate::read_path::router::SnapshotHolds;

/// Deepest nesting of subqueries a shape may have (the `where` language refuses deeper).
pub const MAX_DEPTH: usize = 8;

/// Changes a snapshot already holds: those of the transactions it sees, for some keys (the
/// rows a move-in query read) or for all of them (the shape's snapshot).
#[derive(Debug, Clone)]
struct Hold {
    holds: SnapshotHolds,
    keys: Option<HashSet<Box<str>>>,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// The level's number in its shape (unique in it; see [`super::SubqueryShape::new`]).
    pub level: u32,
    pub table: QualifiedName,
    pub layout: Arc<TableSchema>,
    pub slot: Option<TableSlot>,
    pub where_clause: Option<WhereClause>,
    pub children: Vec<View>,
    key_columns: Vec<usize>,
    /// Columns kept of each row that is in.
    keep: Vec<usize>,
    pub present: HashMap<Box<str>, Row>,
    holds: Vec<Hold>,
    /// Keys (by [`key_hash`]) that came into `present` (`true`) or left it since the router
    /// last looked: its index of subquery shapes follows them.
    pub trace: Vec<(u64, bool)>,
}

/// A subquery's current rows, as the values they offer (counted: several rows may offer one).
#[derive(Debug, Clone)]
pub struct View {
    pub subquery: Arc<Subquery>,
    pub node: Node,
    counts: HashMap<ValueKey, u32>,
    nulls: u32,
    /// Values whose presence changed since the last move, and whether something changed for
    /// every row: whether NULLs are offered, or whether the view is empty (both decide
    /// `NOT IN` and `IN` for rows whose own value is not offered or is NULL).
    touched: HashSet<ValueKey>,
    touched_nulls: bool,
    /// Values that came to be offered (`true`) or no longer are since the router last
    /// looked.
    pub trace: Vec<(ValueKey, bool)>,
}

/// The hash a kept row's key is indexed by (the router finds the shapes holding a changed
/// row by it; a collision only makes it ask one shape more).
pub fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The values of a level's subqueries, for its `where`.
pub struct Values<'a>(pub &'a [View]);

impl SubqueryValues for Values<'_> {
    fn contains(&self, subquery: usize, key: &ValueKey) -> bool {
        self.0
            .get(subquery)
            .is_some_and(|v| v.counts.contains_key(key))
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
        where_clause: Option<WhereClause>,
        extra: &[usize],
        depth: usize,
    ) -> Node {
        let key_columns = wire::key_columns(&layout);
        let mut keep: Vec<usize> = key_columns.clone();
        keep.extend_from_slice(extra);
        let mut children = Vec::new();
        if let Some(w) = &where_clause {
            keep.extend(w.columns_used());
            if depth < MAX_DEPTH {
                for subquery in w.subqueries() {
                    children.push(View::new(subquery.clone(), depth + 1));
                }
            }
        }
        keep.sort_unstable();
        keep.dedup();
        Node {
            level: 0,
            table: layout.name.clone(),
            layout,
            slot: None,
            where_clause,
            children,
            key_columns,
            keep,
            present: HashMap::new(),
            holds: Vec::new(),
            trace: Vec::new(),
        }
    }

    pub fn key(&self, row: &Row) -> Box<str> {
        wire::message_key(
            &self.table,
            self.key_columns.iter().map(|&i| row[i].as_deref()),
        )
        .into()
    }

    /// Whether `row` is in, with the subqueries as they are now.
    pub fn admits(&self, row: &Row) -> bool {
        match &self.where_clause {
            None => true,
            Some(w) => w.matches_with(row, &Values(&self.children)),
        }
    }

    fn kept(&self, row: &Row) -> Row {
        let mut kept = vec![None; row.len()];
        for &i in &self.keep {
            if let Some(v) = row.get(i) {
                kept[i] = v.clone();
            }
        }
        kept
    }

    /// Skip the changes of transactions `snapshot` sees, for every key (`None`) or these.
    pub fn hold(&mut self, holds: SnapshotHolds, keys: Option<HashSet<Box<str>>>) {
        if keys.as_ref().is_some_and(HashSet::is_empty) {
            return;
        }
        self.holds.push(Hold { holds, keys });
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

    fn held(&mut self, xid: Xid32, commit_lsn: Lsn, keys: [Option<&str>; 2]) -> bool {
        self.holds.retain(|h| commit_lsn < h.holds.below);
        self.holds.iter().any(|h| {
            h.holds.holds(xid, commit_lsn)
                && match &h.keys {
                    None => true,
                    Some(set) => keys.iter().flatten().any(|k| set.contains(*k)),
                }
        })
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
        let new_key = new.map(|r| self.key(r));
        let old_key = old.map(|r| self.key(r)).or_else(|| new_key.clone());
        let keys = [old_key.as_deref(), new_key.as_deref()];
        let held = self.holds.iter().any(|h| {
            commit_lsn < h.holds.below
                && h.holds.holds(xid, commit_lsn)
                && match &h.keys {
                    None => true,
                    Some(set) => keys.iter().flatten().any(|k| set.contains(*k)),
                }
        });
        if held {
            return false;
        }
        old_key.is_some_and(|k| self.present.contains_key(&k))
            || new.is_some_and(|r| self.admits(r))
    }

    /// A row change of this level's table: decides it against the rows that are in.
    pub fn change(
        &mut self,
        xid: Xid32,
        commit_lsn: Lsn,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> Outcome {
        let new_key = new.map(|r| self.key(r));
        let old_key = old.map(|r| self.key(r)).or_else(|| new_key.clone());
        if self.held(xid, commit_lsn, [old_key.as_deref(), new_key.as_deref()]) {
            return Outcome::default();
        }
        let left = old_key.as_ref().and_then(|k| self.present.remove(k));
        let now = new.filter(|r| self.admits(r));
        let stays = left.is_some() && now.is_some() && old_key == new_key;
        if let (Some(key), false) = (&old_key, stays || left.is_none()) {
            self.trace.push((key_hash(key), false));
        }
        if let (Some(row), Some(key)) = (now, new_key) {
            if !stays {
                self.trace.push((key_hash(&key), true));
            }
            self.present.insert(key, self.kept(row));
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
            let key = self.key(&row);
            if self.present.contains_key(&key) || !self.admits(&row) {
                continue;
            }
            self.trace.push((key_hash(&key), true));
            self.present.insert(key, self.kept(&row));
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
        let values = Values(&self.children);
        let touched = |row: &Row| {
            self.children.iter().enumerate().any(|(i, c)| {
                c.touched_nulls || w.outer_key(i, row).is_some_and(|k| c.touched.contains(&k))
            })
        };
        let leaving: Vec<Box<str>> = self
            .present
            .iter()
            .filter(|(_, row)| touched(row) && !w.matches_with(row, &values))
            .map(|(k, _)| k.clone())
            .collect();
        self.trace
            .extend(leaving.iter().map(|k| (key_hash(k), false)));
        leaving
            .iter()
            .filter_map(|k| self.present.remove(k))
            .collect()
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
                if c.counts.contains_key(key) {
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
            c.touched.clear();
            c.touched_nulls = false;
        }
    }
}

impl View {
    fn new(subquery: Arc<Subquery>, depth: usize) -> View {
        let node = Node::new(
            subquery.schema.clone(),
            subquery.where_clause.clone(),
            &subquery.columns,
            depth,
        );
        View {
            subquery,
            node,
            counts: HashMap::new(),
            nulls: 0,
            touched: HashSet::new(),
            touched_nulls: false,
            trace: Vec::new(),
        }
    }

    /// The values the subquery's rows offer now.
    pub fn offered(&self) -> impl Iterator<Item = &ValueKey> {
        self.counts.keys()
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
                let count = self.counts.entry(key.clone()).or_insert(0);
                *count += 1;
                if *count == 1 {
                    self.trace.push((key.clone(), true));
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
                if let Some(count) = self.counts.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.counts.remove(&key);
                        self.trace.push((key.clone(), false));
                        self.touched.insert(key);
                    }
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
