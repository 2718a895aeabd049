//! The checked, typed `where` tree that evaluation, SQL rebuilding and routing work on.
//!
//! Every implicit conversion Postgres would make is an explicit [`Expr::Cast`] here, and
//! every constant carries its type and its canonical input text, so the evaluator and the
//! rebuilt SQL read the same tree the same way.

use std::sync::Arc;

use super::ctype::Ctype;
use super::json::JsonKey;
use super::types::SqlType;
use super::value::Datum;

/// `= <> < <= > >=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::NotEq => "<>",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        }
    }

    pub fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => o == Equal,
            CmpOp::NotEq => o != Equal,
            CmpOp::Lt => o == Less,
            CmpOp::LtEq => o != Greater,
            CmpOp::Gt => o == Greater,
            CmpOp::GtEq => o != Less,
        }
    }
}

/// `+ - * / %`. Integer arithmetic keeps Postgres' integer types (so `/` truncates) but is
/// computed exactly, in numeric: it never overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    /// `/` on numeric.
    Div,
    /// `/` on two integers: truncated, like Postgres' integer division.
    IntDiv,
    Mod,
}

/// `@>`, `<@`, `&&` on arrays; `@>`, `<@`, `?`, `?|`, `?&` on jsonb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArrayOp {
    Contains,
    ContainedBy,
    Overlaps,
    /// jsonb `?` text.
    HasKey,
    /// jsonb `?|` text[].
    HasAnyKey,
    /// jsonb `?&` text[].
    HasAllKeys,
}

/// Date and time arithmetic ([`super::datetime_arith`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateTimeOp {
    /// `date + int4` → date.
    AddDays,
    /// `date - int4` → date.
    SubDays,
    /// `date - date` → int4.
    DateDiff,
    /// `timestamp[tz] + interval` → the timestamp's type.
    AddInterval,
    /// `timestamp[tz] - interval`.
    SubInterval,
}

/// `lower`, `upper`, `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    Lower,
    Upper,
    Length,
}

/// A constant: a literal or a bound parameter, already read as its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    pub ty: SqlType,
    pub value: Datum<'static>,
    /// The user's `$n` it came from, for error messages.
    pub param: Option<usize>,
}

/// A typed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column {
        index: usize,
        name: Box<str>,
        ty: SqlType,
    },
    Const(Box<Constant>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// `IS [NOT] TRUE/FALSE`.
    IsBool {
        expr: Box<Expr>,
        value: bool,
        negated: bool,
    },
    /// Both sides have type `ty`.
    Compare {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: SqlType,
    },
    /// `IS [NOT] DISTINCT FROM`.
    Distinct {
        left: Box<Expr>,
        right: Box<Expr>,
        ty: SqlType,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        ty: SqlType,
        negated: bool,
    },
    /// `left op ANY/ALL (right)`; `ty` is the element type.
    Quantified {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: SqlType,
        all: bool,
    },
    /// `LIKE`/`ILIKE` with a constant pattern; `escape` `None` = no escape character.
    /// `ctype` is the database's case mapping (used by `ILIKE`).
    Like {
        expr: Box<Expr>,
        pattern: Box<Constant>,
        escape: Option<char>,
        case_insensitive: bool,
        negated: bool,
        ctype: Arc<Ctype>,
    },
    /// Operands are integers or numeric; `ty` is Postgres' result type (the wider integer,
    /// or numeric).
    Arith {
        op: ArithOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: SqlType,
    },
    Neg {
        expr: Box<Expr>,
        ty: SqlType,
    },
    Concat(Box<Expr>, Box<Expr>),
    /// `left` is the date or timestamp; `right` the integer, date, or constant interval.
    /// `ty` is the result's type.
    DateTime {
        op: DateTimeOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: SqlType,
    },
    /// `ctype` is the database's case mapping (used by `lower`/`upper`).
    Func {
        func: Func,
        arg: Box<Expr>,
        ctype: Arc<Ctype>,
    },
    Coalesce {
        args: Vec<Expr>,
        ty: SqlType,
    },
    Cast {
        expr: Box<Expr>,
        from: SqlType,
        to: SqlType,
    },
    ArrayOp {
        op: ArrayOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: SqlType,
    },
    /// `ARRAY[a, b, …]`; `ty` is the element type.
    ArrayCtor {
        items: Vec<Expr>,
        ty: SqlType,
    },
    JsonGet {
        expr: Box<Expr>,
        key: JsonKey,
        as_text: bool,
        jsonb: bool,
    },
    /// `exprs IN (SELECT …)` against subquery number `subquery` of the clause holding this
    /// node ([`super::WhereClause::subqueries`]); `exprs` are already converted to the
    /// subquery's comparison types. `exists` marks a correlated `EXISTS` mapped onto the same
    /// membership test: it is never NULL (a NULL outer value is simply not found).
    InSubquery {
        exprs: Vec<Expr>,
        subquery: usize,
        negated: bool,
        exists: bool,
    },
}

impl Expr {
    /// Whether the rebuilt SQL computes this integer-typed value in numeric (arithmetic and
    /// negation do, so they cannot overflow).
    pub fn computed_in_numeric(&self) -> bool {
        match self {
            Expr::Arith { .. } => true,
            Expr::Neg { ty, .. } => ty.is_integer(),
            Expr::Cast { expr, from, to } => {
                from.is_integer() && to.is_integer() && expr.computed_in_numeric()
            }
            Expr::Coalesce { args, .. } => args.iter().any(Expr::computed_in_numeric),
            _ => false,
        }
    }

    /// The type of the expression's value.
    pub fn ty(&self) -> SqlType {
        match self {
            Expr::Column { ty, .. }
            | Expr::Neg { ty, .. }
            | Expr::Coalesce { ty, .. }
            | Expr::Arith { ty, .. }
            | Expr::DateTime { ty, .. } => ty.clone(),
            Expr::Const(c) => c.ty.clone(),
            Expr::Cast { to, .. } => to.clone(),
            Expr::Concat(..) => SqlType::Text,
            Expr::Func {
                func: Func::Length, ..
            } => SqlType::Int4,
            Expr::Func { .. } => SqlType::Text,
            Expr::ArrayCtor { ty, .. } => SqlType::Array(Box::new(ty.clone())),
            Expr::JsonGet { as_text: true, .. } => SqlType::Text,
            Expr::JsonGet { jsonb, .. } => {
                if *jsonb {
                    SqlType::Jsonb
                } else {
                    SqlType::Json
                }
            }
            _ => SqlType::Bool,
        }
    }

    /// Calls `f` on every direct child.
    pub fn for_each_child(&self, f: &mut dyn FnMut(&Expr)) {
        match self {
            Expr::Column { .. } | Expr::Const(_) => {}
            Expr::Not(e)
            | Expr::IsNull { expr: e, .. }
            | Expr::IsBool { expr: e, .. }
            | Expr::Like { expr: e, .. }
            | Expr::Neg { expr: e, .. }
            | Expr::Func { arg: e, .. }
            | Expr::Cast { expr: e, .. }
            | Expr::JsonGet { expr: e, .. } => f(e),
            Expr::And(v)
            | Expr::Or(v)
            | Expr::Coalesce { args: v, .. }
            | Expr::ArrayCtor { items: v, .. }
            | Expr::InSubquery { exprs: v, .. } => v.iter().for_each(f),
            Expr::Compare { left, right, .. }
            | Expr::Distinct { left, right, .. }
            | Expr::Quantified { left, right, .. }
            | Expr::Arith { left, right, .. }
            | Expr::ArrayOp { left, right, .. }
            | Expr::DateTime { left, right, .. }
            | Expr::Concat(left, right) => {
                f(left);
                f(right);
            }
            Expr::InList { expr, list, .. } => {
                f(expr);
                list.iter().for_each(f);
            }
        }
    }

    /// Calls `f` on every direct child, mutably.
    pub fn for_each_child_mut(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        match self {
            Expr::Column { .. } | Expr::Const(_) => {}
            Expr::Not(e)
            | Expr::IsNull { expr: e, .. }
            | Expr::IsBool { expr: e, .. }
            | Expr::Like { expr: e, .. }
            | Expr::Neg { expr: e, .. }
            | Expr::Func { arg: e, .. }
            | Expr::Cast { expr: e, .. }
            | Expr::JsonGet { expr: e, .. } => f(e),
            Expr::And(v)
            | Expr::Or(v)
            | Expr::Coalesce { args: v, .. }
            | Expr::ArrayCtor { items: v, .. }
            | Expr::InSubquery { exprs: v, .. } => v.iter_mut().for_each(f),
            Expr::Compare { left, right, .. }
            | Expr::Distinct { left, right, .. }
            | Expr::Quantified { left, right, .. }
            | Expr::Arith { left, right, .. }
            | Expr::ArrayOp { left, right, .. }
            | Expr::DateTime { left, right, .. }
            | Expr::Concat(left, right) => {
                f(left);
                f(right);
            }
            Expr::InList { expr, list, .. } => {
                f(expr);
                list.iter_mut().for_each(f);
            }
        }
    }

    /// Adds `by` to every subquery number in the tree (when clauses are joined).
    pub(crate) fn shift_subqueries(&mut self, by: usize) {
        if let Expr::InSubquery { subquery, .. } = self {
            *subquery += by;
        }
        self.for_each_child_mut(&mut |c| c.shift_subqueries(by));
    }
}
