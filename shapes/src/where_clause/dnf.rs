//! The disjunctive normal form of a `where`'s boolean structure, as Electric expands it for
//! subquery tags ([`super::tags`]).
//!
//! Only `AND`, `OR` and `NOT` are connectives; everything else (a comparison, `IS NULL`, an
//! `IN (SELECT …)`, a `coalesce(…)` of booleans) is a *leaf*, taken whole. `NOT` is pushed down
//! to the leaves by De Morgan's laws (a double negation cancels), which leaves a tree of
//! `AND`/`OR` over possibly negated leaves; that tree is then multiplied out:
//!
//! - `OR(a, b, …)`: the disjuncts of `a`, then those of `b`, … (concatenated in order);
//! - `AND(a, b, …)`: the cross product in argument order, `for x in a, for y in b: x ++ y`.
//!
//! So `(a OR b) AND s` is `[a, s], [b, s]`. A leaf reached twice (here `s`) is one literal
//! listed in two disjuncts. Both rewritings hold in SQL's three-valued logic, so the clause is
//! true exactly when the literals of some disjunct are all true.
//!
//! Multiplying out can explode (`(a OR b) AND (c OR d) AND …` doubles per factor), so the
//! number of disjuncts is counted first and more than [`MAX_DISJUNCTS`] is refused, as
//! Electric refuses it, before anything is expanded.

use super::ast::Expr;
use super::error::WhereError;

/// Most disjuncts a `where` may expand to (Electric's limit).
pub const MAX_DISJUNCTS: usize = 100;

/// One leaf of the tree, with the polarity the `NOT`s above it give it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Literal<'a> {
    pub leaf: &'a Expr,
    /// An odd number of `NOT`s above the leaf.
    pub negated: bool,
}

/// The expanded clause: its literals (each leaf of the tree once, in the order a left-to-right
/// walk meets them) and the disjuncts, each a list of indexes into `literals`.
#[derive(Debug)]
pub(crate) struct Dnf<'a> {
    pub literals: Vec<Literal<'a>>,
    pub disjuncts: Vec<Vec<usize>>,
}

/// The tree with `NOT` pushed down to the leaves (negation normal form).
enum Nnf {
    Leaf(usize),
    All(Vec<Nnf>),
    Any(Vec<Nnf>),
}

impl<'a> Dnf<'a> {
    /// Expands `root`, or refuses it when it has more than [`MAX_DISJUNCTS`] disjuncts.
    pub fn of(root: &'a Expr) -> Result<Dnf<'a>, WhereError> {
        let mut literals = Vec::new();
        let tree = Nnf::of(root, false, &mut literals);
        let count = tree.count();
        if count > MAX_DISJUNCTS {
            return Err(WhereError::invalid(format!(
                "where clause too complex for subquery tags: {} disjuncts, at most {MAX_DISJUNCTS}",
                if count == usize::MAX {
                    format!("more than {}", usize::MAX - 1)
                } else {
                    count.to_string()
                }
            )));
        }
        Ok(Dnf {
            literals,
            disjuncts: tree.expand(),
        })
    }
}

impl Nnf {
    /// The tree of `e` under `negated`; leaves are appended to `literals`.
    #[recursive::recursive]
    fn of<'a>(e: &'a Expr, negated: bool, literals: &mut Vec<Literal<'a>>) -> Nnf {
        let mut each = |items: &'a [Expr]| -> Vec<Nnf> {
            items
                .iter()
                .map(|i| Nnf::of(i, negated, literals))
                .collect()
        };
        match e {
            Expr::Not(inner) => Nnf::of(inner, !negated, literals),
            // De Morgan: NOT (a AND b) = NOT a OR NOT b, and the other way round
            Expr::And(items) if negated => Nnf::Any(each(items)),
            Expr::And(items) => Nnf::All(each(items)),
            Expr::Or(items) if negated => Nnf::All(each(items)),
            Expr::Or(items) => Nnf::Any(each(items)),
            leaf => {
                literals.push(Literal { leaf, negated });
                Nnf::Leaf(literals.len() - 1)
            }
        }
    }

    /// How many disjuncts [`Nnf::expand`] would give (`usize::MAX` when there are at least
    /// that many), without expanding.
    #[recursive::recursive]
    fn count(&self) -> usize {
        match self {
            Nnf::Leaf(_) => 1,
            Nnf::Any(items) => items.iter().fold(0, |n, i| n.saturating_add(i.count())),
            Nnf::All(items) => items.iter().fold(1, |n, i| n.saturating_mul(i.count())),
        }
    }

    /// The disjuncts, in Electric's order (see the module doc).
    #[recursive::recursive]
    fn expand(&self) -> Vec<Vec<usize>> {
        match self {
            Nnf::Leaf(literal) => vec![vec![*literal]],
            Nnf::Any(items) => items.iter().flat_map(Nnf::expand).collect(),
            Nnf::All(items) => items.iter().fold(vec![Vec::new()], |product, item| {
                let factor = item.expand();
                product
                    .iter()
                    .flat_map(|left| {
                        factor.iter().map(move |right| {
                            let mut both = Vec::with_capacity(left.len() + right.len());
                            both.extend_from_slice(left);
                            both.extend_from_slice(right);
                            both
                        })
                    })
                    .collect()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::every_type_table;
    use crate::where_clause::WhereClause;

    /// The disjuncts of `text` (on `things`), each literal written as its canonical SQL,
    /// with `NOT ` in front when negated.
    fn disjuncts(text: &str) -> Vec<Vec<String>> {
        let w = WhereClause::parse(text, &BTreeMap::new(), &every_type_table()).unwrap();
        let dnf = Dnf::of(w.root()).unwrap();
        let literal = |i: usize| {
            let l = dnf.literals[i];
            let sql = w.with_root(l.leaf.clone()).canonical();
            if l.negated { format!("NOT {sql}") } else { sql }
        };
        dnf.disjuncts
            .iter()
            .map(|d| d.iter().map(|&i| literal(i)).collect())
            .collect()
    }

    fn canonical(text: &str) -> String {
        WhereClause::parse(text, &BTreeMap::new(), &every_type_table())
            .unwrap()
            .canonical()
    }

    #[test]
    fn a_leaf_is_one_disjunct_of_one_literal() {
        assert_eq!(disjuncts("i4 = 1"), [[canonical("i4 = 1")]]);
    }

    #[test]
    fn and_over_or_is_multiplied_out_in_argument_order() {
        let [a, b, s] = ["i4 = 1", "t = 'x'", "b"].map(canonical);
        assert_eq!(
            disjuncts("(i4 = 1 OR t = 'x') AND b"),
            [[a.clone(), s.clone()], [b, s]]
        );
    }

    #[test]
    fn the_left_factor_varies_slowest() {
        let [a, b, c, d] = ["i4 = 1", "i4 = 2", "i8 = 3", "i8 = 4"].map(canonical);
        assert_eq!(
            disjuncts("(i4 = 1 OR i4 = 2) AND (i8 = 3 OR i8 = 4)"),
            [
                [a.clone(), c.clone()],
                [a, d.clone()],
                [b.clone(), c],
                [b, d]
            ]
        );
    }

    #[test]
    fn not_is_pushed_to_the_leaves_by_de_morgan() {
        let [a, b, c] = ["i4 = 1", "t = 'x'", "b"].map(canonical);
        assert_eq!(
            disjuncts("NOT (i4 = 1 AND (t = 'x' OR b))"),
            [
                vec![format!("NOT {a}")],
                vec![format!("NOT {b}"), format!("NOT {c}")]
            ]
        );
    }

    #[test]
    fn a_double_negation_cancels() {
        assert_eq!(disjuncts("NOT NOT (i4 = 1)"), [[canonical("i4 = 1")]]);
    }

    #[test]
    fn a_non_connective_boolean_is_a_leaf_taken_whole() {
        let text = "coalesce(i4 = 1 OR b, false)";
        assert_eq!(disjuncts(text), [[canonical(text)]]);
    }

    #[test]
    fn more_than_a_hundred_disjuncts_are_refused_before_expanding() {
        // 2^7 = 128 disjuncts
        let text = (0..7)
            .map(|i| format!("(i4 = {i} OR i8 = {i})"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let w = WhereClause::parse(&text, &BTreeMap::new(), &every_type_table()).unwrap();
        assert_eq!(
            Dnf::of(w.root()).unwrap_err().to_string(),
            "where clause too complex for subquery tags: 128 disjuncts, at most 100"
        );
        // 2^6 = 64 is fine
        let text = (0..6)
            .map(|i| format!("(i4 = {i} OR i8 = {i})"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let w = WhereClause::parse(&text, &BTreeMap::new(), &every_type_table()).unwrap();
        assert_eq!(Dnf::of(w.root()).unwrap().disjuncts.len(), 64);
    }

    #[test]
    fn exactly_a_hundred_disjuncts_are_allowed() {
        let or_of = |n: usize| {
            let text = (0..n)
                .map(|i| format!("i4 = {i}"))
                .collect::<Vec<_>>()
                .join(" OR ");
            WhereClause::parse(&text, &BTreeMap::new(), &every_type_table()).unwrap()
        };
        let hundred = or_of(MAX_DISJUNCTS);
        assert_eq!(Dnf::of(hundred.root()).unwrap().disjuncts.len(), 100);
        let more = or_of(MAX_DISJUNCTS + 1);
        assert_eq!(
            Dnf::of(more.root()).unwrap_err().to_string(),
            "where clause too complex for subquery tags: 101 disjuncts, at most 100"
        );
    }

    #[test]
    fn an_astronomical_count_saturates_instead_of_overflowing() {
        let text = (0..70)
            .map(|i| format!("(i4 = {i} OR i8 = {i})"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let w = WhereClause::parse(&text, &BTreeMap::new(), &every_type_table()).unwrap();
        let message = Dnf::of(w.root()).unwrap_err().to_string();
        assert!(message.contains("more than"), "{message}");
    }
}
