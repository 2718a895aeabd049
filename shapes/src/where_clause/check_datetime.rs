//! Type checking of date and time arithmetic: `date ± integer`, `date - date`,
//! `timestamp[tz] ± interval` (evaluated by [`super::datetime_arith`]).

use sqlparser::ast::Expr as SqlExpr;

use super::ast::{DateTimeOp, Expr};
use super::check_ops::{fold, uses_columns};
use super::error::WhereError;
use super::typecheck::{Checked, Checker, implicit_cast};
use super::types::SqlType;

const SUPPORTED: &str = "date and time arithmetic supports date ± integer, date - date and \
                         timestamp ± interval (a constant interval)";

fn is_timestamp(t: &SqlType) -> bool {
    matches!(t, SqlType::Timestamp | SqlType::Timestamptz)
}

fn is_datetime(t: &SqlType) -> bool {
    is_timestamp(t) || matches!(t, SqlType::Date | SqlType::Interval | SqlType::Time)
}

impl Checker<'_> {
    /// `l + r` (`add`) or `l - r` when either side is a date, time or interval; `None` when
    /// neither is (ordinary arithmetic).
    pub(crate) fn datetime_arith(
        &mut self,
        add: bool,
        l: &SqlExpr,
        r: &SqlExpr,
    ) -> Result<Option<Expr>, WhereError> {
        let (a, b) = (self.check(l)?, self.check(r)?);
        let ty = |c: &Checked| match c {
            Checked::Typed(e) => Some(e.ty()),
            Checked::Unknown { .. } => None,
        };
        let (ta, tb) = (ty(&a), ty(&b));
        if !ta.iter().chain(tb.iter()).any(is_datetime) {
            return Ok(None);
        }
        use SqlType::*;
        let (op, left, right, result) = match (&ta, &tb) {
            (Some(Date), Some(t)) if t.is_integer() => {
                let op = if add {
                    DateTimeOp::AddDays
                } else {
                    DateTimeOp::SubDays
                };
                (op, typed(a), self.days(b)?, Date)
            }
            (Some(t), Some(Date)) if add && t.is_integer() => {
                (DateTimeOp::AddDays, typed(b), self.days(a)?, Date)
            }
            (Some(Date), Some(Date)) if !add => (DateTimeOp::DateDiff, typed(a), typed(b), Int4),
            (Some(Date), None) if !add => {
                (DateTimeOp::DateDiff, typed(a), self.coerce(b, &Date)?, Int4)
            }
            (Some(t), Some(Interval) | None) if is_timestamp(t) => {
                let op = if add {
                    DateTimeOp::AddInterval
                } else {
                    DateTimeOp::SubInterval
                };
                let t = t.clone();
                (op, typed(a), self.constant_interval(b)?, t)
            }
            (Some(Interval) | None, Some(t)) if add && is_timestamp(t) => {
                let t = t.clone();
                (
                    DateTimeOp::AddInterval,
                    typed(b),
                    self.constant_interval(a)?,
                    t,
                )
            }
            _ => {
                let show =
                    |t: &Option<SqlType>| t.as_ref().map_or("unknown".into(), |t| t.to_string());
                return Err(WhereError::invalid(format!(
                    "operator {} is not supported for {} and {}: {SUPPORTED}",
                    if add { "+" } else { "-" },
                    show(&ta),
                    show(&tb)
                )));
            }
        };
        let node = Expr::DateTime {
            op,
            left: Box::new(left),
            right: Box::new(right),
            ty: result,
        };
        // constants are computed now, so the SQL never holds a constant Postgres would
        // fold (and could fail on) while planning
        Ok(Some(if uses_columns(&node) {
            node
        } else {
            fold(node)
        }))
    }

    /// The number of days: an int2/int4 value (Postgres has no `date + int8`).
    fn days(&self, c: Checked) -> Result<Expr, WhereError> {
        let e = typed(c);
        if e.ty() == SqlType::Int8 || e.computed_in_numeric() {
            return Err(WhereError::invalid(format!(
                "the number of days added to a date must be an int4 value, not {}{}",
                e.ty(),
                if e.computed_in_numeric() {
                    " arithmetic"
                } else {
                    ""
                }
            )));
        }
        implicit_cast(e, &SqlType::Int4)
    }

    /// The interval of `timestamp ± interval`: a constant (the rebuilt SQL's range guard is
    /// computed from it).
    fn constant_interval(&self, c: Checked) -> Result<Expr, WhereError> {
        let e = match c {
            Checked::Typed(e) => e,
            unknown => self.coerce(unknown, &SqlType::Interval)?,
        };
        if e.ty() != SqlType::Interval || uses_columns(&e) {
            return Err(WhereError::invalid(format!(
                "a timestamp can only be moved by a constant interval, not by {}: {SUPPORTED}",
                if uses_columns(&e) {
                    "a column value".to_string()
                } else {
                    e.ty().to_string()
                }
            )));
        }
        Ok(fold(e))
    }
}

fn typed(c: Checked) -> Expr {
    match c {
        Checked::Typed(e) => e,
        // callers only pass typed operands here
        Checked::Unknown { .. } => Expr::Const(Box::new(super::ast::Constant {
            ty: SqlType::Text,
            value: super::value::Datum::Null,
            param: None,
        })),
    }
}
