//! Type checking of operators, functions and casts (the rest of [`super::typecheck`]).

use sqlparser::ast::{
    BinaryOperator, DataType, Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments,
};

use super::ast::{ArithOp, ArrayOp, CmpOp, Expr, Func};
use super::cast;
use super::error::WhereError;
use super::json::JsonKey;
use super::typecheck::{Checked, Checker, fold_ident, implicit_cast, make_cast};
use super::types::SqlType;
use super::value::Datum;

fn invalid<T>(message: impl Into<String>) -> Result<T, WhereError> {
    Err(WhereError::invalid(message))
}

/// The type two operands are compared in, as Postgres' operator resolution picks it.
pub(crate) fn common_type(a: &SqlType, b: &SqlType) -> Option<SqlType> {
    use SqlType::*;
    if a == b {
        return Some(a.clone());
    }
    Some(match (a, b) {
        // bpchar = varchar resolves to bpchar's operator; with text, to text's
        (Bpchar, Varchar) | (Varchar, Bpchar) => Bpchar,
        // Postgres reads the timestamp in the session time zone, UTC on the proxy's
        // connections (the snapshot's included)
        (Timestamp, Timestamptz) | (Timestamptz, Timestamp) => Timestamptz,
        (x, y) if x.is_string() && y.is_string() => Text,
        (x, y) if x.is_number() && y.is_number() => {
            if x.is_float() || y.is_float() {
                Float8
            } else if *x == Numeric || *y == Numeric {
                Numeric
            } else if *x == Int8 || *y == Int8 {
                Int8
            } else {
                Int4
            }
        }
        (Array(x), Array(y))
            if (x.is_integer() && y.is_integer()) || (x.is_string() && y.is_string()) =>
        {
            Array(Box::new(common_type(x, y)?))
        }
        _ => return None,
    })
}

fn wider_integer(a: &SqlType, b: &SqlType) -> SqlType {
    if *a == SqlType::Int8 || *b == SqlType::Int8 {
        SqlType::Int8
    } else if *a == SqlType::Int4 || *b == SqlType::Int4 {
        SqlType::Int4
    } else {
        SqlType::Int2
    }
}

/// The type of a list of values (`IN (…)` items, `COALESCE`, `ARRAY[]`), as Postgres'
/// `select_common_type` picks it: numbers go to the highest of int2 < int4 < int8 < numeric <
/// float4 < float8; among strings text wins, else the first one's type.
pub(crate) fn list_type(a: &SqlType, b: &SqlType) -> Option<SqlType> {
    use SqlType::*;
    let rank = |t: &SqlType| {
        [Int2, Int4, Int8, Numeric, Float4, Float8]
            .iter()
            .position(|x| x == t)
    };
    if a == b {
        return Some(a.clone());
    }
    Some(match (a, b) {
        (x, y) if x.is_number() && y.is_number() => {
            if rank(x) >= rank(y) {
                x.clone()
            } else {
                y.clone()
            }
        }
        (x, y) if x.is_string() && y.is_string() => {
            if *x == Text || *y == Text {
                Text
            } else {
                x.clone()
            }
        }
        (Array(x), Array(y)) => Array(Box::new(list_type(x, y)?)),
        _ => return None,
    })
}

const VOLATILE_HINT: &str =
    "a shape's where clause must give the same answer whenever it is evaluated";

impl Checker<'_> {
    /// The common type of several operands (unknown literals take the others' type).
    ///
    /// An integer constant that fits the other operands' integer type takes that type
    /// (`int2_col = 5` compares as int2): equality and order of integers do not depend on
    /// their width, and it keeps `int2_col = 5` and `int2_col = '5'` one shape.
    pub(crate) fn unify(&self, items: &[&Checked]) -> Result<SqlType, WhereError> {
        self.unify_with(items, common_type)
    }

    fn unify_with(
        &self,
        items: &[&Checked],
        pair: fn(&SqlType, &SqlType) -> Option<SqlType>,
    ) -> Result<SqlType, WhereError> {
        let merge = |ty: Option<SqlType>, t: SqlType| -> Result<Option<SqlType>, WhereError> {
            Ok(Some(match ty {
                None => t,
                Some(prev) => pair(&prev, &t).ok_or_else(|| {
                    WhereError::invalid(format!("cannot compare {prev} with {t}"))
                })?,
            }))
        };
        let int_const = |e: &Expr| match e {
            Expr::Const(c) if c.ty.is_integer() => match c.value {
                Datum::Int(v) => Some(v),
                _ => Some(0),
            },
            _ => None,
        };
        let mut ty: Option<SqlType> = None;
        let mut consts = Vec::new();
        for item in items {
            if let Checked::Typed(e) = item {
                match int_const(e) {
                    Some(v) => consts.push((v, e.ty())),
                    None => ty = merge(ty, e.ty())?,
                }
            }
        }
        for (v, t) in consts {
            let fits = match &ty {
                Some(SqlType::Int2) => i16::try_from(v).is_ok(),
                Some(SqlType::Int4) => i32::try_from(v).is_ok(),
                Some(SqlType::Int8) => true,
                _ => false,
            };
            if !fits {
                ty = merge(ty, t)?;
            }
        }
        Ok(ty.unwrap_or(SqlType::Text))
    }

    fn comparable(&self, items: &[&Checked]) -> Result<SqlType, WhereError> {
        let ty = self.unify(items)?;
        if !ty.is_comparable() {
            return invalid(format!(
                "values of type {ty} cannot be compared; use ->> to compare a member as text"
            ));
        }
        Ok(ty)
    }

    pub(crate) fn compare(&self, op: CmpOp, a: Checked, b: Checked) -> Result<Expr, WhereError> {
        // jsonb has `=` and `<>` (no order we evaluate)
        let ty = match self.unify(&[&a, &b]) {
            Ok(SqlType::Jsonb) if matches!(op, CmpOp::Eq | CmpOp::NotEq) => SqlType::Jsonb,
            _ => self.comparable(&[&a, &b])?,
        };
        let left = self.coerce(a, &ty)?;
        let right = self.coerce(b, &ty)?;
        Ok(Expr::Compare {
            op,
            left: Box::new(left),
            right: Box::new(right),
            ty,
        })
    }

    pub(crate) fn distinct(
        &mut self,
        a: &SqlExpr,
        b: &SqlExpr,
        negated: bool,
    ) -> Result<Expr, WhereError> {
        let (a, b) = (self.check(a)?, self.check(b)?);
        let ty = self.comparable(&[&a, &b])?;
        let left = self.coerce(a, &ty)?;
        let right = self.coerce(b, &ty)?;
        Ok(Expr::Distinct {
            left: Box::new(left),
            right: Box::new(right),
            ty,
            negated,
        })
    }

    /// `x IN (…)` typed exactly as Postgres' `transformAExprIn` does: when more than one item
    /// has no column in it, those items take the common type of the list (the left side
    /// included) and are compared with the left side by one operator; every other item is
    /// compared on its own, `x = item`, by operator resolution. When the comparisons end up in
    /// different types, the list becomes the equivalent `x = a OR x = b …`.
    pub(crate) fn in_list(
        &mut self,
        e: &SqlExpr,
        list: &[SqlExpr],
        negated: bool,
    ) -> Result<Expr, WhereError> {
        let items = list
            .iter()
            .map(|x| self.check(x))
            .collect::<Result<Vec<_>, _>>()?;
        let constant = |c: &Checked| match c {
            Checked::Typed(e) => !uses_columns(e),
            Checked::Unknown { .. } => true,
        };
        let constants = items.iter().filter(|c| constant(c)).count();
        let mut array_type: Option<(SqlType, SqlType)> = None;
        if constants > 1 {
            let head = self.check(e)?;
            let mut all: Vec<&Checked> = vec![&head];
            all.extend(items.iter().filter(|c| constant(c)));
            if let Ok(elem) = self.unify_with(&all, list_type) {
                let head_ty = match &head {
                    Checked::Typed(h) => h.ty(),
                    Checked::Unknown { .. } => elem.clone(),
                };
                if let Some(cmp) = common_type(&head_ty, &elem) {
                    array_type = Some((elem, cmp));
                }
            }
        }
        let mut comparisons: Vec<(Expr, Expr, SqlType)> = Vec::with_capacity(items.len());
        for item in items {
            let head = self.check(e)?;
            let (lhs, rhs, ty) = match (&array_type, constant(&item)) {
                (Some((elem, cmp)), true) => {
                    let rhs = implicit_cast(self.coerce(item, elem)?, cmp)?;
                    (self.coerce(head, cmp)?, rhs, cmp.clone())
                }
                _ => {
                    let ty = self.comparable(&[&head, &item])?;
                    (self.coerce(head, &ty)?, self.coerce(item, &ty)?, ty)
                }
            };
            if !ty.is_comparable() {
                return invalid(format!("values of type {ty} cannot be compared"));
            }
            comparisons.push((lhs, rhs, ty));
        }
        let same_type = comparisons
            .windows(2)
            .all(|w| w[0].2 == w[1].2 && w[0].0 == w[1].0);
        if same_type {
            let (expr, ty) = match comparisons.first() {
                Some((lhs, _, ty)) => (lhs.clone(), ty.clone()),
                None => return invalid("IN () needs at least one value"),
            };
            let list = comparisons.into_iter().map(|(_, rhs, _)| rhs).collect();
            return Ok(Expr::InList {
                expr: Box::new(expr),
                list,
                ty,
                negated,
            });
        }
        let any = Expr::Or(
            comparisons
                .into_iter()
                .map(|(l, r, ty)| Expr::Compare {
                    op: CmpOp::Eq,
                    left: Box::new(l),
                    right: Box::new(r),
                    ty,
                })
                .collect(),
        );
        Ok(if negated {
            Expr::Not(Box::new(any))
        } else {
            any
        })
    }

    /// `x BETWEEN a AND b` is `x >= a AND x <= b` (each comparison typed on its own), as in
    /// Postgres' parser.
    pub(crate) fn between(
        &mut self,
        x: &SqlExpr,
        lo: &SqlExpr,
        hi: &SqlExpr,
        negated: bool,
    ) -> Result<Expr, WhereError> {
        let (op_lo, op_hi) = if negated {
            (CmpOp::Lt, CmpOp::Gt)
        } else {
            (CmpOp::GtEq, CmpOp::LtEq)
        };
        let (x1, l) = (self.check(x)?, self.check(lo)?);
        let first = self.compare(op_lo, x1, l)?;
        let (x2, h) = (self.check(x)?, self.check(hi)?);
        let second = self.compare(op_hi, x2, h)?;
        Ok(if negated {
            Expr::Or(vec![first, second])
        } else {
            Expr::And(vec![first, second])
        })
    }

    pub(crate) fn like(
        &mut self,
        e: &SqlExpr,
        pattern: &SqlExpr,
        escape: Option<&SqlExpr>,
        case_insensitive: bool,
        negated: bool,
    ) -> Result<Expr, WhereError> {
        let subject = match self.check(e)? {
            Checked::Typed(t) if !t.ty().is_string() => {
                return invalid(format!(
                    "LIKE needs a text operand, not {} (cast with ::text)",
                    t.ty()
                ));
            }
            Checked::Typed(t) => t,
            c => self.coerce(c, &SqlType::Text)?,
        };
        let pattern = match self.check(pattern)? {
            c @ Checked::Unknown { .. } => self.coerce(c, &SqlType::Text)?,
            Checked::Typed(Expr::Const(c)) if c.ty.is_string() => Expr::Const(c),
            Checked::Typed(e) if e.ty().is_string() && !uses_columns(&e) => fold(e),
            Checked::Typed(_) => {
                return invalid(
                    "the LIKE pattern must be a constant (a literal or a $n parameter)",
                );
            }
        };
        let Expr::Const(pattern) = pattern else {
            return invalid("the LIKE pattern must be a constant");
        };
        let escape = match escape {
            None => Some('\\'),
            Some(x) => match self.check(x)? {
                Checked::Unknown { text: Some(t), .. } => {
                    let mut chars = t.chars();
                    match (chars.next(), chars.next()) {
                        (None, _) => None,
                        (Some(c), None) => Some(c),
                        _ => return invalid("ESCAPE must be one character (or empty for none)"),
                    }
                }
                _ => return invalid("ESCAPE must be a string literal of one character"),
            },
        };
        if let (Datum::Text(p), Some(esc)) = (&pattern.value, escape)
            && ends_with_lone_escape(p, esc)
        {
            return match pattern.param {
                Some(index) => Err(WhereError::Param {
                    index,
                    message: "LIKE pattern must not end with escape character".into(),
                }),
                None => invalid("LIKE pattern must not end with escape character"),
            };
        }
        if case_insensitive {
            self.case_mapping_available("ILIKE")?;
        }
        Ok(Expr::Like {
            expr: Box::new(subject),
            pattern: Box::new(*pattern),
            escape,
            case_insensitive,
            negated,
            ctype: self.ctype.clone(),
        })
    }

    pub(crate) fn quantified(
        &mut self,
        l: &SqlExpr,
        op: &BinaryOperator,
        r: &SqlExpr,
        all: bool,
    ) -> Result<Expr, WhereError> {
        let Some(op) = super::typecheck::cmp_op_pub(op) else {
            return invalid(format!("operator {op} is not supported with ANY/ALL"));
        };
        let left = self.check(l)?;
        let right = self.check(r)?;
        let (left, right, ty) = match (left, right) {
            (left, Checked::Typed(arr)) => {
                let SqlType::Array(elem) = arr.ty() else {
                    return invalid(format!("ANY/ALL need an array, not {}", arr.ty()));
                };
                let ty = match &left {
                    Checked::Typed(l) => common_type(&l.ty(), &elem).ok_or_else(|| {
                        WhereError::invalid(format!(
                            "cannot compare {} with elements of {}",
                            l.ty(),
                            arr.ty()
                        ))
                    })?,
                    Checked::Unknown { .. } => *elem.clone(),
                };
                if !ty.is_comparable() {
                    return invalid(format!("values of type {ty} cannot be compared"));
                }
                let left = self.coerce(left, &ty)?;
                let right = implicit_cast(arr, &SqlType::Array(Box::new(ty.clone())))?;
                (left, right, ty)
            }
            (left, right) => {
                let ty = self.comparable(&[&left])?;
                let left = self.coerce(left, &ty)?;
                let right = self.coerce(right, &SqlType::Array(Box::new(ty.clone())))?;
                (left, right, ty)
            }
        };
        Ok(Expr::Quantified {
            op,
            left: Box::new(left),
            right: Box::new(right),
            ty,
            all,
        })
    }

    pub(crate) fn array_op(
        &mut self,
        op: ArrayOp,
        l: &SqlExpr,
        r: &SqlExpr,
    ) -> Result<Expr, WhereError> {
        let (a, b) = (self.check(l)?, self.check(r)?);
        let ty = self.unify(&[&a, &b])?;
        let jsonb = ty == SqlType::Jsonb && op != ArrayOp::Overlaps;
        if !matches!(ty, SqlType::Array(_)) && !jsonb {
            return invalid(format!(
                "@> and <@ need arrays or jsonb, && arrays, not {ty}"
            ));
        }
        let left = self.coerce(a, &ty)?;
        let right = self.coerce(b, &ty)?;
        Ok(Expr::ArrayOp {
            op,
            left: Box::new(left),
            right: Box::new(right),
            ty,
        })
    }

    pub(crate) fn arith(
        &mut self,
        op: ArithOp,
        l: &SqlExpr,
        r: &SqlExpr,
    ) -> Result<Expr, WhereError> {
        let (a, b) = (self.check(l)?, self.check(r)?);
        let (a, b) = match (a, b) {
            (Checked::Typed(x), Checked::Typed(y)) => (x, y),
            (Checked::Typed(x), u) => {
                let ty = x.ty();
                (x, self.coerce(u, &ty)?)
            }
            (u, Checked::Typed(y)) => {
                let ty = y.ty();
                (self.coerce(u, &ty)?, y)
            }
            _ => return invalid("cannot do arithmetic on two untyped literals; add a cast"),
        };
        let (ta, tb) = (a.ty(), b.ty());
        if !ta.is_number() || !tb.is_number() {
            return invalid(format!("arithmetic needs numbers, not {ta} and {tb}"));
        }
        if ta.is_float() || tb.is_float() {
            return invalid(
                "arithmetic on float4/float8 is not supported (Postgres raises an error on overflow); cast to numeric first",
            );
        }
        let ty = if ta.is_integer() && tb.is_integer() {
            wider_integer(&ta, &tb)
        } else {
            SqlType::Numeric
        };
        let op = if op == ArithOp::Div && ty.is_integer() {
            ArithOp::IntDiv
        } else {
            op
        };
        Ok(Expr::Arith {
            op,
            left: Box::new(a),
            right: Box::new(b),
            ty,
        })
    }

    /// `div(a, b)`/`mod(a, b)`: both operands as numeric.
    fn numeric_pair(&mut self, op: ArithOp, l: &SqlExpr, r: &SqlExpr) -> Result<Expr, WhereError> {
        let mut operand = |e: &SqlExpr| -> Result<Expr, WhereError> {
            let c = self.check(e)?;
            let e = match c {
                Checked::Typed(e) => e,
                u => self.coerce(u, &SqlType::Numeric)?,
            };
            let ty = e.ty();
            if !(ty.is_integer() || ty == SqlType::Numeric) {
                return invalid(format!(
                    "div() and mod() need integers or numeric, not {ty}"
                ));
            }
            Ok(e)
        };
        let left = operand(l)?;
        let right = operand(r)?;
        // div() is numeric in Postgres even on integers; mod() keeps integer types
        let (ta, tb) = (left.ty(), right.ty());
        let ty = if op == ArithOp::Mod && ta.is_integer() && tb.is_integer() {
            wider_integer(&ta, &tb)
        } else {
            SqlType::Numeric
        };
        Ok(Expr::Arith {
            op,
            left: Box::new(left),
            right: Box::new(right),
            ty,
        })
    }

    pub(crate) fn json_get(
        &mut self,
        l: &SqlExpr,
        r: &SqlExpr,
        as_text: bool,
    ) -> Result<Expr, WhereError> {
        let doc = match self.check(l)? {
            Checked::Typed(e) if matches!(e.ty(), SqlType::Json | SqlType::Jsonb) => e,
            Checked::Typed(e) => {
                return invalid(format!("-> and ->> need json or jsonb, not {}", e.ty()));
            }
            Checked::Unknown { .. } => {
                return invalid("-> and ->> apply to json/jsonb columns, not literals");
            }
        };
        let key = match self.check(r)? {
            Checked::Unknown { text: Some(t), .. } => JsonKey::Field(t),
            Checked::Typed(Expr::Const(c)) => match (&c.ty, &c.value) {
                (t, Datum::Int(i)) if t.is_integer() && i32::try_from(*i).is_ok() => {
                    JsonKey::Index(*i)
                }
                (t, Datum::Text(s)) if t.is_string() => JsonKey::Field(s.to_string()),
                _ => return invalid("the key of -> / ->> must be a text or integer constant"),
            },
            _ => return invalid("the key of -> / ->> must be a text or integer constant"),
        };
        let jsonb = doc.ty() == SqlType::Jsonb;
        Ok(Expr::JsonGet {
            expr: Box::new(doc),
            key,
            as_text,
            jsonb,
        })
    }

    pub(crate) fn cast_target(&self, dt: &DataType) -> Result<SqlType, WhereError> {
        let name = dt.to_string().to_ascii_lowercase();
        if name.contains('(') {
            return invalid(format!(
                "type modifiers in casts ({name}) are not supported"
            ));
        }
        SqlType::from_name(&name)
            .ok_or_else(|| WhereError::invalid(format!("unsupported type {name} in a cast")))
    }

    pub(crate) fn explicit_cast(
        &mut self,
        e: &SqlExpr,
        dt: &DataType,
    ) -> Result<Checked, WhereError> {
        let to = self.cast_target(dt)?;
        Ok(Checked::Typed(match self.check(e)? {
            c @ Checked::Unknown { .. } => self.coerce(c, &to)?,
            Checked::Typed(expr) => {
                let from = expr.ty();
                if from == to {
                    expr
                } else if matches!(expr, Expr::Const(_)) || cast::infallible(&from, &to) {
                    make_cast(expr, from, to)?
                } else {
                    return invalid(format!(
                        "cannot cast {from} to {to} here: the conversion can fail on some values, \
                         and a shape must never fail (compare with a constant of the column's type instead)"
                    ));
                }
            }
        }))
    }

    pub(crate) fn function(&mut self, f: &Function) -> Result<Checked, WhereError> {
        let parts: Vec<String> = f
            .name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(fold_ident))
            .collect();
        let name = parts.last().cloned().unwrap_or_default();
        let qualified = parts.join(".");
        if VOLATILE.contains(&name.as_str()) {
            return invalid(format!(
                "{qualified}() is not deterministic: {VOLATILE_HINT}"
            ));
        }
        let args = match &f.args {
            FunctionArguments::List(list)
                if list.duplicate_treatment.is_none() && list.clauses.is_empty() =>
            {
                list.args
                    .iter()
                    .map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                        _ => invalid(format!("unsupported argument in {qualified}()")),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            FunctionArguments::None => Vec::new(),
            _ => return invalid(format!("unsupported arguments in {qualified}()")),
        };
        if f.filter.is_some()
            || f.over.is_some()
            || !f.within_group.is_empty()
            || parts.len() > 2
            || (parts.len() == 2 && parts[0] != "pg_catalog")
        {
            return invalid(format!("function {qualified}() is not supported"));
        }
        let one = |args: &[&SqlExpr]| -> Result<(), WhereError> {
            if args.len() == 1 {
                Ok(())
            } else {
                invalid(format!("{name}() takes one argument"))
            }
        };
        Ok(Checked::Typed(match name.as_str() {
            "lower" | "upper" | "length" | "char_length" | "character_length" => {
                one(&args)?;
                let arg = self.string_operand_pub(args[0], &format!("{name}()"))?;
                let arg = implicit_cast(arg, &SqlType::Text)?;
                let func = match name.as_str() {
                    "lower" => Func::Lower,
                    "upper" => Func::Upper,
                    _ => Func::Length,
                };
                if func != Func::Length {
                    self.case_mapping_available(&format!("{name}()"))?;
                }
                Expr::Func {
                    func,
                    arg: Box::new(arg),
                    ctype: self.ctype.clone(),
                }
            }
            "div" | "mod" => {
                if args.len() != 2 {
                    return invalid(format!("{name}() takes two arguments"));
                }
                let op = if name == "div" {
                    ArithOp::IntDiv
                } else {
                    ArithOp::Mod
                };
                self.numeric_pair(op, args[0], args[1])?
            }
            "coalesce" if !args.is_empty() => {
                let checked = args
                    .iter()
                    .map(|a| self.check(a))
                    .collect::<Result<Vec<_>, _>>()?;
                let refs: Vec<&Checked> = checked.iter().collect();
                let ty = self.unify_with(&refs, list_type)?;
                let args = checked
                    .into_iter()
                    .map(|c| self.coerce(c, &ty))
                    .collect::<Result<Vec<_>, _>>()?;
                Expr::Coalesce { args, ty }
            }
            _ => {
                return invalid(format!(
                    "unknown function {qualified}(); supported: lower, upper, length, coalesce, div, mod"
                ));
            }
        }))
    }

    /// Refuses `what` (`lower()`, `upper()`, `ILIKE`) on a database whose case mapping the
    /// proxy cannot reproduce: the live path would disagree with the snapshot.
    fn case_mapping_available(&self, what: &str) -> Result<(), WhereError> {
        match self.ctype.unsupported() {
            None => Ok(()),
            Some(why) => invalid(format!(
                "{what} is not available on this database: {why}, and shapesync cannot map case \
                 exactly as it does (compare without changing case, or use a database with a C, \
                 libc UTF-8 or ICU root locale)"
            )),
        }
    }

    pub(crate) fn array_ctor(&mut self, items: &[SqlExpr]) -> Result<Expr, WhereError> {
        if items.is_empty() {
            return invalid(
                "cannot determine the type of an empty ARRAY[]; write '{}'::int4[] instead",
            );
        }
        let checked = items
            .iter()
            .map(|a| self.check(a))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&Checked> = checked.iter().collect();
        let ty = self.unify_with(&refs, list_type)?;
        let computed = checked
            .iter()
            .any(|c| matches!(c, Checked::Typed(e) if e.computed_in_numeric()));
        if computed {
            return invalid("integer arithmetic inside ARRAY[] is not supported");
        }
        if matches!(ty, SqlType::Array(_) | SqlType::Json) {
            return invalid(format!("ARRAY[] of {ty} is not supported"));
        }
        let items = checked
            .into_iter()
            .map(|c| self.coerce(c, &ty))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Expr::ArrayCtor { items, ty })
    }
}

pub(crate) fn uses_columns(e: &Expr) -> bool {
    let mut found = matches!(e, Expr::Column { .. });
    e.for_each_child(&mut |c| found |= uses_columns(c));
    found
}

/// Evaluates an expression without columns now, into a constant.
pub(crate) fn fold(e: Expr) -> Expr {
    let ty = e.ty();
    let value = super::eval::eval(&e, &[], &super::eval::Subqueries::none()).into_owned();
    Expr::Const(Box::new(super::ast::Constant {
        ty,
        value,
        param: None,
    }))
}

/// Whether `p` ends in an escape character that escapes nothing.
fn ends_with_lone_escape(p: &str, esc: char) -> bool {
    let mut escaped = false;
    for c in p.chars() {
        escaped = !escaped && c == esc;
    }
    escaped
}

const VOLATILE: &[&str] = &[
    "now",
    "random",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "nextval",
    "currval",
    "lastval",
    "setval",
    "gen_random_uuid",
    "uuid_generate_v4",
    "txid_current",
    "pg_current_xact_id",
    "current_user",
    "session_user",
    "user",
    "current_setting",
    "inet_client_addr",
    "pg_backend_pid",
    "random_normal",
    "current_schema",
];
