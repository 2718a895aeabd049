//! Subquery tests written as SQL (the rest of [`super::rebuild`]), so that Postgres computes
//! what [`super::subquery`]'s three-valued table says:
//!
//! - one value: `(x IN (SELECT col FROM t AS "s1" WHERE …))`, which is that table exactly;
//! - `EXISTS`: `COALESCE((x) IN (SELECT …), FALSE)`: true exactly when an inner row is equal,
//!   false otherwise (the correlation became the selected columns);
//! - a row value: a `CASE` that makes a NULL on either side unknown as a whole, where Postgres
//!   alone would compare pair by pair.
//!
//! Every inner table is aliased `s<depth>` and its columns are always qualified with that
//! alias, so no name inside a subquery can resolve to an enclosing query's table. Both sides
//! of every comparison are written converted to the comparison type, text ones under
//! `COLLATE "C"`.

use super::WhereClause;
use super::ast::Expr;
use super::rebuild::{Scope, SqlWriter};
use super::subquery::Subquery;
use crate::schema::quote_identifier;

/// What a `SELECT` of a subquery is written for.
#[derive(Clone, Copy, PartialEq)]
enum Select {
    /// The compared columns of the matching inner rows.
    Values,
    /// Matching inner rows with a NULL in a compared column.
    RowsWithNull,
}

impl SqlWriter {
    /// Writes `clause`'s condition; its table's columns qualified with `alias` when given.
    pub fn write_clause(&mut self, clause: &WhereClause, alias: Option<String>) {
        self.scopes.push(Scope {
            subqueries: clause.subqueries().to_vec(),
            alias,
        });
        self.write(clause.root());
        self.scopes.pop();
    }

    pub(crate) fn in_subquery(
        &mut self,
        exprs: &[Expr],
        index: usize,
        negated: bool,
        exists: bool,
    ) {
        let Some(sq) = self
            .scopes
            .last()
            .and_then(|s| s.subqueries.get(index))
            .cloned()
        else {
            // a checked clause always has its subqueries
            self.push("NULL::boolean");
            return;
        };
        if exists {
            self.push(if negated {
                "(NOT COALESCE("
            } else {
                "COALESCE("
            });
            self.membership(exprs, &sq, false);
            self.push(if negated { ", FALSE))" } else { ", FALSE)" });
        } else if exprs.len() == 1 {
            self.membership(exprs, &sq, negated);
        } else {
            self.row_membership(exprs, &sq, negated);
        }
    }

    /// `(x [NOT] IN (SELECT …))`, or with a row value `((a, b) [NOT] IN (SELECT …))`.
    fn membership(&mut self, exprs: &[Expr], sq: &Subquery, negated: bool) {
        self.push("(");
        if let [single] = exprs {
            self.collated(single, &sq.types[0]);
        } else {
            self.push("(");
            for (i, (e, ty)) in exprs.iter().zip(&sq.types).enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.collated(e, ty);
            }
            self.push(")");
        }
        self.push(if negated { " NOT IN " } else { " IN " });
        self.select(sq, Select::Values);
        self.push(")");
    }

    /// A row value: true when an inner row is equal; else NULL when the row value has a NULL
    /// and there are inner rows, or an inner row has a NULL; else false.
    fn row_membership(&mut self, exprs: &[Expr], sq: &Subquery, negated: bool) {
        self.push(if negated {
            "(NOT (CASE WHEN "
        } else {
            "(CASE WHEN "
        });
        self.membership(exprs, sq, false);
        self.push(" THEN TRUE WHEN (");
        for (i, e) in exprs.iter().enumerate() {
            if i > 0 {
                self.push(" OR ");
            }
            self.push("(");
            self.write(e);
            self.push(" IS NULL)");
        }
        self.push(") AND EXISTS ");
        self.select(sq, Select::Values);
        self.push(" THEN NULL WHEN EXISTS ");
        self.select(sq, Select::RowsWithNull);
        self.push(if negated {
            " THEN NULL ELSE FALSE END))"
        } else {
            " THEN NULL ELSE FALSE END)"
        });
    }

    /// `(SELECT <compared columns> FROM <table> AS "s<depth>" [WHERE <inner where>])`.
    fn select(&mut self, sq: &Subquery, what: Select) {
        let alias = format!("s{}", self.scopes.len());
        let inner = sq.where_clause.as_ref();
        self.scopes.push(Scope {
            subqueries: inner.map(|w| w.subqueries().to_vec()).unwrap_or_default(),
            alias: Some(alias.clone()),
        });
        self.push("(SELECT ");
        for (i, (e, ty)) in sq.selected.iter().zip(&sq.types).enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.collated(e, ty);
        }
        self.push(&format!(
            " FROM {} AS {}",
            sq.table,
            quote_identifier(&alias)
        ));
        if let Some(w) = inner {
            self.push(" WHERE ");
            self.write(w.root());
        }
        if what == Select::RowsWithNull {
            self.push(if inner.is_some() {
                " AND ("
            } else {
                " WHERE ("
            });
            for (i, e) in sq.selected.iter().enumerate() {
                if i > 0 {
                    self.push(" OR ");
                }
                self.push("(");
                self.write(e);
                self.push(" IS NULL)");
            }
            self.push(")");
        }
        self.scopes.pop();
        self.push(")");
    }
}
