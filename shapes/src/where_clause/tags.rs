//! Electric's subquery *tags*: what a shape whose `where` has subqueries tells the client
//! about each row, so that the client can drop or keep rows itself when a value enters or
//! leaves a subquery (a *move*), without refetching the shape.
//!
//! The clause is expanded into disjunctive normal form (`NOT` pushed to the leaves by De
//! Morgan, `AND` multiplied out over `OR` in argument order): an `OR` of disjuncts, each an
//! `AND` of possibly negated leaves. Every occurrence of a leaf in a
//! disjunct is a *position*, numbered across the whole expansion (disjunct 0's literals left
//! to right, then disjunct 1's, …), so `(a OR b) AND s` has the disjuncts `[a, s]`, `[b, s]`
//! and the positions `0:a 1:s 2:b 3:s`. A position tests one of three [`Condition`]s: a
//! subquery directly (`x IN (SELECT …)`, `EXISTS …`), a *plain* leaf with no subquery, or a
//! *mixed* leaf hiding a subquery inside a non-connective expression
//! (`coalesce(x IN (SELECT …), false)`), which is evaluated whole.
//!
//! For each row the wire carries:
//!
//! - **tags** ([`TagPlan::tags`]): one string per disjunct, whichever the row satisfies, of
//!   [`TagPlan::position_count`] slots joined by `/`. A slot is empty for a position of another
//!   disjunct, `1` for a plain or mixed position of this one, and for a subquery position the
//!   hash of the row's compared value(s): lowercase hex MD5 of the salt and `v:<value>` (or
//!   `NULL`), each part of a row value prefixed by its outer column's name and `:`, values
//!   written as their [`ValueKey`] part (canonical in the comparison type);
//! - **active conditions** ([`TagPlan::active_conditions`]): the truth of each position's
//!   literal on the row; the row is in the shape when every position of some disjunct is true
//!   ([`TagPlan::included`]);
//! - **removed tags** on an update ([`TagPlan::removed_tags`]): the old tags the new ones lost.
//!
//! When a value enters or leaves subquery `i`, its [move patterns](TagPlan::patterns) name the
//! slots (position and hash) of the rows it concerns; the client flips those positions' active
//! conditions and re-applies [`TagPlan::included`]. That only says the truth when every
//! subquery position is positive ([`TagPlan::all_positive`]) and no subquery is hidden in a
//! mixed leaf ([`TagPlan::has_mixed`]).
//!
//! Everything the live path needs per row is prepared once per shape: the literals with their
//! compared expressions, outer column names and polarity, and the positions of each disjunct
//! (a contiguous range), so a row costs one evaluation and at most one hash per literal.

use std::ops::Range;
use std::sync::Arc;

use super::WhereClause;
use super::ast::Expr;
use super::dnf::Dnf;
use super::error::WhereError;
use super::eval::{self, Subqueries};
use super::subquery::{Subquery, SubqueryValues, ValueKey, key_of, key_part_on};
use super::tag_hash::ValueHash;
use super::value::Datum;

/// What one position of a [`TagPlan`] tests, after the `NOT`s above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `x [NOT] IN (SELECT …)` or `[NOT] EXISTS (…)` on subquery `subquery` of the clause;
    /// tagged with the hash of the row's compared value(s).
    Subquery { subquery: usize, negated: bool },
    /// A leaf without subqueries; tagged `1`.
    Plain { negated: bool },
    /// A leaf with a subquery inside a non-connective expression; evaluated whole, with the
    /// subqueries' current rows, and tagged `1`.
    Mixed { negated: bool },
}

impl Condition {
    /// Whether an odd number of `NOT`s (or a `NOT IN`/`NOT EXISTS`) apply.
    pub fn negated(self) -> bool {
        match self {
            Condition::Subquery { negated, .. }
            | Condition::Plain { negated }
            | Condition::Mixed { negated } => negated,
        }
    }
}

/// A leaf of the clause, ready to be evaluated and tagged.
#[derive(Debug, Clone)]
struct Literal {
    condition: Condition,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    /// The outer expressions compared with the subquery (already converted to its types), and
    /// the names their hash uses: the outer column's, or the expression's index when it is
    /// not a column.
    Membership {
        subquery: usize,
        exprs: Vec<Expr>,
        names: Box<[Box<str>]>,
    },
    /// The leaf, evaluated whole (plain and mixed leaves).
    Leaf(Expr),
}

/// How a `where` is tagged on Electric's wire: its expansion into disjuncts and positions,
/// prepared once per shape (see the module doc).
///
/// ```
/// use std::{collections::BTreeMap, sync::Arc};
/// use shapes::schema::QualifiedName;
/// use shapes::testing::{base, column, table};
/// use shapes::where_clause::{Condition, TagPlan, WhereClause};
/// let issues = table("public", "issues", vec![
///     column("id", base("int8")).pk(0).not_null(),
///     column("parent_id", base("int8")),
/// ]);
/// let others = |_: &QualifiedName| Some(Arc::new(issues.clone()));
/// let w = WhereClause::parse_with_tables(
///     "parent_id IN (SELECT id FROM issues) OR parent_id IS NULL",
///     &BTreeMap::new(), &issues, &others,
/// ).unwrap();
/// let plan = TagPlan::of(&w).unwrap();
/// assert_eq!(plan.position_count(), 2);
/// assert_eq!(plan.disjuncts(), [0..1, 1..2]);
/// assert_eq!(plan.condition(0), Condition::Subquery { subquery: 0, negated: false });
/// let salt = "single_stack95364187-1724230000000";
/// assert_eq!(
///     plan.tags(&[Some("1".into()), Some("7".into())], salt),
///     ["2829038ff0f68a27e557b496cdb23bf3/", "/1"]
/// );
/// ```
#[derive(Debug, Clone)]
pub struct TagPlan {
    /// The clause's subqueries (what mixed leaves are evaluated against, and the comparison
    /// types of membership keys).
    subqueries: Vec<Arc<Subquery>>,
    literals: Vec<Literal>,
    /// The literal at each position.
    positions: Vec<usize>,
    /// The positions of each disjunct.
    disjuncts: Vec<Range<usize>>,
}

impl TagPlan {
    /// The plan of `clause`'s own (outer) `where`; the subqueries' inner clauses are not
    /// expanded. Refused, with a message naming the limit, when the expansion has more than
    /// [`MAX_DISJUNCTS`](super::MAX_DISJUNCTS) disjuncts.
    pub fn of(clause: &WhereClause) -> Result<TagPlan, WhereError> {
        let dnf = Dnf::of(clause.root())?;
        let literals = dnf
            .literals
            .iter()
            .map(|l| Literal::of(l.leaf, l.negated))
            .collect();
        let mut positions = Vec::new();
        let mut disjuncts = Vec::with_capacity(dnf.disjuncts.len());
        for disjunct in &dnf.disjuncts {
            let start = positions.len();
            positions.extend_from_slice(disjunct);
            disjuncts.push(start..positions.len());
        }
        Ok(TagPlan {
            subqueries: clause.subqueries().to_vec(),
            literals,
            positions,
            disjuncts,
        })
    }

    /// How many positions (slots of a tag, entries of the active conditions) there are.
    pub fn position_count(&self) -> usize {
        self.positions.len()
    }

    /// The positions of each disjunct, in order: consecutive ranges that cover
    /// `0..position_count()`.
    pub fn disjuncts(&self) -> &[Range<usize>] {
        &self.disjuncts
    }

    /// What position `position` tests. Panics when it is not below
    /// [`TagPlan::position_count`].
    pub fn condition(&self, position: usize) -> Condition {
        self.literals[self.positions[position]].condition
    }

    /// What every position tests, in position order.
    pub fn conditions(&self) -> impl ExactSizeIterator<Item = Condition> + '_ {
        self.positions.iter().map(|&l| self.literals[l].condition)
    }

    /// Whether every subquery position is positive (`IN`, `EXISTS`; none is `NOT IN` or
    /// `NOT EXISTS` after the `NOT`s above it): then a move pattern sets a position true
    /// exactly when the row's value entered the subquery.
    pub fn all_positive(&self) -> bool {
        self.conditions()
            .all(|c| !matches!(c, Condition::Subquery { negated: true, .. }))
    }

    /// Whether every position testing subquery `subquery` is positive (true when none does).
    pub fn subquery_all_positive(&self, subquery: usize) -> bool {
        self.conditions().all(
            |c| !matches!(c, Condition::Subquery { subquery: s, negated: true } if s == subquery),
        )
    }

    /// Whether some position is [mixed](Condition::Mixed): a subquery hidden inside it changes
    /// the row's membership without any move pattern saying so.
    pub fn has_mixed(&self) -> bool {
        self.literals
            .iter()
            .any(|l| matches!(l.condition, Condition::Mixed { .. }))
    }

    /// The row's tags (`headers.tags`): one per disjunct, whether the row satisfies it or not.
    /// `row` is in the table's column order, Postgres text output, `None` for NULL; `salt` is
    /// the shape's.
    pub fn tags(&self, row: &[Option<String>], salt: &str) -> Vec<String> {
        let slots: Vec<Option<ValueHash>> = self
            .literals
            .iter()
            .map(|l| self.hash_on(l, row, salt))
            .collect();
        let slot_len = |literal: usize| slots[literal].map_or(1, |_| ValueHash::HEX_LEN);
        let separators = self.positions.len().saturating_sub(1);
        self.disjuncts
            .iter()
            .map(|own| {
                let own_positions = &self.positions[own.clone()];
                let len = separators + own_positions.iter().map(|&l| slot_len(l)).sum::<usize>();
                let mut tag = String::with_capacity(len);
                for (p, &literal) in self.positions.iter().enumerate() {
                    if p > 0 {
                        tag.push('/');
                    }
                    if own.contains(&p) {
                        match slots[literal] {
                            Some(hash) => hash.push_hex(&mut tag),
                            None => tag.push('1'),
                        }
                    }
                }
                tag
            })
            .collect()
    }

    /// The truth of each position's literal on `row` (`active_conditions`), with the
    /// subqueries' current rows from `values`; NULL counts as false. A negated subquery
    /// position is true unless the row's value is in the subquery (Electric's
    /// `NOT COALESCE(x IN (…), false)`), which is more often true than SQL's `x NOT IN (…)`:
    /// that one is NULL when `x` is NULL or the subquery offers a NULL.
    pub fn active_conditions(
        &self,
        row: &[Option<String>],
        values: &dyn SubqueryValues,
    ) -> Vec<bool> {
        let truths: Vec<bool> = self
            .literals
            .iter()
            .map(|l| self.truth_on(l, row, values))
            .collect();
        self.positions.iter().map(|&l| truths[l]).collect()
    }

    /// Whether the row is in the shape by its active conditions: every position of some
    /// disjunct is true.
    pub fn included(&self, active_conditions: &[bool]) -> bool {
        self.disjuncts.iter().any(|d| {
            active_conditions
                .get(d.clone())
                .is_some_and(|a| a.iter().all(|&t| t))
        })
    }

    /// The move patterns for `key` (a value of subquery `subquery`, in its comparison types,
    /// as [`Subquery::key_of_inner`] gives it) entering or leaving it: `(position, hash)` for
    /// every position testing that subquery, in position order. A row whose tag holds that
    /// hash at that position is the one concerned.
    pub fn patterns(&self, subquery: usize, key: &ValueKey, salt: &str) -> Vec<(usize, String)> {
        let mut patterns: Vec<(usize, String)> = Vec::new();
        let mut last: Option<(usize, String)> = None;
        for (p, &literal) in self.positions.iter().enumerate() {
            let l = &self.literals[literal];
            let Test::Membership {
                subquery: s, names, ..
            } = &l.test
            else {
                continue;
            };
            if *s != subquery {
                continue;
            }
            // the same literal in several disjuncts hashes once
            let hash = match &last {
                Some((seen, hash)) if *seen == literal => hash.clone(),
                _ => {
                    let parts = key.parts().iter().map(|part| Some(&**part));
                    ValueHash::of(salt, names, parts).to_hex()
                }
            };
            last = Some((literal, hash.clone()));
            patterns.push((p, hash));
        }
        patterns
    }

    /// The tags an update removed: `old` less `new`, in `old`'s order (as a list difference:
    /// each tag of `new` cancels one equal tag of `old`).
    pub fn removed_tags(old: &[String], new: &[String]) -> Vec<String> {
        let mut cancelled = vec![false; old.len()];
        for tag in new {
            if let Some(i) = old
                .iter()
                .enumerate()
                .position(|(i, o)| !cancelled[i] && o == tag)
            {
                cancelled[i] = true;
            }
        }
        old.iter()
            .zip(cancelled)
            .filter(|(_, gone)| !gone)
            .map(|(tag, _)| tag.clone())
            .collect()
    }

    /// The hash of a subquery literal's compared value(s) on `row` (each NULL part hashed as
    /// NULL); `None` for other literals.
    fn hash_on(&self, l: &Literal, row: &[Option<String>], salt: &str) -> Option<ValueHash> {
        let Test::Membership {
            subquery,
            exprs,
            names,
        } = &l.test
        else {
            return None;
        };
        let types = &self.subqueries.get(*subquery)?.types;
        let none = Subqueries::none();
        let parts: Vec<Option<Box<str>>> = exprs
            .iter()
            .zip(types)
            .map(|(e, ty)| key_part_on(e, ty, row, &none))
            .collect();
        Some(ValueHash::of(
            salt,
            names,
            parts.iter().map(Option::as_deref),
        ))
    }

    fn truth_on(&self, l: &Literal, row: &[Option<String>], values: &dyn SubqueryValues) -> bool {
        let negated = l.condition.negated();
        match &l.test {
            Test::Membership {
                subquery, exprs, ..
            } => {
                let found = self.subqueries.get(*subquery).is_some_and(|sq| {
                    key_of(exprs, &sq.types, row, &Subqueries::none())
                        .is_some_and(|key| values.contains(*subquery, &key))
                });
                found != negated
            }
            Test::Leaf(leaf) => {
                let subqueries = Subqueries {
                    clauses: &self.subqueries,
                    values,
                };
                matches!(eval::eval(leaf, row, &subqueries), Datum::Bool(b) if b != negated)
            }
        }
    }
}

impl Literal {
    fn of(leaf: &Expr, negated: bool) -> Literal {
        match leaf {
            Expr::InSubquery {
                exprs,
                subquery,
                negated: not_in,
                ..
            } if !exprs.iter().any(has_subquery) => Literal {
                condition: Condition::Subquery {
                    subquery: *subquery,
                    negated: negated != *not_in,
                },
                test: Test::Membership {
                    subquery: *subquery,
                    exprs: exprs.clone(),
                    names: exprs.iter().enumerate().map(outer_name).collect(),
                },
            },
            _ if has_subquery(leaf) => Literal {
                condition: Condition::Mixed { negated },
                test: Test::Leaf(leaf.clone()),
            },
            _ => Literal {
                condition: Condition::Plain { negated },
                test: Test::Leaf(leaf.clone()),
            },
        }
    }
}

/// The name a compared value goes by in a row value's hash: its outer column's (through
/// casts), or its index among the compared values.
fn outer_name((i, e): (usize, &Expr)) -> Box<str> {
    let mut e = e;
    while let Expr::Cast { expr, .. } = e {
        e = expr;
    }
    match e {
        Expr::Column { name, .. } => name.clone(),
        _ => i.to_string().into_boxed_str(),
    }
}

/// Whether a subquery test is anywhere in `e`.
#[recursive::recursive]
fn has_subquery(e: &Expr) -> bool {
    let mut found = matches!(e, Expr::InSubquery { .. });
    if !found {
        e.for_each_child(&mut |c| found = found || has_subquery(c));
    }
    found
}
