//! STAND-IN until the routing index lands (issue 3): evaluates every shape of a table.

use std::collections::HashMap;

use crate::schema::QualifiedName;
use crate::where_clause::WhereClause;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowChange {
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Default)]
pub struct ShapeIndex {
    tables: HashMap<QualifiedName, Vec<(ShapeId, Option<WhereClause>)>>,
}

impl ShapeIndex {
    pub fn insert(&mut self, id: ShapeId, table: &QualifiedName, where_: Option<&WhereClause>) {
        self.tables
            .entry(table.clone())
            .or_default()
            .push((id, where_.cloned()));
    }

    pub fn remove(&mut self, id: ShapeId) {
        for shapes in self.tables.values_mut() {
            shapes.retain(|(s, _)| *s != id);
        }
    }

    pub fn route(
        &self,
        table: &QualifiedName,
        old: Option<&[Option<String>]>,
        new: Option<&[Option<String>]>,
        out: &mut Vec<(ShapeId, RowChange)>,
    ) {
        let Some(shapes) = self.tables.get(table) else {
            return;
        };
        for (id, where_) in shapes {
            let m = |row: Option<&[Option<String>]>| {
                row.is_some_and(|r| where_.as_ref().is_none_or(|w| w.matches(r)))
            };
            match (m(old), m(new)) {
                (true, true) => out.push((*id, RowChange::Update)),
                (false, true) => out.push((*id, RowChange::Insert)),
                (true, false) => out.push((*id, RowChange::Delete)),
                (false, false) => {}
            }
        }
    }
}
