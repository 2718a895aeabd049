//! Which shapes a change of their table's columns leaves standing (DESIGN.md decision 13).
//!
//! A shape reads some of its table's columns: those it selects, those its `where` (and the
//! row filter of the rules) names, the primary key and the tombstone column. A change of any
//! other column (added, dropped, renamed, retyped) changes nothing its clients receive, so the
//! shape keeps its handle and offsets: only the positions of the columns it reads move, and
//! the router is told the new layout ([`Fit::Rebase`]). A shape without an explicit `columns`
//! list selects every column, including any added later, so any change of the column list
//! rotates it, as does a change of a column it reads.
//!
//! Pure: the layout rows arrive in is the replication stream's Relation message; the columns a
//! shape reads are described by the layout its router entry was built for.

use std::sync::Arc;

use shapes::definition::ShapeDefinition;
use shapes::request::ShapeRequest;
use shapes::schema::{Column, PgType, TableSchema, TypeKind};

use crate::replication::event::{Relation, RelationColumn};
pub use crate::storage::shape_store::meta::ReadColumn;

/// What becomes of a shape when its table's rows arrive in `relation`'s layout.
#[derive(Debug)]
pub enum Fit {
    /// The layout it is routed by is the relation's.
    Same,
    /// Every column it reads is still there, unchanged: route by the new layout.
    Rebase(Rebased),
    /// It cannot continue; the reason says which column changed.
    Rotate(String),
}

/// A shape's routing against a new layout.
#[derive(Debug)]
pub struct Rebased {
    pub table: Arc<TableSchema>,
    pub definition: ShapeDefinition,
    /// Position of the tombstone column in `table`.
    pub tombstone: Option<usize>,
}

/// Positions (in `table`) of every column the shape reads, ascending.
pub fn read_positions(
    table: &TableSchema,
    definition: &ShapeDefinition,
    tombstone: Option<usize>,
) -> Vec<usize> {
    let mut read: Vec<usize> = definition.selected_columns().to_vec();
    if let Some(clause) = definition.where_clause() {
        read.extend(clause.columns_used());
    }
    read.extend(table.primary_key());
    read.extend(tombstone);
    read.sort_unstable();
    read.dedup();
    read
}

/// The columns the shape reads, as `shape.json` records them.
pub fn read_columns(
    table: &TableSchema,
    definition: &ShapeDefinition,
    tombstone: Option<usize>,
) -> Vec<ReadColumn> {
    read_positions(table, definition, tombstone)
        .into_iter()
        .filter_map(|i| table.columns.get(i))
        .map(|c| ReadColumn {
            name: c.name.clone(),
            type_oid: c.ty.oid,
            type_mod: c.type_mod,
        })
        .collect()
}

/// The first recorded column that `table` lacks or has with another type, described.
pub fn changed_read_column(table: &TableSchema, recorded: &[ReadColumn]) -> Option<String> {
    recorded.iter().find_map(
        |read| match table.columns.iter().find(|c| c.name == read.name) {
            None => Some(format!("column {} is gone", read.name)),
            Some(c) if c.ty.oid != read.type_oid || c.type_mod != read.type_mod => {
                Some(format!("the type of column {} changed", read.name))
            }
            Some(_) => None,
        },
    )
}

/// Whether `layout` lists exactly the relation's columns (names, types, type modifiers).
pub fn same_layout(layout: &TableSchema, relation: &Relation) -> bool {
    layout.columns.len() == relation.columns.len()
        && layout
            .columns
            .iter()
            .zip(&relation.columns)
            .all(|(a, b)| same_column(a, b))
}

fn same_column(column: &Column, wal: &RelationColumn) -> bool {
    column.name == wal.name && column.ty.oid == wal.type_oid && column.type_mod == wal.type_mod
}

/// Decides a shape routed by `layout` (with `definition`, compiled against it, and its
/// tombstone column at `tombstone`) once rows arrive in `relation`'s layout. `compile`
/// compiles the shape's request against a table (as creating the shape did).
pub fn fit(
    layout: &TableSchema,
    definition: &ShapeDefinition,
    tombstone: Option<usize>,
    request: &ShapeRequest,
    relation: &Relation,
    compile: impl FnOnce(&ShapeRequest, &TableSchema) -> Result<ShapeDefinition, String>,
) -> Fit {
    if same_layout(layout, relation) {
        return Fit::Same;
    }
    if request.columns.is_none() {
        return Fit::Rotate(
            "its table's columns changed and it selects all of them (no `columns` list)".into(),
        );
    }
    for i in read_positions(layout, definition, tombstone) {
        let column = &layout.columns[i];
        match relation.columns.iter().find(|c| c.name == column.name) {
            None => {
                return Fit::Rotate(format!(
                    "column {} it reads was dropped or renamed",
                    column.name
                ));
            }
            Some(wal) if !same_column(column, wal) => {
                return Fit::Rotate(format!(
                    "the type of column {} it reads changed",
                    column.name
                ));
            }
            Some(_) => {}
        }
    }
    let table = Arc::new(relayout(layout, relation));
    let compiled = match compile(request, &table) {
        Ok(compiled) => compiled,
        Err(err) => return Fit::Rotate(format!("its definition no longer holds: {err}")),
    };
    if compiled.canonical() != definition.canonical() {
        return Fit::Rotate("its definition reads differently against the new columns".into());
    }
    let tombstone = tombstone.and_then(|t| table.column_index(&layout.columns[t].name));
    Fit::Rebase(Rebased {
        table,
        definition: compiled,
        tombstone,
    })
}

/// What the catalog says changed since a table was read as `made`, that its columns alone do
/// not show: its primary key, and NOT NULL of some columns (the `electric-schema` header that
/// clients parse by says it). A column the catalog has with another type, or not at all, is
/// left to the replication stream, which tells exactly where such a change falls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogChanges {
    key: bool,
    /// Positions in `made` of the columns whose NOT NULL changed.
    not_null: Vec<usize>,
    names: Vec<String>,
}

impl CatalogChanges {
    pub fn between(made: &TableSchema, now: &TableSchema) -> Self {
        let key = |table: &TableSchema| -> Vec<String> {
            table
                .primary_key()
                .into_iter()
                .map(|i| table.columns[i].name.clone())
                .collect()
        };
        let not_null: Vec<usize> = made
            .columns
            .iter()
            .enumerate()
            .filter(|(_, column)| {
                now.columns.iter().any(|current| {
                    current.name == column.name
                        && current.ty.oid == column.ty.oid
                        && current.type_mod == column.type_mod
                        && current.not_null != column.not_null
                })
            })
            .map(|(i, _)| i)
            .collect();
        let names = not_null
            .iter()
            .map(|&i| made.columns[i].name.clone())
            .collect();
        CatalogChanges {
            key: key(made) != key(now),
            not_null,
            names,
        }
    }

    /// Why a shape selecting `selected` (positions in `made`) must rotate, if it must.
    pub fn for_shape(&self, selected: &[usize]) -> Option<String> {
        if self.key {
            return Some("its table's primary key changed".into());
        }
        self.not_null
            .iter()
            .zip(&self.names)
            .find(|(i, _)| selected.contains(i))
            .map(|(_, name)| format!("NOT NULL of column {name} it selects changed"))
    }
}

/// `layout` rearranged into the relation's columns: a column it had unchanged keeps its
/// description; any other is described from the relation alone (no shape kept by [`fit`]
/// reads it).
fn relayout(layout: &TableSchema, relation: &Relation) -> TableSchema {
    let columns = relation
        .columns
        .iter()
        .map(|wal| {
            layout
                .columns
                .iter()
                .find(|c| same_column(c, wal))
                .cloned()
                .unwrap_or_else(|| Column {
                    name: wal.name.clone(),
                    ty: PgType {
                        oid: wal.type_oid,
                        name: format!("oid {}", wal.type_oid),
                        kind: TypeKind::Base,
                    },
                    type_mod: wal.type_mod,
                    dims: 0,
                    not_null: false,
                    pk_index: None,
                    generated: false,
                })
        })
        .collect();
    TableSchema {
        name: layout.name.clone(),
        oid: relation.oid,
        columns,
    }
}

#[cfg(test)]
mod tests;
