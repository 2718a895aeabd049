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

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use shapes::routing::{ShapeId, ShapeIndex, TableSlot};
use shapes::schema::{QualifiedName, Row};
use shapes::where_clause::{Expr, ValueKey, WhereClause};
use shapes::wire;

use super::node::{Node, key_hash};
use super::{SubqueryShape, Traced};

/// Shapes under one key, as a multiset: a shape may keep one row at two levels.
#[derive(Debug)]
enum Holders {
    One(ShapeId),
    Many(Vec<ShapeId>),
}

impl Holders {
    fn add(&mut self, id: ShapeId) {
        match self {
            Holders::One(one) => *self = Holders::Many(vec![*one, id]),
            Holders::Many(many) => many.push(id),
        }
    }

    /// Removes one `id`; `true` when none is left.
    fn remove(&mut self, id: ShapeId) -> bool {
        match self {
            Holders::One(one) => *one == id,
            Holders::Many(many) => {
                if let Some(at) = many.iter().position(|x| *x == id) {
                    many.swap_remove(at);
                }
                match many[..] {
                    [] => true,
                    [only] => {
                        *self = Holders::One(only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    fn extend_into(&self, out: &mut Vec<ShapeId>) {
        match self {
            Holders::One(one) => out.push(*one),
            Holders::Many(many) => out.extend_from_slice(many),
        }
    }
}

fn file<K: Hash + Eq>(map: &mut HashMap<K, Holders>, key: K, id: ShapeId) {
    match map.entry(key) {
        Entry::Occupied(mut e) => e.get_mut().add(id),
        Entry::Vacant(e) => {
            e.insert(Holders::One(id));
        }
    }
}

fn unfile<K: Hash + Eq>(map: &mut HashMap<K, Holders>, key: &K, id: ShapeId) {
    if let Some(holders) = map.get_mut(key)
        && holders.remove(id)
    {
        map.remove(key);
    }
}

/// Levels filed by the values of one subquery: all compare the same outer expressions with
/// the same types, so one key of the new row finds them all.
#[derive(Debug)]
struct ValueGroup {
    exprs: Vec<Expr>,
    /// A clause of the group and its subquery, to compute a row's key with.
    probe: (WhereClause, usize),
    shapes: HashMap<ValueKey, Holders>,
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
    kept: HashMap<u64, Holders>,
    groups: Vec<ValueGroup>,
    always: Vec<ShapeId>,
}

/// The index of subquery shapes (see the module's documentation).
#[derive(Debug, Default)]
pub struct SubqueryRoutes {
    tables: HashMap<TableSlot, TableRoutes>,
    /// The levels of each shape, as filed.
    shapes: HashMap<ShapeId, Vec<Level>>,
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
        self.shapes.insert(id, filed);
        levels.for_each_held(&mut |t| self.follow(id, t));
    }

    fn file_level(&mut self, id: ShapeId, slot: TableSlot, node: &Node) -> Level {
        let table = self.tables.entry(slot).or_insert_with(|| TableRoutes {
            table: node.table.clone(),
            readers: Vec::new(),
            key_columns: Vec::new(),
            kept: HashMap::new(),
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
                                shapes: HashMap::new(),
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
        let filed = filed.clone();
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
        self.shapes.remove(&id);
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
        match traced {
            Traced::Row { slot, key, kept } => {
                let Some(table) = self.tables.get_mut(&slot) else {
                    return;
                };
                if kept {
                    file(&mut table.kept, key, id);
                } else {
                    unfile(&mut table.kept, &key, id);
                }
            }
            Traced::Value {
                level,
                subquery,
                key,
                offered,
            } => {
                let Some(filed) = self.shapes.get(&id) else {
                    return;
                };
                let Some((slot, group)) = filed.iter().find_map(|l| match l.how {
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
                    file(&mut g.shapes, key, id);
                } else {
                    unfile(&mut g.shapes, &key, id);
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
        for key_columns in &table.key_columns {
            let key = |row: &Row| {
                key_hash(&wire::message_key(
                    &table.table,
                    key_columns
                        .iter()
                        .map(|&i| row.get(i).and_then(|v| v.as_deref())),
                ))
            };
            let old_key = old.map(key);
            let new_key = new.map(key);
            for k in [old_key, new_key.filter(|k| Some(*k) != old_key)]
                .into_iter()
                .flatten()
            {
                if let Some(holders) = table.kept.get(&k) {
                    holders.extend_into(out);
                }
            }
        }
        if let Some(new) = new {
            for g in &table.groups {
                if let Some(key) = g.probe.0.outer_key(g.probe.1, new)
                    && let Some(holders) = g.shapes.get(&key)
                {
                    holders.extend_into(out);
                }
            }
        }
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
