//! Builders for the schemas that tests, fuzz targets and the bench describe by hand, so that
//! every one of them spells a column the same way instead of keeping its own `Column { … }`.
//!
//! Compiled for `shapes`' own tests and, with the `testing` feature, for the other crates'
//! tests, the fuzz targets and the bench; never part of a release build.
//!
//! ```
//! use shapes::testing::{base, column, table};
//!
//! let t = table(
//!     "public",
//!     "notes",
//!     vec![column("id", base("uuid")).pk(0).not_null(), column("title", base("text"))],
//! );
//! assert_eq!(t.primary_key(), [0]);
//! ```

use crate::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};

/// A built-in scalar type known by its name (`int4`, `text`, …), with no oid.
pub fn base(name: &str) -> PgType {
    PgType {
        oid: 0,
        name: name.into(),
        kind: TypeKind::Base,
    }
}

/// An array of `element`; like the catalog, it carries the element's name.
pub fn array_of(element: PgType) -> PgType {
    PgType {
        oid: 0,
        name: element.name.clone(),
        kind: TypeKind::Array {
            element: Box::new(element),
        },
    }
}

/// An enum whose labels compare in the order given.
pub fn enum_of(name: &str, labels: &[&str]) -> PgType {
    PgType {
        oid: 0,
        name: name.into(),
        kind: TypeKind::Enum {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        },
    }
}

/// A domain `name` over `base`.
pub fn domain_of(name: &str, base: PgType) -> PgType {
    PgType {
        oid: 0,
        name: name.into(),
        kind: TypeKind::Domain {
            base: Box::new(base),
        },
    }
}

/// A nullable, writable column of type `ty`, outside the primary key, with no type modifier;
/// the methods below change one of these at a time.
pub fn column(name: &str, ty: PgType) -> Column {
    Column {
        name: name.into(),
        ty,
        type_mod: -1,
        dims: 0,
        not_null: false,
        pk_index: None,
        generated: false,
    }
}

impl Column {
    /// Puts the column at `position` (0-based) in the primary key. Leaves `not_null` alone:
    /// say [`Column::not_null`] too where the test's catalog would.
    pub fn pk(mut self, position: usize) -> Self {
        self.pk_index = Some(position);
        self
    }

    /// Declares the column `NOT NULL`.
    pub fn not_null(mut self) -> Self {
        self.not_null = true;
        self
    }

    /// Sets `atttypmod` (varchar length, numeric precision and scale, …).
    pub fn type_mod(mut self, type_mod: i32) -> Self {
        self.type_mod = type_mod;
        self
    }

    /// Makes the column `GENERATED ALWAYS AS …`.
    pub fn generated(mut self) -> Self {
        self.generated = true;
        self
    }
}

/// The table `schema.name` with oid 1.
pub fn table(schema: &str, name: &str, columns: Vec<Column>) -> TableSchema {
    TableSchema {
        name: QualifiedName::new(schema, name),
        oid: 1,
        columns,
    }
}

/// `mood`: the enum `('sad', 'ok', 'happy')`.
pub fn mood() -> PgType {
    enum_of("mood", &["sad", "ok", "happy"])
}

/// `public.things`: a key `id int8` and one column of every type the `where` language
/// evaluates (and a couple it does not), which the `where` tests and fuzz targets share.
pub fn every_type_table() -> TableSchema {
    let point = PgType {
        oid: 600,
        ..base("point")
    };
    table(
        "public",
        "things",
        vec![
            column("id", base("int8")).pk(0).not_null(),
            column("i2", base("int2")),
            column("i4", base("int4")),
            column("i8", base("int8")),
            column("n", base("numeric")),
            column("f4", base("float4")),
            column("f8", base("float8")),
            column("b", base("bool")),
            column("t", base("text")),
            column("vc", base("varchar")),
            column("c", base("bpchar")),
            column("u", base("uuid")),
            column("d", base("date")),
            column("tm", base("time")),
            column("ts", base("timestamp")),
            column("tz", base("timestamptz")),
            column("iv", base("interval")),
            column("j", base("json")),
            column("jb", base("jsonb")),
            column("e", mood()),
            column("ai", array_of(base("int4"))),
            column("at", array_of(base("text"))),
            column("Mixed Case", base("text")),
            column("p", point),
            column("dom", domain_of("posint", base("int4"))),
        ],
    )
}

/// One subquery's current rows, as a reference for tests: the keys they offer, whether one
/// offers a NULL, and how many there are.
#[derive(Debug, Default)]
pub struct SubqueryMembers {
    pub keys: std::collections::HashSet<crate::where_clause::ValueKey>,
    pub has_null: bool,
    pub rows: usize,
}

/// The current rows of every subquery of one clause, computed from whole tables the way the
/// proxy keeps them: the inner rows matching the inner `where` (itself evaluated with the
/// current rows of its own subqueries), by
/// [`Subquery::key_of_inner`](crate::where_clause::Subquery::key_of_inner). A reference oracle
/// for the evaluator's tests.
#[derive(Debug, Default)]
pub struct SubqueryRows(pub Vec<SubqueryMembers>);

impl SubqueryRows {
    pub fn of(
        clause: &crate::where_clause::WhereClause,
        tables: &std::collections::HashMap<QualifiedName, Vec<crate::schema::Row>>,
    ) -> SubqueryRows {
        SubqueryRows(
            clause
                .subqueries()
                .iter()
                .map(|sq| {
                    let inner = sq
                        .where_clause
                        .as_ref()
                        .map(|w| (w, SubqueryRows::of(w, tables)));
                    let mut members = SubqueryMembers::default();
                    for row in tables.get(&sq.table).map(Vec::as_slice).unwrap_or_default() {
                        if let Some((w, current)) = &inner
                            && !w.matches_with(row, current)
                        {
                            continue;
                        }
                        members.rows += 1;
                        match sq.key_of_inner(row) {
                            Some(k) => {
                                members.keys.insert(k);
                            }
                            None => members.has_null = true,
                        }
                    }
                    members
                })
                .collect(),
        )
    }
}

impl crate::where_clause::SubqueryValues for SubqueryRows {
    fn contains(&self, subquery: usize, key: &crate::where_clause::ValueKey) -> bool {
        self.0[subquery].keys.contains(key)
    }

    fn has_null(&self, subquery: usize) -> bool {
        self.0[subquery].has_null
    }

    fn is_empty(&self, subquery: usize) -> bool {
        self.0[subquery].rows == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_column_is_nullable_writable_and_outside_the_key() {
        let c = column("t", base("text"));
        assert_eq!(
            (c.type_mod, c.dims, c.not_null, c.pk_index, c.generated),
            (-1, 0, false, None, false)
        );
    }

    #[test]
    fn every_type_table_has_its_key_first() {
        let t = every_type_table();
        assert_eq!(t.primary_key(), [0]);
        assert_eq!(t.column_index("dom"), Some(t.columns.len() - 1));
    }
}
