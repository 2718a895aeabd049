//! Which subquery shapes a row change may concern, found without asking each of them: with
//! 10,000 shapes `project_id IN (SELECT project_id FROM members WHERE user_id = $k)`, an
//! update of one todo concerns the ~100 whose members offer its project, not all 10,000.
//!
//! A level of a shape changes on a row change only if it keeps the row already (its key is
//! in the level) or its `where` admits the new row. So the shapes of a table are found:
//! - **by kept key**: every row kept by some level, by its key's hash ([`key_hash`]);
//! - **by value**: a level whose `where` is `cols IN (SELECT …) AND …` admits only rows whose
//!   `cols` are among the values the subquery offers now; filed under each of them, it is
//!   found by the new row's value;
//! - **by its own `where`**: a level whose `where` has no subquery (`user_id = $k`) is filed
//!   in a [`ShapeIndex`] like any shape;
//! - or **always**: every other level (a `where` like `a IN (SELECT …) OR b`).
//!
//! The levels report what they keep and offer ([`super::Traced`]) after each change, so the
//! index is exact at every change. The shapes found are then asked as before
//! ([`SubqueryShape::would_change`]): the index only narrows whom to ask. Pure: no I/O.
//!
//! Keys and values are filed by 32 bits of their hash, and shapes by a number of 32 bits
//! ([`Numbers`]): a collision only makes a change ask a shape more, and 10,000 shapes of 110
//! kept rows each are a million entries, 8 bytes each.

use std::collections::HashMap;
use std::sync::Arc;

use hashbrown::HashTable;
use shapes::routing::{ShapeId, ShapeIndex, TableSlot};
use shapes::schema::{QualifiedName, Row};
use shapes::where_clause::{Expr, WhereClause};

use super::counts::value_hash;
use super::kept::key_hash;
use super::node::Node;
use super::{SubqueryShape, Traced};

/// Shape numbers under hashes, as a multiset of (hash, number): a shape may keep one row at
/// two levels, or two keys of one hash.
#[derive(Debug, Default)]
struct Hashed(HashTable<(u32, u32)>);

impl Hashed {
    /// The table's hash of a 32-bit hash: its top bits (which the table compares first)
    /// must differ too.
    fn spread(hash: u32) -> u64 {
        u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn add(&mut self, hash: u64, number: u32) {
        let hash = hash as u32;
        self.0
            .insert_unique(Self::spread(hash), (hash, number), |&(h, _)| {
                Self::spread(h)
            });
    }

    /// Removes one (hash, number).
    fn remove(&mut self, hash: u64, number: u32) {
        let hash = hash as u32;
        if let Ok(entry) = self
            .0
            .find_entry(Self::spread(hash), |&e| e == (hash, number))
        {
            entry.remove();
        }
    }

    fn extend_into(&self, hash: u64, out: &mut Vec<u32>) {
        let hash = hash as u32;
        out.extend(
            self.0
                .iter_hash(Self::spread(hash))
                .filter(|&&(h, _)| h == hash)
                .map(|&(_, n)| n),
        );
    }
}

/// Numbers for the shapes in the index, reused once a shape is gone (with everything filed
/// under it).
#[derive(Debug, Default)]
struct Numbers {
    ids: Vec<ShapeId>,
    free: Vec<u32>,
}

impl Numbers {
    fn take(&mut self, id: ShapeId) -> u32 {
        match self.free.pop() {
            Some(n) => {
                self.ids[n as usize] = id;
                n
            }
            None => {
                self.ids.push(id);
                u32::try_from(self.ids.len() - 1).expect("fewer than 2^32 subquery shapes")
            }
        }
    }

    fn give_back(&mut self, n: u32) {
        self.free.push(n);
    }

    fn id(&self, n: u32) -> ShapeId {
        self.ids[n as usize]
    }
}

/// Levels filed by the values of one subquery: all compare the same outer expressions with
/// the same types, so one key of the new row finds them all.
#[derive(Debug)]
struct ValueGroup {
    exprs: Vec<Expr>,
    /// A clause of the group and its subquery, to compute a row's key with.
    probe: (Arc<WhereClause>, usize),
    shapes: Hashed,
}

/// How one level of a shape is found.
#[derive(Debug, Clone, Copy)]
enum How {
    /// In the [`ShapeIndex`] of levels, under this id.
    Own(ShapeId),
    /// By the values subquery `subquery` offers, in value group `group` of its table.
    Value { group: usize, subquery: usize },
    /// For every change.
    Always,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    level: u32,
    slot: TableSlot,
    how: How,
}

/// The subquery shapes of one table.
#[derive(Debug)]
struct TableRoutes {
    table: QualifiedName,
    /// Every subquery shape with a level on the table (once each, in arrival order).
    readers: Vec<ShapeId>,
    /// The key columns of the layouts its levels read rows in (one, nearly always).
    key_columns: Vec<Vec<usize>>,
    kept: Hashed,
    groups: Vec<ValueGroup>,
    always: Vec<ShapeId>,
}

/// A shape as filed: its number and its levels.
#[derive(Debug)]
struct Filed {
    number: u32,
    levels: Vec<Level>,
}

/// The index of subquery shapes (see the module's documentation).
#[derive(Debug, Default)]
pub struct SubqueryRoutes {
    tables: HashMap<TableSlot, TableRoutes>,
    shapes: HashMap<ShapeId, Filed>,
    numbers: Numbers,
    /// Shape numbers found for the change being routed.
    found_numbers: Vec<u32>,
    /// Levels whose `where` has no subquery, under ids of their own.
    own: ShapeIndex,
    own_shape: HashMap<ShapeId, ShapeId>,
    next_own: u64,
    found: Vec<(ShapeId, shapes::routing::RowChange)>,
}

/// The subquery whose values a row must offer to be admitted by `where_clause`: a positive
/// `IN` (or `EXISTS`) that is the whole clause or one of its top `AND`s.
fn required_subquery(where_clause: &WhereClause) -> Option<(usize, Vec<Expr>)> {
    fn find(e: &Expr) -> Option<(usize, Vec<Expr>)> {
        match e {
            Expr::InSubquery {
                exprs,
                subquery,
                negated: false,
                ..
            } => Some((*subquery, exprs.clone())),
            Expr::And(all) => all.iter().find_map(find),
            _ => None,
        }
    }
    find(where_clause.root())
}

impl SubqueryRoutes {
    /// Files shape `id` (its levels' slots assigned) by what its levels hold now, and
    /// forgets their traces.
    pub fn add(&mut self, id: ShapeId, levels: &mut SubqueryShape) {
        self.remove(id, levels);
        levels.clear_traces();
        let mut filed = Vec::new();
        levels.root.for_each(&mut |node| {
            if let Some(slot) = node.slot {
                filed.push(self.file_level(id, slot, node));
            }
        });
        filed.shrink_to_fit();
        let number = self.numbers.take(id);
        self.shapes.insert(
            id,
            Filed {
                number,
                levels: filed,
            },
        );
        levels.for_each_held(&mut |t| self.follow(id, t));
    }

    fn file_level(&mut self, id: ShapeId, slot: TableSlot, node: &Node) -> Level {
        let table = self.tables.entry(slot).or_insert_with(|| TableRoutes {
            table: node.layout.name.clone(),
            readers: Vec::new(),
            key_columns: Vec::new(),
            kept: Hashed::default(),
            groups: Vec::new(),
            always: Vec::new(),
        });
        if !table.readers.contains(&id) {
            table.readers.push(id);
        }
        let key_columns = shapes::wire::key_columns(&node.layout);
        if !table.key_columns.contains(&key_columns) {
            table.key_columns.push(key_columns);
        }
        let how = match &node.where_clause {
            Some(w) if !w.has_subqueries() => self.file_own(id, node, Some(w)),
            None => self.file_own(id, node, None),
            Some(w) => match required_subquery(w) {
                Some((subquery, exprs)) => {
                    let group = match table.groups.iter().position(|g| {
                        g.exprs == exprs
                            && g.probe.0.subqueries()[g.probe.1].types
                                == w.subqueries()[subquery].types
                    }) {
                        Some(group) => group,
                        None => {
                            table.groups.push(ValueGroup {
                                exprs,
                                probe: (w.clone(), subquery),
                                shapes: Hashed::default(),
                            });
                            table.groups.len() - 1
                        }
                    };
                    How::Value { group, subquery }
                }
                None => {
                    table.always.push(id);
                    How::Always
                }
            },
        };
        Level {
            level: node.level,
            slot,
            how,
        }
    }

    fn file_own(&mut self, id: ShapeId, node: &Node, where_clause: Option<&WhereClause>) -> How {
        let own = ShapeId(self.next_own);
        self.next_own += 1;
        self.own.insert(own, &node.layout, where_clause);
        self.own_shape.insert(own, id);
        How::Own(own)
    }

    /// Unfiles shape `id`, whose levels are `levels` (what they report since they were
    /// filed is taken in first, so what is unfiled is what was filed).
    pub fn remove(&mut self, id: ShapeId, levels: &mut SubqueryShape) {
        let Some(filed) = self.shapes.get(&id) else {
            return;
        };
        let filed = filed.levels.clone();
        self.follow_traces(id, levels);
        levels.for_each_held(&mut |t| {
            let undone = match t {
                Traced::Row { slot, key, .. } => Traced::Row {
                    slot,
                    key,
                    kept: false,
                },
                Traced::Value {
                    level,
                    subquery,
                    key,
                    ..
                } => Traced::Value {
                    level,
                    subquery,
                    key,
                    offered: false,
                },
            };
            self.follow(id, undone);
        });
        for level in &filed {
            let Some(table) = self.tables.get_mut(&level.slot) else {
                continue;
            };
            table.readers.retain(|r| *r != id);
            match level.how {
                How::Own(own) => {
                    self.own.remove(own);
                    self.own_shape.remove(&own);
                }
                How::Always => table.always.retain(|r| *r != id),
                How::Value { .. } => {}
            }
            if table.readers.is_empty() {
                self.tables.remove(&level.slot);
            }
        }
        if let Some(filed) = self.shapes.remove(&id) {
            self.numbers.give_back(filed.number);
        }
    }

    /// Takes in what shape `id`'s levels report changed since the last call.
    pub fn follow_traces(&mut self, id: ShapeId, levels: &mut SubqueryShape) {
        let mut traces = Vec::new();
        levels.drain_traces(&mut |t| traces.push(t));
        for t in traces {
            self.follow(id, t);
        }
    }

    fn follow(&mut self, id: ShapeId, traced: Traced) {
        let Some(filed) = self.shapes.get(&id) else {
            return;
        };
        let number = filed.number;
        match traced {
            Traced::Row { slot, key, kept } => {
                let Some(table) = self.tables.get_mut(&slot) else {
                    return;
                };
                if kept {
                    table.kept.add(key, number);
                } else {
                    table.kept.remove(key, number);
                }
            }
            Traced::Value {
                level,
                subquery,
                key,
                offered,
            } => {
                let Some((slot, group)) = filed.levels.iter().find_map(|l| match l.how {
                    How::Value { group, subquery: s } if l.level == level && s == subquery => {
                        Some((l.slot, group))
                    }
                    _ => None,
                }) else {
                    return;
                };
                let Some(g) = self
                    .tables
                    .get_mut(&slot)
                    .and_then(|t| t.groups.get_mut(group))
                else {
                    return;
                };
                if offered {
                    g.shapes.add(key, number);
                } else {
                    g.shapes.remove(key, number);
                }
            }
        }
    }

    /// Every subquery shape with a level on the table in `slot`.
    pub fn readers(&self, slot: TableSlot) -> &[ShapeId] {
        self.tables.get(&slot).map_or(&[], |t| &t.readers)
    }

    /// The shapes a change of the table in `slot` may concern (sorted, once each) into
    /// `out`: those keeping its row, and those whose levels may admit the new row.
    pub fn candidates(
        &mut self,
        slot: TableSlot,
        old: Option<&Row>,
        new: Option<&Row>,
        out: &mut Vec<ShapeId>,
    ) {
        out.clear();
        let Some(table) = self.tables.get(&slot) else {
            return;
        };
        let found = &mut self.found_numbers;
        found.clear();
        for key_columns in &table.key_columns {
            let key = |row: &Row| {
                key_hash(
                    key_columns
                        .iter()
                        .map(|&i| row.get(i).and_then(|v| v.as_deref())),
                )
            };
            let old_key = old.map(key);
            let new_key = new.map(key);
            for k in [old_key, new_key.filter(|k| Some(*k) != old_key)]
                .into_iter()
                .flatten()
            {
                table.kept.extend_into(k, found);
            }
        }
        if let Some(new) = new {
            for g in &table.groups {
                if let Some(key) = g.probe.0.outer_key(g.probe.1, new) {
                    g.shapes.extend_into(value_hash(&key), found);
                }
            }
        }
        out.extend(found.iter().map(|&n| self.numbers.id(n)));
        out.extend_from_slice(&table.always);
        if let Some(own_slot) = self.own.slot(&table.table) {
            self.found.clear();
            self.own.route(
                own_slot,
                old.map(Vec::as_slice),
                new.map(Vec::as_slice),
                &mut self.found,
            );
            out.extend(
                self.found
                    .iter()
                    .filter_map(|(own, _)| self.own_shape.get(own).copied()),
            );
        }
        out.sort_unstable();
        out.dedup();
    }
}
