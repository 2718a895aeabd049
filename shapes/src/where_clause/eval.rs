//! Evaluation on a row as it arrives (the Postgres text output of each column), with
//! Postgres' three-valued logic: NULL propagates through operators, `AND`/`OR` follow SQL's
//! truth tables, and a `where` that is NULL does not match.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use super::ast::{ArithOp, ArrayOp, CmpOp, DateTimeOp, Expr, Func};
use super::cast;
use super::datetime_arith::{self as dt, IntervalGuard};
use super::json;
use super::jsonb::Jsonb;
use super::like::{ilike, like};
use super::numeric::Numeric;
use super::subquery::{NoSubqueryRows, Subquery, SubqueryValues, membership};
use super::types::SqlType;
use super::value::{self, ArrayDatum, Datum, compare};

/// SQL's three-valued truth.
fn truth(d: &Datum<'_>) -> Option<bool> {
    match d {
        Datum::Bool(b) => Some(*b),
        _ => None,
    }
}

fn boolean(v: Option<bool>) -> Datum<'static> {
    v.map_or(Datum::Null, Datum::Bool)
}

/// `x op y` for one pair: `None` when either is NULL.
fn cmp_holds(op: CmpOp, ty: &SqlType, a: &Datum<'_>, b: &Datum<'_>) -> Option<bool> {
    compare(ty, a, b).map(|o| op.holds(o))
}

/// OR over SQL truths: true wins, then NULL.
fn any_of(values: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut saw_null = false;
    for v in values {
        match v {
            Some(true) => return Some(true),
            None => saw_null = true,
            Some(false) => {}
        }
    }
    if saw_null { None } else { Some(false) }
}

/// What evaluation needs to answer subquery tests: the subqueries of the clause being
/// evaluated, and their current rows.
pub(crate) struct Subqueries<'s> {
    pub clauses: &'s [Arc<Subquery>],
    pub values: &'s dyn SubqueryValues,
}

impl Subqueries<'static> {
    /// No subqueries (for expressions that have none, such as a subquery's selected columns).
    pub fn none() -> Self {
        Subqueries {
            clauses: &[],
            values: &NoSubqueryRows,
        }
    }
}

/// Evaluates `e` on `row`.
#[recursive::recursive]
pub fn eval<'a>(e: &'a Expr, row: &'a [Option<String>], sq: &Subqueries<'_>) -> Datum<'a> {
    match e {
        Expr::Column { index, ty, .. } => match row.get(*index) {
            Some(Some(text)) => value::parse_value(ty, text).unwrap_or(Datum::Null),
            _ => Datum::Null,
        },
        Expr::Const(c) => c.value.borrowed(),
        Expr::Not(x) => boolean(truth(&eval(x, row, sq)).map(|b| !b)),
        Expr::And(items) => {
            let mut saw_null = false;
            for item in items {
                match truth(&eval(item, row, sq)) {
                    Some(false) => return Datum::Bool(false),
                    None => saw_null = true,
                    Some(true) => {}
                }
            }
            boolean(if saw_null { None } else { Some(true) })
        }
        Expr::Or(items) => boolean(any_of(items.iter().map(|i| truth(&eval(i, row, sq))))),
        Expr::IsNull { expr, negated } => Datum::Bool(eval(expr, row, sq).is_null() != *negated),
        Expr::IsBool {
            expr,
            value,
            negated,
        } => Datum::Bool((truth(&eval(expr, row, sq)) == Some(*value)) != *negated),
        Expr::Compare {
            op,
            left,
            right,
            ty,
        } => boolean(cmp_holds(
            *op,
            ty,
            &eval(left, row, sq),
            &eval(right, row, sq),
        )),
        Expr::Distinct {
            left,
            right,
            ty,
            negated,
        } => {
            let (a, b) = (eval(left, row, sq), eval(right, row, sq));
            let same = match (a.is_null(), b.is_null()) {
                (true, true) => true,
                (false, false) => compare(ty, &a, &b) == Some(Ordering::Equal),
                _ => false,
            };
            Datum::Bool(same == *negated)
        }
        Expr::InList {
            expr,
            list,
            ty,
            negated,
        } => {
            let x = eval(expr, row, sq);
            let found = any_of(
                list.iter()
                    .map(|i| cmp_holds(CmpOp::Eq, ty, &x, &eval(i, row, sq))),
            );
            boolean(found.map(|f| f != *negated))
        }
        Expr::Quantified {
            op,
            left,
            right,
            ty,
            all,
        } => quantified(*op, ty, *all, eval(left, row, sq), eval(right, row, sq)),
        Expr::Like {
            expr,
            pattern,
            escape,
            case_insensitive,
            negated,
            ctype,
        } => match (eval(expr, row, sq), &pattern.value) {
            (Datum::Text(s), Datum::Text(p)) => Datum::Bool(
                if *case_insensitive {
                    ilike(&s, p, *escape, ctype)
                } else {
                    like(&s, p, *escape, false)
                } != *negated,
            ),
            _ => Datum::Null,
        },
        Expr::Arith {
            op,
            left,
            right,
            ty,
        } => arith(*op, ty, eval(left, row, sq), eval(right, row, sq)),
        Expr::Neg { expr, .. } => match eval(expr, row, sq) {
            Datum::Numeric(n) => Datum::Numeric(n.neg()),
            Datum::Float(f) => Datum::Float(-f),
            Datum::Int(i) => i
                .checked_neg()
                .map_or_else(|| Datum::Numeric(Numeric::from_i64(i).neg()), Datum::Int),
            _ => Datum::Null,
        },
        Expr::DateTime {
            op, left, right, ..
        } => datetime(*op, eval(left, row, sq), eval(right, row, sq)),
        Expr::Concat(a, b) => match (eval(a, row, sq), eval(b, row, sq)) {
            (Datum::Text(x), Datum::Text(y)) => Datum::Text(Cow::Owned(format!("{x}{y}"))),
            _ => Datum::Null,
        },
        Expr::Func { func, arg, ctype } => match (func, eval(arg, row, sq)) {
            (Func::Lower, Datum::Text(s)) => Datum::Text(Cow::Owned(ctype.lower(&s).into_owned())),
            (Func::Upper, Datum::Text(s)) => Datum::Text(Cow::Owned(ctype.upper(&s).into_owned())),
            (Func::Length, Datum::Text(s)) => Datum::Int(s.chars().count() as i64),
            _ => Datum::Null,
        },
        Expr::Coalesce { args, .. } => args
            .iter()
            .map(|a| eval(a, row, sq))
            .find(|d| !d.is_null())
            .unwrap_or(Datum::Null),
        Expr::Cast { expr, from, to } => {
            cast::cast(from, to, eval(expr, row, sq)).unwrap_or(Datum::Null)
        }
        Expr::ArrayOp {
            op,
            left,
            right,
            ty,
        } => array_op(*op, ty, eval(left, row, sq), eval(right, row, sq)),
        Expr::ArrayCtor { items, .. } => Datum::Array(Box::new(ArrayDatum {
            dims: vec![(1, items.len())],
            items: items.iter().map(|i| eval(i, row, sq)).collect(),
        })),
        Expr::JsonGet {
            expr,
            key,
            as_text,
            jsonb,
        } => json_get(eval(expr, row, sq), key, *as_text, *jsonb),
        Expr::InSubquery {
            exprs,
            subquery,
            negated,
            exists,
        } => boolean(membership(exprs, *subquery, *negated, *exists, row, sq)),
    }
}

fn quantified<'a>(op: CmpOp, ty: &SqlType, all: bool, x: Datum<'a>, arr: Datum<'a>) -> Datum<'a> {
    let Datum::Array(arr) = arr else {
        return Datum::Null;
    };
    let results = arr.items.iter().map(|item| cmp_holds(op, ty, &x, item));
    if all {
        // ALL: NOT ANY(NOT …)
        boolean(any_of(results.map(|r| r.map(|b| !b))).map(|b| !b))
    } else {
        boolean(any_of(results))
    }
}

fn as_numeric(d: Datum<'_>) -> Option<Numeric> {
    match d {
        Datum::Int(i) => Some(Numeric::from_i64(i)),
        Datum::Numeric(n) => Some(n),
        _ => None,
    }
}

/// Exact arithmetic; an integer-typed result that fits an i64 is kept as an integer.
fn arith<'a>(op: ArithOp, ty: &SqlType, a: Datum<'a>, b: Datum<'a>) -> Datum<'a> {
    let (Some(x), Some(y)) = (as_numeric(a), as_numeric(b)) else {
        return Datum::Null;
    };
    let r = match op {
        ArithOp::Add => Some(x.add(&y)),
        ArithOp::Sub => Some(x.sub(&y)),
        ArithOp::Mul => Some(x.mul(&y)),
        ArithOp::Div => x.div(&y),
        ArithOp::IntDiv => x.div_trunc(&y),
        ArithOp::Mod => x.rem(&y),
    };
    match r {
        None => Datum::Null,
        Some(n) if ty.is_integer() => n.to_i64_exact().map_or(Datum::Numeric(n), Datum::Int),
        Some(n) => Datum::Numeric(n),
    }
}

/// Whether every non-null element of `needles` equals some element of `hay` (a NULL needle
/// never does), as Postgres' `@>`.
fn contains(elem: &SqlType, hay: &ArrayDatum<'_>, needles: &ArrayDatum<'_>) -> bool {
    needles.items.iter().all(|n| {
        !n.is_null()
            && hay
                .items
                .iter()
                .any(|h| compare(elem, h, n) == Some(Ordering::Equal))
    })
}

/// jsonb `@>`, `<@`, `?`, `?|`, `?&` ([`jsonb`]); NULL elements of a key array are skipped,
/// as in Postgres.
fn jsonb_op(op: ArrayOp, a: Datum<'_>, b: Datum<'_>) -> Datum<'static> {
    let Datum::Json(doc) = a else {
        return Datum::Null;
    };
    let Some(doc) = Jsonb::parse(&doc) else {
        return Datum::Null;
    };
    let keys = |b: &Datum<'_>| -> Vec<String> {
        match b {
            Datum::Array(arr) => arr
                .items
                .iter()
                .filter_map(|k| match k {
                    Datum::Text(t) => Some(t.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let other = |b: &Datum<'_>| match b {
        Datum::Json(t) => Jsonb::parse(t),
        _ => None,
    };
    match (op, &b) {
        (_, Datum::Null) => Datum::Null,
        (ArrayOp::Contains, b) => other(b).map_or(Datum::Null, |o| Datum::Bool(doc.contains(&o))),
        (ArrayOp::ContainedBy, b) => {
            other(b).map_or(Datum::Null, |o| Datum::Bool(o.contains(&doc)))
        }
        (ArrayOp::HasKey, Datum::Text(k)) => Datum::Bool(doc.has_key(k)),
        (ArrayOp::HasAnyKey, b) => Datum::Bool(keys(b).iter().any(|k| doc.has_key(k))),
        (ArrayOp::HasAllKeys, b) => Datum::Bool(keys(b).iter().all(|k| doc.has_key(k))),
        _ => Datum::Null,
    }
}

fn array_op<'a>(op: ArrayOp, ty: &SqlType, a: Datum<'a>, b: Datum<'a>) -> Datum<'a> {
    if *ty == SqlType::Jsonb {
        return jsonb_op(op, a, b);
    }
    let (Datum::Array(a), Datum::Array(b)) = (a, b) else {
        return Datum::Null;
    };
    let elem = match ty {
        SqlType::Array(e) => e.as_ref(),
        other => other,
    };
    Datum::Bool(match op {
        ArrayOp::Contains => contains(elem, &a, &b),
        ArrayOp::ContainedBy => contains(elem, &b, &a),
        ArrayOp::Overlaps => a.items.iter().any(|x| {
            b.items
                .iter()
                .any(|y| compare(elem, x, y) == Some(Ordering::Equal))
        }),
        ArrayOp::HasKey | ArrayOp::HasAnyKey | ArrayOp::HasAllKeys => return Datum::Null,
    })
}

/// `json` documents with a `\u0000` escape make Postgres' `->`/`->>` raise an error; the
/// rebuilt SQL turns that case into NULL, and so do we.
pub(crate) const JSON_NUL_ESCAPE: &str = "\\u0000";

fn json_get<'a>(doc: Datum<'a>, key: &json::JsonKey, as_text: bool, jsonb: bool) -> Datum<'a> {
    let Datum::Json(doc) = doc else {
        return Datum::Null;
    };
    if !jsonb && doc.contains(JSON_NUL_ESCAPE) {
        return Datum::Null;
    }
    let get = if jsonb { json::get_jsonb } else { json::get };
    let member = match &doc {
        Cow::Borrowed(s) => get(s, key).map(Cow::Borrowed),
        Cow::Owned(s) => get(s, key).map(|m| Cow::Owned(m.to_owned())),
    };
    match member {
        None => Datum::Null,
        Some(m) if as_text => json::as_text(&m).map_or(Datum::Null, |t| Datum::Text(Cow::Owned(t))),
        Some(m) => Datum::Json(m),
    }
}

/// Date and time arithmetic; NULL where Postgres raises an error ([`dt`]).
fn datetime(op: DateTimeOp, a: Datum<'_>, b: Datum<'_>) -> Datum<'static> {
    // the guard of the move actually made (the negated interval for `-`)
    let moved = |ts: i64, iv: &super::datetime::Interval| {
        dt::timestamp_plus_interval(ts, iv, &IntervalGuard::for_interval(iv))
            .map_or(Datum::Null, Datum::Timestamp)
    };
    match (op, a, b) {
        (DateTimeOp::AddDays, Datum::Date(d), Datum::Int(n)) => {
            dt::date_plus_days(d, n).map_or(Datum::Null, Datum::Date)
        }
        (DateTimeOp::SubDays, Datum::Date(d), Datum::Int(n)) => n
            .checked_neg()
            .and_then(|n| dt::date_plus_days(d, n))
            .map_or(Datum::Null, Datum::Date),
        (DateTimeOp::DateDiff, Datum::Date(x), Datum::Date(y)) => {
            dt::date_diff(x, y).map_or(Datum::Null, Datum::Int)
        }
        (DateTimeOp::AddInterval, Datum::Timestamp(t), Datum::Interval(iv)) => moved(t, &iv),
        (DateTimeOp::SubInterval, Datum::Timestamp(t), Datum::Interval(iv)) => {
            moved(t, &dt::negated(&iv))
        }
        _ => Datum::Null,
    }
}
