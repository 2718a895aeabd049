//! Subqueries of a `where`: `x IN (SELECT col FROM other WHERE …)`, row values
//! `(a, b) IN (SELECT x, y …)`, their negations, and correlated `EXISTS` mapped onto the same
//! membership test.
//!
//! A checked subquery is a [`Subquery`]: the inner table, the selected columns converted to
//! the types they are compared in, and the inner `where` (itself a [`WhereClause`], which may
//! hold subqueries of its own). The evaluator does not read inner tables: it asks a
//! [`SubqueryValues`] whether the outer row's [`ValueKey`] is among the keys of the inner rows
//! that currently match the inner `where`, and whether any of those rows has a NULL in a
//! compared column. Keeping that set current is the caller's job ([`Subquery::key_of_inner`]
//! gives an inner row's key).
//!
//! Three-valued logic of `x IN (S)`, where `S` is the inner rows matching the inner `where`:
//!
//! | case | `IN` | `NOT IN` | `EXISTS` | `NOT EXISTS` |
//! |---|---|---|---|---|
//! | x's key is in S | true | false | true | false |
//! | S is empty | false | true | false | true |
//! | x (or a part of a row value) is NULL | NULL | NULL | false | true |
//! | some row of S has a NULL compared value | NULL | NULL | false | true |
//! | otherwise | false | true | false | true |
//!
//! (first matching line wins). For one value this is exactly Postgres' `IN`. For row values
//! Postgres compares pair by pair, so `(1, NULL) IN (SELECT 2, 5)` is false there; here a row
//! value holding a NULL on either side is unknown as a whole, and the rebuilt SQL says so
//! explicitly (see [`super::rebuild`]), so the snapshot and the stream still agree.

use std::sync::Arc;

use super::WhereClause;
use super::ast::Expr;
use super::eval::{self, Subqueries};
use super::types::SqlType;
use super::value::{Datum, bpchar_trim, to_input_text};
use crate::schema::{QualifiedName, TableSchema};

/// One `(SELECT cols FROM table [WHERE …])` of a where clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Subquery {
    /// The inner table, schema-qualified (an unqualified name is in `public`).
    pub table: QualifiedName,
    /// The inner table's schema the subquery was checked against.
    pub schema: Arc<TableSchema>,
    /// The selected inner columns (positions in `schema.columns`), one per compared value.
    pub columns: Vec<usize>,
    /// The type each pair is compared in: the outer expression and the inner column are both
    /// converted to it, as Postgres' operator resolution would.
    pub types: Vec<SqlType>,
    /// The inner filter (may itself hold subqueries, up to [`MAX_SUBQUERY_DEPTH`] levels).
    pub where_clause: Option<Arc<WhereClause>>,
    /// `columns` read and converted to `types`: what the SQL selects, and what keys are made of.
    pub(crate) selected: Vec<Expr>,
}

/// Deepest nesting of subqueries (a subquery in the `where` of a subquery is level 2).
pub const MAX_SUBQUERY_DEPTH: usize = 8;

/// Most subqueries in one `where`, all levels counted.
pub const MAX_SUBQUERIES: usize = 16;

impl Subquery {
    /// The membership key of an inner row (values in `schema.columns` order, Postgres text
    /// output, `None` = NULL): `None` when any compared value is NULL.
    ///
    /// ```
    /// # use std::{collections::BTreeMap, sync::Arc};
    /// # use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
    /// # use shapes::where_clause::WhereClause;
    /// # let col = |name: &str, ty: &str, pk: bool| Column {
    /// #     name: name.into(),
    /// #     ty: PgType { oid: 0, name: ty.into(), kind: TypeKind::Base },
    /// #     type_mod: -1, dims: 0, not_null: pk, pk_index: pk.then_some(0), generated: false,
    /// # };
    /// let items = TableSchema {
    ///     name: QualifiedName::new("public", "items"), oid: 1,
    ///     columns: vec![col("id", "int8", true), col("price", "int4", false)],
    /// };
    /// let prices = Arc::new(TableSchema {
    ///     name: QualifiedName::new("public", "prices"), oid: 2,
    ///     columns: vec![col("id", "int8", true), col("amount", "numeric", false)],
    /// });
    /// let w = WhereClause::parse_with_tables(
    ///     "price IN (SELECT amount FROM prices)", &BTreeMap::new(), &items,
    ///     &|_| Some(prices.clone()),
    /// ).unwrap();
    /// let sq = &w.subqueries()[0];
    /// // compared in numeric: 5.0 and the int4 5 have one key
    /// let inner = sq.key_of_inner(&[Some("1".into()), Some("5.0".into())]).unwrap();
    /// assert_eq!(&*inner.parts()[0], "5");
    /// assert_eq!(w.outer_key(0, &[Some("9".into()), Some("5".into())]), Some(inner));
    /// assert_eq!(sq.key_of_inner(&[Some("2".into()), None]), None);
    /// ```
    pub fn key_of_inner(&self, row: &[Option<String>]) -> Option<ValueKey> {
        let no_subqueries = Subqueries::none();
        key_of(&self.selected, &self.types, row, &no_subqueries)
    }
}

/// The canonical, hashable form of the compared value(s): two values Postgres considers equal
/// in the comparison type give equal keys (numeric `1.0` and `1`, float `-0` and `0`, int4 `5`
/// and int8 `5` compared as int8, a uuid in any case, bpchar without its trailing spaces), and
/// unequal ones different keys.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ValueKey(Box<[Box<str>]>);

impl ValueKey {
    /// One text per compared value, in the subquery's column order: each is valid input for
    /// its comparison type ([`Subquery::types`]), so it can be bound as a SQL parameter cast
    /// to that type (`= ANY($1::int8[])`). Enums give their label.
    pub fn parts(&self) -> &[Box<str>] {
        &self.0
    }
}

/// What the evaluator asks about a subquery's current rows: the inner rows that match its
/// inner `where` (evaluated, for nested subqueries, with their own current rows).
pub trait SubqueryValues {
    /// Whether some current inner row has this key.
    fn contains(&self, subquery: usize, key: &ValueKey) -> bool;
    /// Whether some current inner row has a NULL in a compared column (then `x NOT IN (…)` is
    /// never true, and `x IN (…)` is NULL instead of false when x is not found: SQL
    /// three-valued logic).
    fn has_null(&self, subquery: usize) -> bool;
    /// Whether the subquery has no current rows at all (then `NULL IN (…)` is false and
    /// `NULL NOT IN (…)` true, as in SQL; with rows both are NULL).
    fn is_empty(&self, subquery: usize) -> bool;
}

/// The oracle for a clause evaluated without its subqueries' rows: every subquery is empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSubqueryRows;

impl SubqueryValues for NoSubqueryRows {
    fn contains(&self, _: usize, _: &ValueKey) -> bool {
        false
    }

    fn has_null(&self, _: usize) -> bool {
        false
    }

    fn is_empty(&self, _: usize) -> bool {
        true
    }
}

/// Whether values of `ty` can be compared with a subquery's column: they need an equality
/// whose equal values have one canonical text ([`ValueKey`]).
pub(crate) fn keyable(ty: &SqlType) -> bool {
    use SqlType::*;
    matches!(
        ty,
        Bool | Int2
            | Int4
            | Int8
            | Numeric
            | Float4
            | Float8
            | Text
            | Varchar
            | Bpchar
            | Uuid
            | Date
            | Time
            | Timestamp
            | Timestamptz
            | Enum(_)
    )
}

/// The canonical text of a non-null value of `ty` (see [`ValueKey`]).
fn key_part(ty: &SqlType, d: &Datum<'_>) -> Option<Box<str>> {
    let text = match d {
        Datum::Null => return None,
        Datum::Numeric(n) => n.normalized_key(),
        Datum::Float(f) if *f == 0.0 => "0".to_owned(),
        Datum::Text(t) if *ty == SqlType::Bpchar => bpchar_trim(t).to_owned(),
        other => to_input_text(ty, other)?,
    };
    Some(text.into_boxed_str())
}

/// The key of `exprs` (each of its type in `types`) on `row`; `None` when any is NULL.
pub(crate) fn key_of(
    exprs: &[Expr],
    types: &[SqlType],
    row: &[Option<String>],
    subqueries: &Subqueries<'_>,
) -> Option<ValueKey> {
    let parts = exprs
        .iter()
        .zip(types)
        .map(|(e, ty)| key_part_on(e, ty, row, subqueries))
        .collect::<Option<Vec<_>>>()?;
    Some(ValueKey(parts.into_boxed_slice()))
}

/// One part of the key of [`key_of`]: the canonical text of `expr` (of type `ty`) on `row`,
/// `None` when it is NULL.
pub(crate) fn key_part_on(
    expr: &Expr,
    ty: &SqlType,
    row: &[Option<String>],
    subqueries: &Subqueries<'_>,
) -> Option<Box<str>> {
    key_part(ty, &eval::eval(expr, row, subqueries))
}

/// `exprs [NOT] IN (subquery)` (or `[NOT] EXISTS`) on `row`, by the table in the module doc.
pub(crate) fn membership(
    exprs: &[Expr],
    index: usize,
    negated: bool,
    exists: bool,
    row: &[Option<String>],
    subqueries: &Subqueries<'_>,
) -> Option<bool> {
    let sq = subqueries.clauses.get(index)?;
    let values = subqueries.values;
    let key = key_of(exprs, &sq.types, row, subqueries);
    let found = key.as_ref().is_some_and(|k| values.contains(index, k));
    let truth = if found || exists {
        Some(found)
    } else if values.is_empty(index) {
        Some(false)
    } else if key.is_none() || values.has_null(index) {
        None
    } else {
        Some(false)
    };
    truth.map(|t| t != negated)
}

/// The `exprs` of the node testing subquery `index` in `root`, if any.
pub(crate) fn outer_exprs(root: &Expr, index: usize) -> Option<Vec<Expr>> {
    let mut found = None;
    find_outer_exprs(root, index, &mut found);
    found
}

fn find_outer_exprs(e: &Expr, index: usize, found: &mut Option<Vec<Expr>>) {
    if found.is_some() {
        return;
    }
    match e {
        Expr::InSubquery {
            exprs, subquery, ..
        } if *subquery == index => *found = Some(exprs.clone()),
        _ => e.for_each_child(&mut |c| find_outer_exprs(c, index, found)),
    }
}
