//! What the routing index reads from a checked `where`: a conjunct it can hash.

use super::ast::{CmpOp, Expr};
use super::types::SqlType;
use super::value::equality_key;

/// `column = constant` or `column IN (constants…)`: the rows it admits have one of `keys`
/// (normalised with [`equality_key`]) in `column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conjunct {
    pub column: usize,
    /// The column's own type (keys are computed in it).
    pub ty: SqlType,
    pub keys: Vec<String>,
    /// Whether the conjunct is the whole `where`: then a row matches exactly when its value
    /// has one of the keys, and the routing index need not evaluate anything.
    pub exact: bool,
}

/// The column read by `e` when `e` is a bare column, or one widened between integer types
/// (equality is the same on the integers whatever their width).
fn column_of(e: &Expr) -> Option<(usize, &SqlType)> {
    match e {
        Expr::Column { index, ty, .. } => Some((*index, ty)),
        Expr::Cast { expr, from, to } if from.is_integer() && to.is_integer() => column_of(expr),
        _ => None,
    }
}

fn const_key(e: &Expr, column_ty: &SqlType) -> Option<String> {
    match e {
        Expr::Const(c) => equality_key(column_ty, &c.value),
        _ => None,
    }
}

fn single(e: &Expr) -> Option<Conjunct> {
    match e {
        Expr::Compare {
            op: CmpOp::Eq,
            left,
            right,
            ty,
        } => {
            let (col, other) = match (column_of(left), column_of(right)) {
                (Some(c), None) => (c, right),
                (None, Some(c)) => (c, left),
                _ => return None,
            };
            let (column, col_ty) = col;
            if !(col_ty == ty || (col_ty.is_integer() && ty.is_integer())) {
                return None;
            }
            Some(Conjunct {
                column,
                ty: col_ty.clone(),
                keys: vec![const_key(other, col_ty)?],
                exact: true,
            })
        }
        Expr::InList {
            expr,
            list,
            ty,
            negated: false,
        } => {
            let (column, col_ty) = column_of(expr)?;
            if !(col_ty == ty || (col_ty.is_integer() && ty.is_integer())) {
                return None;
            }
            // a NULL in the list never matches: leave it out
            let mut keys: Vec<String> = list
                .iter()
                .filter(|i| !matches!(i, Expr::Const(c) if c.value.is_null()))
                .map(|i| const_key(i, col_ty))
                .collect::<Option<_>>()?;
            keys.sort();
            keys.dedup();
            Some(Conjunct {
                column,
                ty: col_ty.clone(),
                keys,
                exact: true,
            })
        }
        _ => None,
    }
}

/// The first hashable conjunct of the `where` (the whole `where` or one of its top-level
/// `AND` operands), if any.
pub fn indexable_conjunct(root: &Expr) -> Option<Conjunct> {
    split_indexable(root).map(|(conjunct, _)| conjunct)
}

/// The first hashable conjunct of the `where` and the rest of it: the other top-level `AND`
/// operands (`None` when there are none: the conjunct is exact). A row matches the `where`
/// exactly when it has one of the conjunct's keys and matches the rest.
pub fn split_indexable(root: &Expr) -> Option<(Conjunct, Option<Expr>)> {
    match root {
        Expr::And(items) => {
            let (at, conjunct) = items
                .iter()
                .enumerate()
                .find_map(|(i, e)| single(e).map(|c| (i, c)))?;
            let mut rest: Vec<Expr> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != at)
                .map(|(_, e)| e.clone())
                .collect();
            let rest = match rest.len() {
                0 => None,
                1 => rest.pop(),
                _ => Some(Expr::And(rest)),
            };
            let exact = rest.is_none();
            Some((Conjunct { exact, ..conjunct }, rest))
        }
        e => single(e).map(|c| (c, None)),
    }
}
