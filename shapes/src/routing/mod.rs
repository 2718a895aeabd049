//! The routing index: which shapes a row change touches, and how.
//!
//! Shapes are registered per table. A shape whose `where` has a conjunct `col = constant` or
//! `col IN (constants…)` is filed in a hash index under that column's value(s); every other
//! shape (no `where`, or nothing hashable) is on the table's *fallback* list. Routing a change
//! looks up the old and new rows' values in each indexed column (a handful of hash lookups,
//! however many shapes there are), evaluates what the `where` of the shapes found there says
//! beside the hashed conjunct (nothing when the conjunct is the whole `where`: finding the
//! shape is the answer) and the whole `where` of the fallback shapes, on the old and new rows
//! (each distinct condition once per row, see [`conditions`]), and reports per shape:
//!
//! | old row matched | new row matches | change |
//! |---|---|---|
//! | no  | yes | [`RowChange::Insert`] |
//! | yes | yes | [`RowChange::Update`] |
//! | yes | no  | [`RowChange::Delete`] |
//!
//! Hash keys are normalised through the column's type ([`value::equality_key`]), so `id = '01'`
//! and a row with `1`, or a uuid written in capitals, cannot miss. Integer columns are keyed
//! by the integer itself.
//!
//! A table is found by name once, as a [`TableSlot`]; changes are routed by slot, so the
//! per-change path hashes no table name. A table keeps its slot for the index's life (also
//! while it has no shape), so a slot a caller kept never points at another table.

mod conditions;

use std::collections::HashMap;

use crate::schema::{QualifiedName, TableSchema};
use crate::where_clause::WhereClause;
use crate::where_clause::ast_access::{Conjunct, split_indexable};
use crate::where_clause::types::SqlType;
use crate::where_clause::value;
use conditions::{ConditionId, Conditions, Memo, Which};

/// A shape's id in the index (the proxy's own numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeId(pub u64);

/// A table's place in a [`ShapeIndex`], from [`ShapeIndex::insert`] or [`ShapeIndex::slot`].
/// Slots are numbered densely from 0 in the order tables first got a shape, so callers can keep
/// their own per-table data in a `Vec` ([`TableSlot::index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableSlot(u32);

impl TableSlot {
    /// The slot's number, dense from 0.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a change means for one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowChange {
    Insert,
    Update,
    Delete,
}

impl RowChange {
    /// The operation of the message it becomes.
    pub fn operation(self) -> crate::wire::Operation {
        match self {
            RowChange::Insert => crate::wire::Operation::Insert,
            RowChange::Update => crate::wire::Operation::Update,
            RowChange::Delete => crate::wire::Operation::Delete,
        }
    }
}

/// A shape filed under a key, with what a row found there must match besides (`None`: having
/// the key is the whole condition). Carried inline, so routing never looks the shape up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Filed {
    id: ShapeId,
    condition: Option<ConditionId>,
}

/// The shapes under one key: one inline (the common case, no extra allocation), or several.
#[derive(Debug)]
enum Slot {
    One(Filed),
    Many(Vec<Filed>),
}

impl Slot {
    fn as_slice(&self) -> &[Filed] {
        match self {
            Slot::One(f) => std::slice::from_ref(f),
            Slot::Many(v) => v,
        }
    }

    fn add(&mut self, f: Filed) {
        match self {
            Slot::One(one) if one.id == f.id => *one = f,
            Slot::One(one) => *self = Slot::Many(vec![*one, f]),
            Slot::Many(v) => {
                v.retain(|x| x.id != f.id);
                v.push(f);
            }
        }
    }

    /// Removes `id`; `true` when nothing is left.
    fn remove(&mut self, id: ShapeId) -> bool {
        match self {
            Slot::One(one) => one.id == id,
            Slot::Many(v) => {
                v.retain(|x| x.id != id);
                let empty = v.is_empty();
                if let [only] = v[..] {
                    *self = Slot::One(only);
                }
                empty
            }
        }
    }
}

/// An integer key's shapes packed in 8 bytes, so that with the key a hash bucket is 12 bytes
/// and a 100,000-shape index stays in the processor's cache: one shape (id < 2^31) with its
/// condition inline, or an index into [`ColumnIndex::overflow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    /// The shape's id, or with [`PACKED_OVERFLOW`] the overflow index.
    id: u32,
    /// [`ConditionId::to_bits`], or [`NO_CONDITION`].
    condition: u32,
}

const PACKED_OVERFLOW: u32 = 1 << 31;
const NO_CONDITION: u32 = u32::MAX;

impl Packed {
    fn one(f: Filed) -> Option<Packed> {
        let id = u32::try_from(f.id.0)
            .ok()
            .filter(|id| *id < PACKED_OVERFLOW)?;
        let condition = f.condition.map_or(NO_CONDITION, ConditionId::to_bits);
        (condition != NO_CONDITION || f.condition.is_none()).then_some(Packed { id, condition })
    }

    fn overflowed(index: u32) -> Packed {
        Packed {
            id: PACKED_OVERFLOW | index,
            condition: NO_CONDITION,
        }
    }

    fn single(self) -> Option<Filed> {
        (self.id & PACKED_OVERFLOW == 0).then(|| Filed {
            id: ShapeId(u64::from(self.id)),
            condition: (self.condition != NO_CONDITION)
                .then(|| ConditionId::from_bits(self.condition)),
        })
    }

    fn overflow_index(self) -> usize {
        (self.id & !PACKED_OVERFLOW) as usize
    }
}

/// Integer keys: those that fit 32 bits (nearly all) in a compact map, the others apart.
#[derive(Debug, Default)]
struct IntKeys {
    small: HashMap<i32, Packed>,
    big: HashMap<i64, Packed>,
}

impl IntKeys {
    fn get(&self, k: i64) -> Option<Packed> {
        match i32::try_from(k) {
            Ok(small) => self.small.get(&small).copied(),
            Err(_) => self.big.get(&k).copied(),
        }
    }

    fn insert(&mut self, k: i64, p: Packed) {
        match i32::try_from(k) {
            Ok(small) => self.small.insert(small, p),
            Err(_) => self.big.insert(k, p),
        };
    }

    fn remove(&mut self, k: i64) {
        match i32::try_from(k) {
            Ok(small) => self.small.remove(&small),
            Err(_) => self.big.remove(&k),
        };
    }

    fn is_empty(&self) -> bool {
        self.small.is_empty() && self.big.is_empty()
    }
}

/// Keys of one hashed column: integers as integers, anything else as normalised text.
#[derive(Debug)]
enum Keys {
    Int(IntKeys),
    Text(HashMap<Box<str>, Slot>),
}

/// One hashed column of a table.
#[derive(Debug)]
struct ColumnIndex {
    column: usize,
    ty: SqlType,
    keys: Keys,
    /// Integer keys with several shapes (or huge ids); free entries are empty.
    overflow: Vec<Slot>,
}

#[derive(Debug, Default)]
struct TableIndex {
    columns: Vec<ColumnIndex>,
    /// Shapes with nothing hashable, and their whole `where` (`None`: every row).
    fallback: Vec<(ShapeId, Option<ConditionId>)>,
    shapes: HashMap<ShapeId, Registered>,
    conditions: Conditions,
}

/// How a shape is registered in its table.
#[derive(Debug)]
struct Registered {
    /// Where it is filed (`None`: on the fallback list).
    filing: Option<Filing>,
    /// What a row must match besides being found under a key (for a fallback shape, its
    /// whole `where`); `None`: nothing.
    condition: Option<ConditionId>,
}

/// The keys a shape is filed under, to take it out again.
#[derive(Debug)]
struct Filing {
    column: usize,
    ty: SqlType,
    keys: Box<[Box<str>]>,
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
/// let slot = index.insert(ShapeId(1), &table, Some(&w));
/// assert_eq!(index.slot(&table.name), Some(slot));
/// let old = [Some("1".to_string()), Some("ann".to_string())];
/// let new = [Some("1".to_string()), Some("bob".to_string())];
/// let mut out = Vec::new();
/// index.route(slot, Some(&old), Some(&new), &mut out);
/// assert_eq!(out, [(ShapeId(1), RowChange::Delete)]);
/// ```
#[derive(Debug, Default)]
pub struct ShapeIndex {
    slots: HashMap<QualifiedName, TableSlot>,
    /// By [`TableSlot::index`].
    tables: Vec<TableIndex>,
    table_of: HashMap<ShapeId, TableSlot>,
}

/// Candidate flags: found by the old row, found by the new row, on the fallback list.
const OLD: u8 = 1;
const NEW: u8 = 2;
const FALLBACK: u8 = 4;

/// A shape a change may touch: its flags and its condition.
type Candidate = (ShapeId, u8, Option<ConditionId>);

/// Candidates of one change, on the stack unless there are many.
struct Candidates {
    inline: [Candidate; 8],
    len: usize,
    spill: Vec<Candidate>,
}

impl Candidates {
    fn new() -> Self {
        Candidates {
            inline: [(ShapeId(0), 0, None); 8],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, c: Candidate) {
        if self.len < self.inline.len() {
            self.inline[self.len] = c;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(c);
        }
    }

    /// Sorted by id, flags of the same id merged.
    fn merged(&mut self) -> &[Candidate] {
        let list: &mut [Candidate] = if self.spill.is_empty() {
            &mut self.inline[..self.len]
        } else {
            &mut self.spill
        };
        list.sort_unstable_by_key(|c| c.0);
        let mut w = 0;
        for r in 0..list.len() {
            if w > 0 && list[w - 1].0 == list[r].0 {
                list[w - 1].1 |= list[r].1;
            } else {
                list[w] = list[r];
                w += 1;
            }
        }
        &list[..w]
    }
}

impl ShapeIndex {
    /// Registers (or re-registers) shape `id` on `table`; `None` = every row. Returns the
    /// table's slot.
    pub fn insert(
        &mut self,
        id: ShapeId,
        table: &TableSchema,
        where_: Option<&WhereClause>,
    ) -> TableSlot {
        self.remove(id);
        let slot = self.table_slot(&table.name);
        let ti = &mut self.tables[slot.index()];
        let registered = ti.register(id, where_);
        ti.shapes.insert(id, registered);
        self.table_of.insert(id, slot);
        slot
    }

    /// The slot of `table`, given it now if it has none (a table some shape reads without
    /// being filed here: the inner table of a subquery).
    pub fn table_slot(&mut self, table: &QualifiedName) -> TableSlot {
        if let Some(slot) = self.slots.get(table) {
            return *slot;
        }
        let slot = TableSlot(u32::try_from(self.tables.len()).expect("fewer than 2^32 tables"));
        self.tables.push(TableIndex::default());
        self.slots.insert(table.clone(), slot);
        slot
    }

    /// Unregisters shape `id`; `false` if it was not registered. Its table keeps its slot.
    pub fn remove(&mut self, id: ShapeId) -> bool {
        let Some(slot) = self.table_of.remove(&id) else {
            return false;
        };
        if let Some(ti) = self.tables.get_mut(slot.index())
            && let Some(registered) = ti.shapes.remove(&id)
        {
            ti.unregister(id, registered);
        }
        true
    }

    /// The slot of `table`, if it ever had a shape in this index (it may have none now).
    pub fn slot(&self, table: &QualifiedName) -> Option<TableSlot> {
        self.slots.get(table).copied()
    }

    /// Number of registered shapes.
    pub fn len(&self) -> usize {
        self.table_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table_of.is_empty()
    }

    /// Appends to `out` each shape of the table in `slot` the change touches and how (in shape
    /// id order). `old` is the row before (updates, deletes), `new` the row after (inserts,
    /// updates).
    pub fn route(
        &self,
        slot: TableSlot,
        old: Option<&[Option<String>]>,
        new: Option<&[Option<String>]>,
        out: &mut Vec<(ShapeId, RowChange)>,
    ) {
        let Some(ti) = self.tables.get(slot.index()) else {
            return;
        };
        let mut candidates = Candidates::new();
        for ci in &ti.columns {
            ci.lookup_both(old, new, |f, flag| {
                candidates.push((f.id, flag, f.condition))
            });
        }
        for &(id, condition) in &ti.fallback {
            candidates.push((id, FALLBACK, condition));
        }
        let mut memo = Memo::new();
        for &(id, flags, condition) in candidates.merged() {
            // A filed shape admits a row only if the row was found under one of its keys; a
            // fallback shape, any row its condition admits.
            let mut matches = |row: Option<&[Option<String>]>, flag: u8, which: Which| {
                let Some(row) = row else {
                    return false;
                };
                if flags & (flag | FALLBACK) == 0 {
                    return false;
                }
                condition.is_none_or(|c| memo.matches(&ti.conditions, c, which, row))
            };
            let (was, is) = (matches(old, OLD, Which::Old), matches(new, NEW, Which::New));
            let change = match (was, is) {
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
    /// Calls `f` with the shapes filed under the old and the new row's values (flagged [`OLD`]
    /// and [`NEW`]). For integer keys both probes are issued before either result is used, so
    /// that their cache misses overlap.
    fn lookup_both(
        &self,
        old: Option<&[Option<String>]>,
        new: Option<&[Option<String>]>,
        mut f: impl FnMut(Filed, u8),
    ) {
        if let Keys::Int(map) = &self.keys {
            let key = |row: Option<&[Option<String>]>| -> Option<i64> {
                row?.get(self.column)?.as_deref()?.trim().parse().ok()
            };
            let (k_old, k_new) = (key(old), key(new));
            let found = [
                k_old.and_then(|k| map.get(k)),
                k_new.and_then(|k| map.get(k)),
            ];
            for (packed, flag) in found.into_iter().zip([OLD, NEW]) {
                let Some(packed) = packed else { continue };
                match packed.single() {
                    Some(one) => f(one, flag),
                    None => {
                        let slot = self.overflow.get(packed.overflow_index());
                        for filed in slot.map(Slot::as_slice).unwrap_or_default() {
                            f(*filed, flag);
                        }
                    }
                }
            }
            return;
        }
        for (row, flag) in [(old, OLD), (new, NEW)] {
            if let Some(row) = row {
                self.lookup(row, |filed| f(filed, flag));
            }
        }
    }

    /// Calls `f` with the shapes filed under the row's value.
    fn lookup(&self, row: &[Option<String>], mut f: impl FnMut(Filed)) {
        let Some(Some(text)) = row.get(self.column) else {
            return;
        };
        let slot = match &self.keys {
            Keys::Int(map) => {
                let Some(packed) = text.trim().parse::<i64>().ok().and_then(|k| map.get(k)) else {
                    return;
                };
                match packed.single() {
                    Some(one) => return f(one),
                    None => self.overflow.get(packed.overflow_index()),
                }
            }
            // the row's text is Postgres output, already the key for most types
            Keys::Text(map) => map.get(text.as_str()).or_else(|| {
                let key = value::equality_key(&self.ty, &value::parse_value(&self.ty, text).ok()?)?;
                if key == *text {
                    None
                } else {
                    map.get(key.as_str())
                }
            }),
        };
        for filed in slot.map(Slot::as_slice).unwrap_or_default() {
            f(*filed);
        }
    }

    fn add_int(&mut self, key: i64, filed: Filed) {
        let Keys::Int(map) = &mut self.keys else {
            return;
        };
        let current = map.get(key);
        let packed = match current {
            None => Packed::one(filed),
            Some(p) => match p.single() {
                Some(one) if one.id == filed.id => Packed::one(filed),
                _ => None,
            },
        };
        if let Some(p) = packed {
            map.insert(key, p);
            return;
        }
        // several shapes (or an id too big to pack): keep them in an overflow slot
        let index = match current.filter(|p| p.single().is_none()) {
            Some(p) => p.overflow_index(),
            None => {
                let mut slot = match current.and_then(Packed::single) {
                    Some(one) => Slot::One(one),
                    None => Slot::Many(Vec::new()),
                };
                slot.add(filed);
                let free = self
                    .overflow
                    .iter()
                    .position(|s| matches!(s, Slot::Many(v) if v.is_empty()));
                let index = match free {
                    Some(i) => {
                        self.overflow[i] = slot;
                        i
                    }
                    None => {
                        self.overflow.push(slot);
                        self.overflow.len() - 1
                    }
                };
                let Ok(index32) = u32::try_from(index) else {
                    return; // more than 2^31 overflow slots: not reachable in practice
                };
                map.insert(key, Packed::overflowed(index32));
                return;
            }
        };
        self.overflow[index].add(filed);
    }

    fn remove_int(&mut self, key: i64, id: ShapeId) {
        let Keys::Int(map) = &mut self.keys else {
            return;
        };
        let Some(p) = map.get(key) else {
            return;
        };
        match p.single() {
            Some(one) if one.id == id => map.remove(key),
            Some(_) => {}
            None => {
                if let Some(slot) = self.overflow.get_mut(p.overflow_index())
                    && slot.remove(id)
                {
                    *slot = Slot::Many(Vec::new());
                    map.remove(key);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match &self.keys {
            Keys::Int(m) => m.is_empty(),
            Keys::Text(m) => m.is_empty(),
        }
    }
}

impl TableIndex {
    fn column_slot(&mut self, column: usize, ty: &SqlType) -> &mut ColumnIndex {
        let pos = match self
            .columns
            .iter()
            .position(|c| c.column == column && c.ty == *ty)
        {
            Some(p) => p,
            None => {
                let keys = if ty.is_integer() {
                    Keys::Int(IntKeys::default())
                } else {
                    Keys::Text(HashMap::new())
                };
                self.columns.push(ColumnIndex {
                    column,
                    ty: ty.clone(),
                    keys,
                    overflow: Vec::new(),
                });
                self.columns.len() - 1
            }
        };
        &mut self.columns[pos]
    }

    fn file(&mut self, id: ShapeId, c: Conjunct, condition: Option<ConditionId>) {
        let filed = Filed { id, condition };
        let slot = self.column_slot(c.column, &c.ty);
        for key in c.keys {
            match &mut slot.keys {
                Keys::Int(_) => {
                    // integer keys are the integer's text; a key that is no i64 matches no row
                    if let Ok(k) = key.parse::<i64>() {
                        slot.add_int(k, filed);
                    }
                }
                Keys::Text(map) => {
                    map.entry(key.into_boxed_str())
                        .and_modify(|s| s.add(filed))
                        .or_insert(Slot::One(filed));
                }
            }
        }
    }

    /// Files a shape by its `where`: under the keys of its first hashable conjunct with the
    /// rest as its condition, or on the fallback list with all of it.
    fn register(&mut self, id: ShapeId, where_: Option<&WhereClause>) -> Registered {
        let Some(where_) = where_ else {
            self.fallback.push((id, None));
            return Registered {
                filing: None,
                condition: None,
            };
        };
        match split_indexable(where_.root()) {
            Some((conjunct, rest)) => {
                let filing = Filing {
                    column: conjunct.column,
                    ty: conjunct.ty.clone(),
                    keys: conjunct.keys.iter().map(|k| k.as_str().into()).collect(),
                };
                let condition = rest.map(|rest| self.conditions.intern(where_.with_root(rest)));
                self.file(id, conjunct, condition);
                Registered {
                    filing: Some(filing),
                    condition,
                }
            }
            None => {
                let condition = self.conditions.intern(where_.clone());
                self.fallback.push((id, Some(condition)));
                Registered {
                    filing: None,
                    condition: Some(condition),
                }
            }
        }
    }

    fn unregister(&mut self, id: ShapeId, registered: Registered) {
        if let Some(condition) = registered.condition {
            self.conditions.release(condition);
        }
        let Some(filing) = registered.filing else {
            self.fallback.retain(|(x, _)| *x != id);
            return;
        };
        if let Some(slot) = self
            .columns
            .iter_mut()
            .find(|s| s.column == filing.column && s.ty == filing.ty)
        {
            for key in &filing.keys {
                match &mut slot.keys {
                    Keys::Int(_) => {
                        if let Ok(k) = key.parse::<i64>() {
                            slot.remove_int(k, id);
                        }
                    }
                    Keys::Text(map) => {
                        if map.get_mut(&**key).is_some_and(|s| s.remove(id)) {
                            map.remove(&**key);
                        }
                    }
                }
            }
        }
        self.columns.retain(|s| !s.is_empty());
    }
}
