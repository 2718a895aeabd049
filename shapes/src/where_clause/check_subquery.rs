//! Type checking of subqueries (the rest of [`super::typecheck`]): `x [NOT] IN (SELECT …)`,
//! row values, and correlated `[NOT] EXISTS` turned into the same membership test.
//!
//! A subquery's `SELECT` list and `WHERE` are checked by a child [`Checker`] on the inner
//! table, one scope level down: its names resolve against the inner table only. A name of
//! an enclosing table is refused, but on the outer side of an `EXISTS` correlation, where
//! the parent checker reads it.

use std::sync::Arc;

use sqlparser::ast::{BinaryOperator, Expr as SqlExpr, Query, SelectItem};

use super::ast::Expr;
use super::error::WhereError;
use super::subquery::{MAX_SUBQUERIES, MAX_SUBQUERY_DEPTH, Subquery, keyable};
use super::subquery_query::subquery_parts;
use super::typecheck::{Checked, Checker, Scope, describe, implicit_cast, table_qualifiers};
use super::types::SqlType;
use super::{OtherTables, WhereClause};
use crate::schema::{QualifiedName, TableSchema, quote_identifier};

fn invalid<T>(message: impl Into<String>) -> Result<T, WhereError> {
    Err(WhereError::invalid(message))
}

/// The inner column and outer expression of one compared pair, with the columns they came
/// from, before conversion.
struct Pair {
    outer: Expr,
    inner: Expr,
    column: usize,
    ty: SqlType,
}

/// The top-level `AND` operands of `e` (through parentheses), without recursion.
fn conjuncts(e: &SqlExpr) -> Vec<&SqlExpr> {
    let mut out = Vec::new();
    let mut pending = vec![e];
    while let Some(x) = pending.pop() {
        match x {
            SqlExpr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                pending.push(right);
                pending.push(left);
            }
            SqlExpr::Nested(inner)
                if matches!(
                    **inner,
                    SqlExpr::BinaryOp {
                        op: BinaryOperator::And,
                        ..
                    } | SqlExpr::Nested(_)
                ) =>
            {
                pending.push(inner)
            }
            other => out.push(other),
        }
    }
    out
}

fn unparenthesized(mut e: &SqlExpr) -> &SqlExpr {
    while let SqlExpr::Nested(inner) = e {
        e = inner;
    }
    e
}

const CORRELATION_HINT: &str = "in EXISTS, the outer row may be used only in equalities \
     inner_column = outer_column, joined to the other conditions by AND";

impl<'a> Checker<'a> {
    /// `q.col`: a column of this table when `q` names it, else refused.
    pub(crate) fn qualified_column(&mut self, names: &[String]) -> Result<Expr, WhereError> {
        let Some((column, qualifier)) = names.split_last() else {
            return invalid("empty column name");
        };
        if self.scope.qualified_ok && self.scope.qualifiers.iter().any(|q| q == qualifier) {
            return self.own_column(column);
        }
        let written = names.join(".");
        if let Some((outer, _)) = self
            .scope
            .enclosing
            .iter()
            .find(|(_, qs)| qs.iter().any(|q| q == qualifier))
        {
            self.outer_reference = true;
            return invalid(format!(
                "{written} is a column of the outer table {}: a subquery may use the outer row \
                 only in EXISTS, as inner_column = {written}",
                outer.name
            ));
        }
        if self.scope.level == 0 {
            return invalid(format!(
                "qualified column references ({written}) are not supported; write the column name alone"
            ));
        }
        invalid(format!(
            "{written}: the subquery reads no table {}; its table is {}{}",
            qualifier.join("."),
            self.table.name,
            match self.scope.qualifiers.as_slice() {
                [alias] if alias.len() == 1 => format!(" as {}", alias[0]),
                _ => String::new(),
            }
        ))
    }

    /// A checker for the `where` of a subquery on `schema`, one level down.
    fn child<'c>(&self, schema: &'c TableSchema, alias: Option<String>) -> Checker<'c>
    where
        'a: 'c,
    {
        let mut enclosing = vec![(self.table, self.scope.qualifiers.clone())];
        enclosing.extend(self.scope.enclosing.iter().cloned());
        Checker {
            table: schema,
            ctype: self.ctype.clone(),
            params: self.params,
            text: self.text,
            depth: self.depth,
            others: self.others,
            scope: Scope {
                level: self.scope.level + 1,
                qualifiers: match alias {
                    Some(a) => vec![vec![a]],
                    None => table_qualifiers(schema),
                },
                qualified_ok: true,
                enclosing,
                shadowed: Vec::new(),
            },
            subqueries: Vec::new(),
            subquery_count: self.subquery_count,
            outer_reference: false,
        }
    }

    /// Refuses subqueries when the clause is checked without other tables' schemas.
    fn subqueries_allowed(&self) -> Result<OtherTables<'a>, WhereError> {
        self.others.ok_or_else(|| {
            WhereError::invalid(
                "subqueries are not supported here: the where clause was checked without the \
                 schemas of other tables",
            )
        })
    }

    /// The schema of a subquery's table, counting the subquery against the limits.
    fn subquery_table(&self, name: &QualifiedName) -> Result<Arc<TableSchema>, WhereError> {
        let others = self.subqueries_allowed()?;
        if self.scope.level >= MAX_SUBQUERY_DEPTH {
            return invalid(format!(
                "subqueries may be nested at most {MAX_SUBQUERY_DEPTH} levels deep"
            ));
        }
        if self.subquery_count.get() >= MAX_SUBQUERIES {
            return invalid(format!(
                "a where clause may have at most {MAX_SUBQUERIES} subqueries"
            ));
        }
        let Some(schema) = others(name) else {
            return invalid(format!("table {name} does not exist"));
        };
        if schema.primary_key().is_empty() {
            return invalid(format!(
                "table {name} has no primary key; subqueries need one"
            ));
        }
        self.subquery_count.set(self.subquery_count.get() + 1);
        Ok(schema)
    }

    /// One selected column of an `IN` subquery.
    fn selected_column(&mut self, item: &SelectItem) -> Result<Expr, WhereError> {
        let e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                return invalid(
                    "SELECT * is not supported in a subquery: name the column(s) to compare",
                );
            }
            other => {
                return invalid(format!(
                    "only plain columns can be selected in a subquery, not `{other}`"
                ));
            }
        };
        if !matches!(e, SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_)) {
            return invalid(format!(
                "only plain columns can be selected in a subquery, not {}",
                describe(e)
            ));
        }
        self.typed(e)
    }

    /// The type an outer value and an inner column are compared in, and both converted to it.
    fn pair(&self, outer: Checked, inner: Expr) -> Result<Pair, WhereError> {
        let Expr::Column { index, .. } = inner else {
            return invalid("a subquery compares plain columns");
        };
        let inner_ty = inner.ty();
        let inner = Checked::Typed(inner);
        let ty = self.unify(&[&outer, &inner]).map_err(|_| {
            let outer_ty = match &outer {
                Checked::Typed(e) => e.ty().to_string(),
                Checked::Unknown { .. } => "unknown".to_owned(),
            };
            WhereError::invalid(format!(
                "cannot compare {outer_ty} with the subquery's column of type {inner_ty}"
            ))
        })?;
        if !keyable(&ty) {
            return invalid(format!(
                "values of type {ty} cannot be compared with a subquery's column; supported: \
                 integers, numeric, float4/8, bool, text/varchar/char, uuid, date, time, \
                 timestamp[tz] and enums"
            ));
        }
        let outer = self.coerce(outer, &ty)?;
        let Checked::Typed(inner) = inner else {
            return invalid("a subquery compares plain columns");
        };
        Ok(Pair {
            outer,
            inner: implicit_cast(inner, &ty)?,
            column: index,
            ty,
        })
    }

    /// Records a checked subquery; the node testing it.
    fn add_subquery(
        &mut self,
        table: QualifiedName,
        schema: Arc<TableSchema>,
        pairs: Vec<Pair>,
        where_clause: Option<WhereClause>,
        negated: bool,
        exists: bool,
    ) -> Expr {
        let mut exprs = Vec::with_capacity(pairs.len());
        let mut sq = Subquery {
            table,
            schema,
            columns: Vec::with_capacity(pairs.len()),
            types: Vec::with_capacity(pairs.len()),
            where_clause: where_clause.map(Arc::new),
            selected: Vec::with_capacity(pairs.len()),
        };
        for p in pairs {
            exprs.push(p.outer);
            sq.columns.push(p.column);
            sq.types.push(p.ty);
            sq.selected.push(p.inner);
        }
        self.subqueries.push(Arc::new(sq));
        Expr::InSubquery {
            exprs,
            subquery: self.subqueries.len() - 1,
            negated,
            exists,
        }
    }

    /// `lhs [NOT] IN (SELECT cols FROM t [WHERE …])`; `lhs` a value or a row `(a, b)`.
    pub(crate) fn in_subquery(
        &mut self,
        lhs: &SqlExpr,
        query: &Query,
        negated: bool,
    ) -> Result<Expr, WhereError> {
        self.subqueries_allowed()?;
        let parts = subquery_parts(query)?;
        let schema = self.subquery_table(&parts.table)?;
        let mut child = self.child(&schema, parts.alias.clone());
        let selected = parts
            .projection
            .iter()
            .map(|item| child.selected_column(item))
            .collect::<Result<Vec<_>, _>>()?;
        let outer: Vec<&SqlExpr> = match unparenthesized(lhs) {
            SqlExpr::Tuple(items) => items.iter().collect(),
            _ => vec![lhs],
        };
        if outer.len() != selected.len() {
            return invalid(format!(
                "the subquery selects {} column(s) to compare with {} value(s) on the left of IN",
                selected.len(),
                outer.len()
            ));
        }
        let mut pairs = Vec::with_capacity(outer.len());
        for (o, inner) in outer.into_iter().zip(selected) {
            let o = self.check(o)?;
            pairs.push(self.pair(o, inner)?);
        }
        let where_clause = match parts.selection {
            Some(w) => {
                let root = child.check_root(w)?;
                Some(WhereClause::from_parts(
                    root,
                    std::mem::take(&mut child.subqueries),
                ))
            }
            None => None,
        };
        Ok(self.add_subquery(
            parts.table,
            schema.clone(),
            pairs,
            where_clause,
            negated,
            false,
        ))
    }

    /// `[NOT] EXISTS (SELECT … FROM t WHERE t.x = outer.y AND …)`: the equalities with the
    /// outer row become the compared pairs, the other conditions the inner `where`.
    pub(crate) fn exists(&mut self, query: &Query, negated: bool) -> Result<Expr, WhereError> {
        self.subqueries_allowed()?;
        let parts = subquery_parts(query)?;
        for item in parts.projection {
            let plain = match item {
                SelectItem::Wildcard(_) => true,
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    matches!(
                        e,
                        SqlExpr::Value(_) | SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_)
                    )
                }
                _ => false,
            };
            if !plain {
                return invalid(
                    "EXISTS ignores what its subquery selects: write EXISTS (SELECT 1 FROM …)",
                );
            }
        }
        let schema = self.subquery_table(&parts.table)?;
        let mut child = self.child(&schema, parts.alias.clone());
        let mut conditions = Vec::new();
        let mut pairs = Vec::new();
        for c in parts.selection.map(conjuncts).unwrap_or_default() {
            let mark = (child.subqueries.len(), self.subquery_count.get());
            child.outer_reference = false;
            match child.check_root(c) {
                Ok(e) => conditions.push(e),
                Err(_) if child.outer_reference => {
                    // the conjunct's own subqueries were checked in vain
                    child.subqueries.truncate(mark.0);
                    self.subquery_count.set(mark.1);
                    pairs.push(self.correlation(&mut child, c)?);
                }
                Err(e) => return Err(e),
            }
        }
        if pairs.is_empty() {
            return invalid(
                "EXISTS (SELECT …) must be correlated with the outer row, as in EXISTS (SELECT 1 \
                 FROM t WHERE t.column = outer_table.column AND …); otherwise use IN (SELECT …)",
            );
        }
        let root = match conditions.len() {
            0 => None,
            1 => conditions.pop(),
            _ => Some(Expr::And(conditions)),
        };
        let where_clause =
            root.map(|r| WhereClause::from_parts(r, std::mem::take(&mut child.subqueries)));
        Ok(self.add_subquery(
            parts.table,
            schema.clone(),
            pairs,
            where_clause,
            negated,
            true,
        ))
    }

    /// `inner_column = outer_expression` (either way round) of an `EXISTS`.
    fn correlation(&mut self, child: &mut Checker<'_>, c: &SqlExpr) -> Result<Pair, WhereError> {
        let SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = unparenthesized(c)
        else {
            return invalid(format!("{CORRELATION_HINT} (not {})", describe(c)));
        };
        for (inner, outer) in [(left, right), (right, left)] {
            child.outer_reference = false;
            let Ok(Checked::Typed(column @ Expr::Column { .. })) = child.check(inner) else {
                continue;
            };
            // the outer side reads the enclosing table, where Postgres would read a name the
            // inner table also has from the inner table: refuse those unqualified
            let saved = (
                self.scope.qualified_ok,
                std::mem::take(&mut self.scope.shadowed),
            );
            self.scope.qualified_ok = true;
            self.scope.shadowed = child.table.columns.iter().map(|c| c.name.clone()).collect();
            let checked = self.check(outer);
            (self.scope.qualified_ok, self.scope.shadowed) = saved;
            let outer = checked?;
            return self.pair(outer, column);
        }
        invalid(format!("{CORRELATION_HINT} (not {})", describe(c)))
    }

    /// The message for an unqualified name of the outer side of a correlation that the inner
    /// table also has.
    pub(crate) fn shadowed_message(&self, name: &str) -> String {
        format!(
            "column \"{name}\" would name the subquery's own column here; write the outer one as {}.{name}",
            quote_identifier(&self.table.name.name)
        )
    }
}
