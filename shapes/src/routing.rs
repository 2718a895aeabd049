//! The routing index: which shapes a row change touches, and how.
//!
//! Shapes are registered per table. A shape whose `where` has a conjunct `col = constant` or
//! `col IN (constants…)` is filed in a hash index under that column's value(s); every other
//! shape (no `where`, or nothing hashable) is on the table's *fallback* list. Routing a change
//! looks up the old and new rows' values in each indexed column (a handful of hash lookups,
//! however many shapes there are), evaluates the full `where` of the shapes found there and of
//! the fallback shapes on the old and new rows, and reports per shape:
//!
//! | old row matched | new row matches | change |
//! |---|---|---|
//! | no  | yes | [`RowChange::Insert`] |
//! | yes | yes | [`RowChange::Update`] |
//! | yes | no  | [`RowChange::Delete`] |
//!
//! Hash keys are normalised through the column's type ([`value::equality_key`]), so `id = '01'`
//! and a row with `1`, or a uuid written in capitals, cannot miss.

use std::collections::HashMap;

use crate::schema::{QualifiedName, TableSchema};
use crate::where_clause::ast_access::{Conjunct, indexable_conjunct};
use crate::where_clause::types::SqlType;
use crate::where_clause::value;
use crate::where_clause::WhereClause;

/// A shape's id in the index (the proxy's own numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeId(pub u64);

/// What a change means for one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowChange {
    Insert,
    Update,
    Delete,
}

/// One hashed column of a table.
#[derive(Debug)]
struct ColumnIndex {
    column: usize,
    ty: SqlType,
    by_value: HashMap<Box<str>, Vec<ShapeId>>,
}

#[derive(Debug, Default)]
struct TableIndex {
    columns: Vec<ColumnIndex>,
    fallback: Vec<ShapeId>,
    shapes: HashMap<ShapeId, Option<WhereClause>>,
}

/// Shapes by table, with hash indexes on equality conjuncts.
///
/// ```
/// use shapes::routing::{RowChange, ShapeId, ShapeIndex};
/// use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
/// use shapes::where_clause::WhereClause;
/// let col = |name: &str, ty: &str| Column {
///     name: name.into(), ty: PgType { oid: 0, name: ty.into(), kind: TypeKind::Base },
///     type_mod: -1, dims: 0, not_null: false, pk_index: None, generated: false,
/// };
/// let table = TableSchema { name: QualifiedName::new("public", "t"), oid: 1,
///     columns: vec![col("id", "int8"), col("owner", "text")] };
/// let mut index = ShapeIndex::default();
/// let w = WhereClause::parse("owner = 'ann'", &Default::default(), &table).unwrap();
/// index.insert(ShapeId(1), &table, Some(&w));
/// let old = [Some("1".to_string()), Some("ann".to_string())];
/// let new = [Some("1".to_string()), Some("bob".to_string())];
/// let mut out = Vec::new();
/// index.route(&table.name, Some(&old), Some(&new), &mut out);
/// assert_eq!(out, [(ShapeId(1), RowChange::Delete)]);
/// ```
#[derive(Debug, Default)]
pub struct ShapeIndex {
    tables: HashMap<QualifiedName, TableIndex>,
    table_of: HashMap<ShapeId, QualifiedName>,
}

impl ShapeIndex {
    /// Registers (or re-registers) shape `id` on `table`; `None` = every row.
    pub fn insert(&mut self, id: ShapeId, table: &TableSchema, where_: Option<&WhereClause>) {
        self.remove(id);
        let ti = self.tables.entry(table.name.clone()).or_default();
        match where_.and_then(|w| indexable_conjunct(w.root())) {
            Some(conjunct) => ti.file(id, conjunct),
            None => ti.fallback.push(id),
        }
        ti.shapes.insert(id, where_.cloned());
        self.table_of.insert(id, table.name.clone());
    }

    /// Unregisters shape `id`; `false` if it was not registered.
    pub fn remove(&mut self, id: ShapeId) -> bool {
        let Some(table) = self.table_of.remove(&id) else {
            return false;
        };
        if let Some(ti) = self.tables.get_mut(&table) {
            if let Some(w) = ti.shapes.remove(&id) {
                ti.unfile(id, w.as_ref());
            }
            if ti.shapes.is_empty() {
                self.tables.remove(&table);
            }
        }
        true
    }

    /// Number of registered shapes.
    pub fn len(&self) -> usize {
        self.table_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table_of.is_empty()
    }

    /// Appends to `out` each shape the change touches and how (in shape id order). `old` is
    /// the row before (updates, deletes), `new` the row after (inserts, updates).
    pub fn route(
        &self,
        table: &QualifiedName,
        old: Option<&[Option<String>]>,
        new: Option<&[Option<String>]>,
        out: &mut Vec<(ShapeId, RowChange)>,
    ) {
        let Some(ti) = self.tables.get(table) else {
            return;
        };
        let mut candidates: Vec<ShapeId> = Vec::with_capacity(ti.fallback.len() + 4);
        for ci in &ti.columns {
            for row in [old, new].into_iter().flatten() {
                if let Some(ids) = ci.lookup(row) {
                    candidates.extend_from_slice(ids);
                }
            }
        }
        candidates.extend_from_slice(&ti.fallback);
        candidates.sort_unstable();
        candidates.dedup();
        for id in candidates {
            let Some(where_) = ti.shapes.get(&id) else {
                continue;
            };
            let matches = |row: Option<&[Option<String>]>| {
                row.is_some_and(|r| where_.as_ref().is_none_or(|w| w.matches(r)))
            };
            let change = match (matches(old), matches(new)) {
                (false, true) => RowChange::Insert,
                (true, true) => RowChange::Update,
                (true, false) => RowChange::Delete,
                (false, false) => continue,
            };
            out.push((id, change));
        }
    }
}

impl ColumnIndex {
    fn lookup(&self, row: &[Option<String>]) -> Option<&Vec<ShapeId>> {
        let text = row.get(self.column)?.as_deref()?;
        // the row's text is Postgres output (already canonical for most types): try it as is
        if let Some(ids) = self.by_value.get(text) {
            return Some(ids);
        }
        let key = value::equality_key(&self.ty, &value::parse_value(&self.ty, text).ok()?)?;
        if key == text {
            return None;
        }
        self.by_value.get(key.as_str())
    }
}

impl TableIndex {
    fn column_slot(&mut self, column: usize, ty: &SqlType) -> &mut ColumnIndex {
        let pos = match self.columns.iter().position(|c| c.column == column && c.ty == *ty) {
            Some(p) => p,
            None => {
                self.columns.push(ColumnIndex { column, ty: ty.clone(), by_value: HashMap::new() });
                self.columns.len() - 1
            }
        };
        &mut self.columns[pos]
    }

    fn file(&mut self, id: ShapeId, c: Conjunct) {
        let slot = self.column_slot(c.column, &c.ty);
        for key in c.keys {
            let ids = slot.by_value.entry(key.into_boxed_str()).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }

    fn unfile(&mut self, id: ShapeId, where_: Option<&WhereClause>) {
        match where_.and_then(|w| indexable_conjunct(w.root())) {
            None => self.fallback.retain(|x| *x != id),
            Some(c) => {
                if let Some(slot) = self.columns.iter_mut().find(|s| s.column == c.column && s.ty == c.ty) {
                    for key in c.keys {
                        if let Some(ids) = slot.by_value.get_mut(key.as_str()) {
                            ids.retain(|x| *x != id);
                            if ids.is_empty() {
                                slot.by_value.remove(key.as_str());
                            }
                        }
                    }
                }
                self.columns.retain(|s| !s.by_value.is_empty());
            }
        }
    }
}
