//! The `where` language of shapes: a Postgres boolean expression over one table's columns,
//! with `$1…$n` placeholders.
//!
//! A `where` is used twice: the proxy's snapshot runs it as SQL on Postgres
//! ([`WhereClause::to_sql`]), and the live stream evaluates it on each changed row
//! ([`WhereClause::matches`]). Both must give the same answer on every database, or a device
//! silently loses rows. So the language is Postgres' expression language with a few rules:
//!
//! - **Text compares byte-wise**, as under `COLLATE "C"`, whatever the database collation
//!   (the SQL says `COLLATE "C"`). `lower`, `upper` and `ILIKE` map case as the database's
//!   ctype does ([`ctype`]; the SQL says `COLLATE "default"`), and are refused on a database
//!   whose ctype cannot be reproduced.
//! - **Date/time arithmetic that Postgres would reject gives NULL** (out of range, infinite
//!   dates subtracted); timestamps move by constant intervals only, in UTC.
//! - **Integer arithmetic is exact**: `+ - * / %` on integers run in `numeric` and never
//!   overflow; `/` on two integers truncates, as in Postgres. Arithmetic on `float4`/`float8`
//!   is refused (Postgres raises an error on overflow); cast to `numeric` first.
//! - **Division or modulo by zero gives NULL** instead of an error (for every dividend, NaN
//!   included, where Postgres returns NaN).
//! - **Casts of column values that could fail are refused** (`text_col::int4`): compare with
//!   a constant of the column's type instead (`int_col = '42'`). Constants are checked when the
//!   shape is created, and `params[n]` are typed by where `$n` is used.
//! - **Nothing non-deterministic**: `now()`, `random()`, … are refused.
//! - Date/time literals are ISO 8601 (`'2024-01-31'`, `'2024-01-31 10:00:00+02'`); a
//!   `timestamptz` literal without an offset is UTC. Intervals are ISO 8601 (`'P1DT2H'`) or
//!   integer quantities (`'1 day 2 hours'`).
//! - `->`/`->>` on a `json` (not `jsonb`) document containing the escape `\u0000` give NULL
//!   (Postgres would raise an error).
//!
//! Supported: `AND OR NOT`, `= <> != < <= > >=`, `IS [NOT] NULL`, `IS [NOT] TRUE/FALSE`,
//! `IS [NOT] DISTINCT FROM`, `[NOT] IN (…)`, `[NOT] BETWEEN`, `[NOT] LIKE/ILIKE [ESCAPE]`
//! (constant pattern), `+ - * / %`, unary minus, `||`, `lower`, `upper`, `length`,
//! `coalesce`, `::type` and `CAST`, `op ANY/ALL (array)`, `@> <@ &&`, `ARRAY[…]`, `->`/`->>`,
//! jsonb `= <> @> <@ ? ?| ?&`, `date ± int`, `date - date`, `timestamp[tz] ± interval`;
//! over int2/4/8, numeric, float4/8, bool, text/varchar/bpchar, uuid, date, time, timestamp,
//! timestamptz, interval, json/jsonb, enums and arrays of these. `shapes/WHERE.md` is the
//! user-facing version of this list.
//!
//! **Subqueries** ([`subquery`]): `x [NOT] IN (SELECT cols FROM table [alias] [WHERE …])`,
//! row values `(a, b) IN (SELECT x, y …)`, and correlated `[NOT] EXISTS (SELECT 1 FROM t
//! WHERE t.x = outer_col AND …)`, which is mapped onto `outer_col IN (SELECT x FROM t WHERE
//! …)` with a flag ([`Expr::InSubquery`]'s `exists`) that makes it never NULL. One table per
//! subquery, with a primary key; plain columns selected; nested to
//! [`MAX_SUBQUERY_DEPTH`] levels, at most [`MAX_SUBQUERIES`] per `where`. Names inside a
//! subquery resolve to its table only (outer columns only in an `EXISTS` equality). Such a
//! clause is parsed by [`WhereClause::parse_with_tables`] (which needs the other tables'
//! schemas: [`WhereClause::tables_named`]) and evaluated by [`WhereClause::evaluate_with`],
//! which asks a [`SubqueryValues`] about the subqueries' current rows; [`WhereClause::parse`]
//! refuses subqueries, and [`WhereClause::evaluate`] treats every subquery as empty. The
//! rebuilt SQL aliases each inner table `s<depth>` and qualifies its columns with it.
//!
//! **Tags** ([`TagPlan`], [`tags`]): Electric's wire for such shapes, the clause
//! expanded into disjuncts and positions, each row's tag strings and active conditions, and
//! the move patterns of a value entering or leaving a subquery.
//!
//! ```
//! use std::collections::BTreeMap;
//! use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
//! use shapes::where_clause::WhereClause;
//! let col = |name: &str, ty: &str, pk| Column {
//!     name: name.into(),
//!     ty: PgType { oid: 0, name: ty.into(), kind: TypeKind::Base },
//!     type_mod: -1, dims: 0, not_null: pk, pk_index: pk.then_some(0), generated: false,
//! };
//! let table = TableSchema {
//!     name: QualifiedName::new("public", "items"),
//!     oid: 1,
//!     columns: vec![col("id", "int8", true), col("title", "text", false)],
//! };
//! let params = BTreeMap::from([(1, "5".to_string())]);
//! let w = WhereClause::parse("id > $1 AND title LIKE 'a%'", &params, &table).unwrap();
//! assert!(w.matches(&[Some("7".into()), Some("apple".into())]));
//! assert!(!w.matches(&[Some("7".into()), None]));
//! let (sql, values) = w.to_sql();
//! assert_eq!(sql, r#"(("id" > $1::int8) AND (("title") COLLATE "C" LIKE $2::text ESCAPE $3::text))"#);
//! assert_eq!(values, ["5", "a%", "\\"]);
//! ```

pub mod array_text;
mod ast;
pub mod ast_access;
mod cast;
mod check_datetime;
mod check_jsonb;
mod check_ops;
mod check_subquery;
pub mod ctype;
pub mod datetime;
pub mod datetime_arith;
mod dnf;
mod error;
mod eval;
pub mod float;
pub mod json;
pub mod jsonb;
pub mod like;
pub mod numeric;
mod parse;
mod rebuild;
mod rebuild_subquery;
pub mod subquery;
mod subquery_query;
mod tag_hash;
pub mod tags;
mod typecheck;
pub mod types;
pub mod value;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use ast::{CmpOp, Constant, Expr};
pub use dnf::MAX_DISJUNCTS;
pub use error::WhereError;
pub use subquery::{
    MAX_SUBQUERIES, MAX_SUBQUERY_DEPTH, NoSubqueryRows, Subquery, SubqueryValues, ValueKey,
};
pub use tags::{Condition, TagPlan};

use crate::schema::{QualifiedName, TableSchema};

/// The schemas of the tables a `where`'s subqueries read, by name (`None`: no such table).
pub type OtherTables<'a> = &'a dyn Fn(&QualifiedName) -> Option<Arc<TableSchema>>;

/// Longest `where` text accepted (a URL parameter; also bounds parser work).
pub const MAX_WHERE_LEN: usize = 64 * 1024;

/// A parsed, type-checked `where`, ready to evaluate, rebuild as SQL, or route on.
#[derive(Debug, Clone, PartialEq)]
pub struct WhereClause {
    root: Expr,
    /// The subqueries directly in `root` (`Expr::InSubquery::subquery` indexes this).
    subqueries: Vec<Arc<Subquery>>,
}

impl WhereClause {
    /// A clause of part of this one's tree (its subqueries are kept, so `root` may test them).
    pub(crate) fn with_root(&self, root: Expr) -> WhereClause {
        WhereClause {
            root,
            subqueries: self.subqueries.clone(),
        }
    }

    /// A clause checked by a subquery's checker.
    pub(crate) fn from_parts(root: Expr, subqueries: Vec<Arc<Subquery>>) -> WhereClause {
        WhereClause { root, subqueries }
    }

    /// Parses and checks `text` against `table`, substituting `params` (`$n` → `params[n]`).
    /// Subqueries are refused: they need the schemas of other tables
    /// ([`WhereClause::parse_with_tables`]).
    pub fn parse(
        text: &str,
        params: &BTreeMap<usize, String>,
        table: &TableSchema,
    ) -> Result<WhereClause, WhereError> {
        Self::check(text, params, table, None)
    }

    /// Like [`WhereClause::parse`], with the schemas of other tables for subqueries: `others`
    /// gives a table's schema by its schema-qualified name (an unqualified name in a subquery
    /// is in `public`), `None` when there is no such table (an error naming it).
    /// [`WhereClause::tables_named`] lists the names `others` will be asked for.
    ///
    /// ```
    /// use std::{collections::BTreeMap, sync::Arc};
    /// use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
    /// use shapes::where_clause::WhereClause;
    /// let col = |name: &str, ty: &str, pk: bool| Column {
    ///     name: name.into(),
    ///     ty: PgType { oid: 0, name: ty.into(), kind: TypeKind::Base },
    ///     type_mod: -1, dims: 0, not_null: pk, pk_index: pk.then_some(0), generated: false,
    /// };
    /// let table = |name: &str, columns| TableSchema {
    ///     name: QualifiedName::new("public", name), oid: 1, columns,
    /// };
    /// let issues = table("issues", vec![col("id", "int8", true), col("project_id", "int4", false)]);
    /// let projects = Arc::new(table("projects", vec![col("id", "int8", true), col("org", "text", false)]));
    /// let members = Arc::new(table("members", vec![col("id", "int8", true), col("org", "text", false), col("user_id", "int8", false)]));
    /// let others = |name: &QualifiedName| match name.name.as_str() {
    ///     "projects" => Some(projects.clone()),
    ///     "members" => Some(members.clone()),
    ///     _ => None,
    /// };
    /// let text = "project_id IN (SELECT id FROM projects WHERE org IN \
    ///             (SELECT org FROM members m WHERE m.user_id = $1))";
    /// assert_eq!(
    ///     WhereClause::tables_named(text).unwrap(),
    ///     [QualifiedName::new("public", "projects"), QualifiedName::new("public", "members")]
    /// );
    /// let params = BTreeMap::from([(1, "42".to_string())]);
    /// let w = WhereClause::parse_with_tables(text, &params, &issues, &others).unwrap();
    /// let (sql, values) = w.to_sql();
    /// assert_eq!(
    ///     sql,
    ///     r#"(("project_id")::int8 IN (SELECT "s1"."id" FROM "public"."projects" AS "s1" WHERE (("s1"."org") COLLATE "C" IN (SELECT ("s2"."org") COLLATE "C" FROM "public"."members" AS "s2" WHERE ("s2"."user_id" = $1::int8)))))"#
    /// );
    /// assert_eq!(values, ["42"]);
    /// assert_eq!(w.columns_used().collect::<Vec<_>>(), [1]);
    /// ```
    pub fn parse_with_tables(
        text: &str,
        params: &BTreeMap<usize, String>,
        table: &TableSchema,
        others: OtherTables<'_>,
    ) -> Result<WhereClause, WhereError> {
        Self::check(text, params, table, Some(others))
    }

    fn check(
        text: &str,
        params: &BTreeMap<usize, String>,
        table: &TableSchema,
        others: Option<OtherTables<'_>>,
    ) -> Result<WhereClause, WhereError> {
        let syntax = Self::syntax(text)?;
        let count = std::cell::Cell::new(0);
        let mut checker = typecheck::Checker::new(table, params, text, others, &count);
        let root = checker.check_root(&syntax)?;
        Ok(WhereClause {
            root,
            subqueries: checker.subqueries,
        })
    }

    fn syntax(text: &str) -> Result<sqlparser::ast::Expr, WhereError> {
        if text.len() > MAX_WHERE_LEN {
            return Err(WhereError::invalid(format!(
                "the where clause is longer than {MAX_WHERE_LEN} bytes"
            )));
        }
        parse::parse_expression(text)
    }

    /// Every table the text's subqueries name, at any depth, each once in order of
    /// appearance (an unqualified name is in `public`), so the caller can load their schemas
    /// before [`WhereClause::parse_with_tables`]. Syntax errors as `parse` gives them; other
    /// faults are left to `parse_with_tables`.
    pub fn tables_named(text: &str) -> Result<Vec<QualifiedName>, WhereError> {
        let syntax = Self::syntax(text)?;
        Ok(subquery_query::tables_named(&syntax))
    }

    /// The subqueries directly in this clause: index `i` is the `subquery` of
    /// [`Expr::InSubquery`] and the number [`SubqueryValues`] is asked about. Nested ones are
    /// in each [`Subquery::where_clause`].
    pub fn subqueries(&self) -> &[Arc<Subquery>] {
        &self.subqueries
    }

    /// Whether the clause has subqueries (its value then depends on other tables' rows).
    pub fn has_subqueries(&self) -> bool {
        !self.subqueries.is_empty()
    }

    /// Whether `row` (values in the table's column order, Postgres text output, `None` for
    /// NULL) is in the shape. A NULL result does not match. Subqueries are evaluated as if
    /// they had no rows ([`NoSubqueryRows`]); use [`WhereClause::matches_with`] for a clause
    /// that [has subqueries](WhereClause::has_subqueries).
    pub fn matches(&self, row: &[Option<String>]) -> bool {
        self.matches_with(row, &NoSubqueryRows)
    }

    /// The value of the whole expression: `Some(bool)`, or `None` for NULL. Subqueries are
    /// evaluated as if they had no rows, as in [`WhereClause::matches`].
    pub fn evaluate(&self, row: &[Option<String>]) -> Option<bool> {
        self.evaluate_with(row, &NoSubqueryRows)
    }

    /// Like [`WhereClause::matches`], with subquery membership from `values` (asked about
    /// this clause's [subqueries](WhereClause::subqueries) by index).
    pub fn matches_with(&self, row: &[Option<String>], values: &dyn SubqueryValues) -> bool {
        self.evaluate_with(row, values) == Some(true)
    }

    /// Like [`WhereClause::evaluate`], with subquery membership from `values`.
    pub fn evaluate_with(
        &self,
        row: &[Option<String>],
        values: &dyn SubqueryValues,
    ) -> Option<bool> {
        let subqueries = eval::Subqueries {
            clauses: &self.subqueries,
            values,
        };
        match eval::eval(&self.root, row, &subqueries) {
            value::Datum::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The outer row's membership key for subquery `i`: the values of the outer expression(s)
    /// compared with it, converted to [`Subquery::types`] (so `int4_col IN (SELECT int8_col …)`
    /// gives the int8 key), `None` if any is NULL or there is no subquery `i`.
    pub fn outer_key(&self, subquery: usize, row: &[Option<String>]) -> Option<ValueKey> {
        let exprs = subquery::outer_exprs(&self.root, subquery)?;
        let sq = self.subqueries.get(subquery)?;
        let subqueries = eval::Subqueries {
            clauses: &self.subqueries,
            values: &NoSubqueryRows,
        };
        subquery::key_of(&exprs, &sq.types, row, &subqueries)
    }

    /// The outer columns compared with subquery `i`, when every compared value is a plain
    /// column (cast or not): what a query may look rows up by. `None` otherwise.
    pub fn outer_columns(&self, subquery: usize) -> Option<Vec<usize>> {
        subquery::outer_exprs(&self.root, subquery)?
            .iter()
            .map(|e| {
                let mut e = e;
                while let Expr::Cast { expr, .. } = e {
                    e = expr;
                }
                match e {
                    Expr::Column { index, .. } => Some(*index),
                    _ => None,
                }
            })
            .collect()
    }

    /// SQL for Postgres with parameters `$1…`, and their values as text (prepare every
    /// parameter as `text`; the SQL casts each one).
    pub fn to_sql(&self) -> (String, Vec<String>) {
        self.to_sql_with_offset(1)
    }

    /// Like [`WhereClause::to_sql`], numbering parameters from `first_param`, so several
    /// clauses can be ANDed into one statement.
    pub fn to_sql_with_offset(&self, first_param: usize) -> (String, Vec<String>) {
        let mut w = rebuild::SqlWriter::sql(first_param);
        w.write_clause(self, None);
        (w.out, w.params)
    }

    /// A canonical text: the same for the same condition however it was written (spacing,
    /// keyword case, quoting, parameters or inline constants).
    pub fn canonical(&self) -> String {
        let mut w = rebuild::SqlWriter::canonical();
        w.write_clause(self, None);
        w.out
    }

    /// Positions of the columns of the clause's own table it reads (each once, ascending):
    /// the outer sides of subqueries included, their inner columns not.
    pub fn columns_used(&self) -> impl Iterator<Item = usize> + use<> {
        let mut used = Vec::new();
        collect_columns(&self.root, &mut used);
        used.sort_unstable();
        used.dedup();
        used.into_iter()
    }

    /// The checked tree (for the routing index).
    pub fn root(&self) -> &Expr {
        &self.root
    }

    /// This clause with `filter_of(table)` ANDed into every subquery over `table`, at every
    /// level: how a token's rules narrow the rows of other tables a `where` may read (a
    /// subquery sees only the rows of its table that the token could read itself). The
    /// filters' own subqueries are not narrowed further.
    pub fn with_subquery_filters(
        &self,
        filter_of: &dyn Fn(&QualifiedName) -> Option<WhereClause>,
    ) -> WhereClause {
        let subqueries = self
            .subqueries
            .iter()
            .map(|subquery| {
                let mut narrowed = (**subquery).clone();
                let inner = narrowed
                    .where_clause
                    .take()
                    .map(|w| w.with_subquery_filters(filter_of));
                narrowed.where_clause = match (inner, filter_of(&narrowed.table)) {
                    (Some(w), Some(filter)) => Some(filter.and(&w)),
                    (None, Some(filter)) => Some(filter),
                    (w, None) => w,
                }
                .map(Arc::new);
                Arc::new(narrowed)
            })
            .collect();
        WhereClause {
            root: self.root.clone(),
            subqueries,
        }
    }

    /// `self AND other`: rows must match both. Both clauses must have been parsed against the
    /// same table. Each keeps its own constants, so `other` cannot change what `self` means
    /// (this is how a server-side row filter is added to a client's `where`).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
    /// use shapes::where_clause::WhereClause;
    /// let col = |name: &str, ty: &str, pk| Column {
    ///     name: name.into(),
    ///     ty: PgType { oid: 0, name: ty.into(), kind: TypeKind::Base },
    ///     type_mod: -1, dims: 0, not_null: pk, pk_index: pk.then_some(0), generated: false,
    /// };
    /// let table = TableSchema {
    ///     name: QualifiedName::new("public", "items"),
    ///     oid: 1,
    ///     columns: vec![col("id", "int8", true), col("owner", "text", false)],
    /// };
    /// let none = BTreeMap::new();
    /// let filter = WhereClause::parse("owner = 'alice'", &none, &table).unwrap();
    /// let wide = WhereClause::parse("id > 0 OR true", &none, &table).unwrap();
    /// let both = filter.and(&wide);
    /// assert!(both.matches(&[Some("1".into()), Some("alice".into())]));
    /// assert!(!both.matches(&[Some("1".into()), Some("bob".into())]));
    /// assert_eq!(
    ///     both.to_sql().0,
    ///     r#"((("owner") COLLATE "C" = $1::text) AND (("id" > $2::int8) OR $3::boolean))"#
    /// );
    /// ```
    pub fn and(&self, other: &WhereClause) -> WhereClause {
        let mut conjuncts = Vec::with_capacity(2);
        for (clause, shift) in [(self, 0), (other, self.subqueries.len())] {
            let mut root = clause.root.clone();
            if shift > 0 {
                root.shift_subqueries(shift);
            }
            match root {
                Expr::And(items) => conjuncts.extend(items),
                single => conjuncts.push(single),
            }
        }
        let mut subqueries = self.subqueries.clone();
        subqueries.extend(other.subqueries.iter().cloned());
        WhereClause {
            root: Expr::And(conjuncts),
            subqueries,
        }
    }
}

fn collect_columns(e: &Expr, out: &mut Vec<usize>) {
    if let Expr::Column { index, .. } = e {
        out.push(*index);
    }
    e.for_each_child(&mut |c| collect_columns(c, out));
}
