//! Type checking: `sqlparser`'s tree to the typed [`Expr`], resolving columns against the
//! table, giving literals and `$n` parameters their type from context (as Postgres types
//! `unknown` literals), making implicit conversions explicit, and refusing anything whose
//! meaning could differ between our evaluator and Postgres, or could make Postgres fail.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

use sqlparser::ast::{
    self as sql, BinaryOperator, CastKind, Expr as SqlExpr, UnaryOperator, Value,
};
use sqlparser::tokenizer::Span;

use super::OtherTables;
use super::ast::{ArithOp, ArrayOp, CmpOp, Constant, Expr};
use super::cast;
use super::error::WhereError;
use super::parse::location_of;
use super::subquery::Subquery;
use super::types::SqlType;
use super::value::{self, Datum};
use crate::schema::{TableSchema, quote_identifier};

/// Deepest expression nesting accepted (AND/OR chains are flattened and do not count).
const MAX_DEPTH: usize = 100;

/// A checked operand: typed, or a literal/parameter whose type the context decides.
pub(crate) enum Checked {
    Typed(Expr),
    /// `text: None` is the NULL literal.
    Unknown {
        text: Option<String>,
        param: Option<usize>,
    },
}

pub(crate) struct Checker<'a> {
    pub table: &'a TableSchema,
    /// The database's case mapping, carried by `lower`/`upper`/`ILIKE` nodes.
    pub ctype: std::sync::Arc<super::ctype::Ctype>,
    pub params: &'a BTreeMap<usize, String>,
    pub text: &'a str,
    pub depth: usize,
    /// The schemas of other tables, for subqueries (`None`: subqueries are refused).
    pub others: Option<OtherTables<'a>>,
    /// Where names are looked up: this table and the enclosing ones.
    pub scope: Scope<'a>,
    /// The subqueries checked so far directly in this clause.
    pub subqueries: Vec<Arc<Subquery>>,
    /// Subqueries checked so far in the whole `where`, every level counted.
    pub subquery_count: &'a Cell<usize>,
    /// Set when a name resolved to an enclosing table (which is refused, but for the outer
    /// side of an `EXISTS` correlation).
    pub outer_reference: bool,
}

/// The tables names are resolved against.
#[derive(Clone)]
pub(crate) struct Scope<'a> {
    /// 0 for the shape's table, n for a subquery n levels down.
    pub level: usize,
    /// What a column of this table may be qualified with (`["m"]` for `FROM members m`,
    /// else `["members"]` and `["public", "members"]`).
    pub qualifiers: Vec<Vec<String>>,
    /// Whether qualified names are read now (always in a subquery; in the shape's own clause
    /// only on the outer side of an `EXISTS` correlation).
    pub qualified_ok: bool,
    /// The enclosing tables, innermost first, with their qualifiers.
    pub enclosing: Vec<(&'a TableSchema, Vec<Vec<String>>)>,
    /// Unqualified names refused here: while the outer side of an `EXISTS` correlation is
    /// read, the inner table's columns (Postgres would resolve them to the inner table).
    pub shadowed: Vec<String>,
}

impl<'a> Checker<'a> {
    pub fn new(
        table: &'a TableSchema,
        params: &'a BTreeMap<usize, String>,
        text: &'a str,
        others: Option<OtherTables<'a>>,
        subquery_count: &'a Cell<usize>,
    ) -> Self {
        Checker {
            table,
            ctype: super::ctype::database_ctype(),
            params,
            text,
            depth: 0,
            others,
            scope: Scope {
                level: 0,
                qualifiers: table_qualifiers(table),
                qualified_ok: false,
                enclosing: Vec::new(),
                shadowed: Vec::new(),
            },
            subqueries: Vec::new(),
            subquery_count,
            outer_reference: false,
        }
    }
}

/// `["name"]` and `["schema", "name"]`: how an unaliased table's columns may be qualified.
pub(crate) fn table_qualifiers(table: &TableSchema) -> Vec<Vec<String>> {
    vec![
        vec![table.name.name.clone()],
        vec![table.name.schema.clone(), table.name.name.clone()],
    ]
}

fn invalid<T>(message: impl Into<String>) -> Result<T, WhereError> {
    Err(WhereError::invalid(message))
}

pub(crate) fn cmp_op_pub(op: &BinaryOperator) -> Option<CmpOp> {
    Some(match op {
        BinaryOperator::Eq => CmpOp::Eq,
        BinaryOperator::NotEq => CmpOp::NotEq,
        BinaryOperator::Lt => CmpOp::Lt,
        BinaryOperator::LtEq => CmpOp::LtEq,
        BinaryOperator::Gt => CmpOp::Gt,
        BinaryOperator::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

/// Postgres' reserved key words (those no unquoted name may be), but for the SQL value
/// functions (`current_user`, `localtime`…), which are refused by name elsewhere.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "some",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

fn is_expression_start(word: &str) -> bool {
    ["not", "case", "cast", "array"].contains(&word.to_ascii_lowercase().as_str())
}

fn is_reserved(word: &str) -> bool {
    RESERVED.contains(&word.to_ascii_lowercase().as_str())
}

/// Identifier folding as Postgres does: unquoted names to lower case (ASCII letters only).
pub(crate) fn fold_ident(ident: &sql::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

impl Checker<'_> {
    fn location(&self, span: Span) -> Option<usize> {
        (span.start.line > 0).then(|| location_of(self.text, span.start))
    }

    /// Checks the whole `where`: it must be boolean.
    pub fn check_root(&mut self, e: &SqlExpr) -> Result<Expr, WhereError> {
        let checked = self.check(e)?;
        self.coerce(checked, &SqlType::Bool)
            .map_err(|err| self.locate(err, e))
    }

    #[recursive::recursive]
    pub fn check(&mut self, e: &SqlExpr) -> Result<Checked, WhereError> {
        if self.depth >= MAX_DEPTH {
            return invalid("the where clause is nested too deeply");
        }
        self.depth += 1;
        let result = self.check_inner(e);
        self.depth -= 1;
        result.map_err(|err| self.locate(err, e))
    }

    /// Gives an error without a position the position of `e` (computed only then: a span
    /// walks the whole subtree).
    fn locate(&self, err: WhereError, e: &SqlExpr) -> WhereError {
        match err {
            WhereError::Invalid { location: None, .. }
            | WhereError::UnknownColumn { location: None, .. } => {
                // the leftmost token: walk down left operands without recursing
                let mut node = e;
                while let SqlExpr::BinaryOp { left, .. } = node {
                    node = left;
                }
                let start = match node {
                    SqlExpr::Identifier(i) => i.span,
                    SqlExpr::Value(v) => v.span,
                    other => sql::Spanned::span(other),
                };
                err.at(self.location(start))
            }
            other => other,
        }
    }

    pub(crate) fn typed(&mut self, e: &SqlExpr) -> Result<Expr, WhereError> {
        let c = self.check(e)?;
        self.default_type(c)
    }

    fn boolean(&mut self, e: &SqlExpr, context: &str) -> Result<Expr, WhereError> {
        let c = self.check(e)?;
        if let Checked::Typed(t) = &c
            && t.ty() != SqlType::Bool
        {
            return invalid(format!(
                "argument of {context} must be type boolean, not type {}",
                t.ty()
            ));
        }
        self.coerce(c, &SqlType::Bool)
    }

    /// An operand on its own: `unknown` becomes text, as in Postgres.
    fn default_type(&self, c: Checked) -> Result<Expr, WhereError> {
        match c {
            Checked::Typed(e) => Ok(e),
            unknown => self.coerce(unknown, &SqlType::Text),
        }
    }

    fn check_inner(&mut self, e: &SqlExpr) -> Result<Checked, WhereError> {
        use SqlExpr as E;
        Ok(Checked::Typed(match e {
            E::Identifier(ident) if ident.quote_style.is_none() && is_reserved(&ident.value) => {
                // Postgres' grammar never reads a reserved word as a name: `a = 1 AND AND`
                // is a syntax error there, not an unknown column
                let at_end = self.text.trim_end().ends_with(ident.value.as_str());
                // a word that starts an expression (`NOT`) fails where its operand is missing
                let (location, near) = if at_end && is_expression_start(&ident.value) {
                    (
                        super::error::SELECT_PREFIX_CHARS + self.text.chars().count(),
                        "end of input".to_owned(),
                    )
                } else {
                    (
                        location_of(self.text, ident.span.start) - 1,
                        format!("or near \"{}\"", ident.value),
                    )
                };
                return Err(WhereError::Syntax {
                    location,
                    near,
                    expected: "an expression".to_owned(),
                });
            }
            E::Identifier(ident) => self.column(&fold_ident(ident))?,
            E::CompoundIdentifier(parts) => {
                let names: Vec<String> = parts.iter().map(fold_ident).collect();
                self.qualified_column(&names)?
            }
            E::Value(v) => return self.value(&v.value),
            E::Nested(inner) => return self.check(inner),
            E::BinaryOp { left, op, right } => return self.binary(left, op, right),
            E::UnaryOp { op, expr } => self.unary(op, expr)?,
            E::IsNull(x) | E::IsUnknown(x) => is_null(self.typed(x)?, false),
            E::IsNotNull(x) | E::IsNotUnknown(x) => is_null(self.typed(x)?, true),
            E::IsTrue(x) => self.is_bool(x, true, false)?,
            E::IsNotTrue(x) => self.is_bool(x, true, true)?,
            E::IsFalse(x) => self.is_bool(x, false, false)?,
            E::IsNotFalse(x) => self.is_bool(x, false, true)?,
            E::IsDistinctFrom(a, b) => self.distinct(a, b, false)?,
            E::IsNotDistinctFrom(a, b) => self.distinct(a, b, true)?,
            E::InList {
                expr,
                list,
                negated,
            } => self.in_list(expr, list, *negated)?,
            E::Between {
                expr,
                negated,
                low,
                high,
            } => self.between(expr, low, high, *negated)?,
            E::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char,
            } => self.like(expr, pattern, escape_char.as_deref(), false, *negated)?,
            E::ILike {
                negated,
                any: false,
                expr,
                pattern,
                escape_char,
            } => self.like(expr, pattern, escape_char.as_deref(), true, *negated)?,
            E::AnyOp { right, .. } | E::AllOp { right, .. }
                if matches!(**right, E::Subquery(_)) =>
            {
                return invalid(
                    "op ANY (SELECT …) and op ALL (SELECT …) subqueries are not supported; write x IN (SELECT …) or x NOT IN (SELECT …)",
                );
            }
            E::AnyOp {
                left,
                compare_op,
                right,
                ..
            } => self.quantified(left, compare_op, right, false)?,
            E::AllOp {
                left,
                compare_op,
                right,
            } => self.quantified(left, compare_op, right, true)?,
            E::Cast {
                kind,
                expr,
                data_type,
                format: None,
            } => {
                if matches!(kind, CastKind::TryCast | CastKind::SafeCast) {
                    return invalid("TRY_CAST/SAFE_CAST are not Postgres; use CAST or ::");
                }
                return self.explicit_cast(expr, data_type);
            }
            E::TypedString(ts) => {
                let ty = self.cast_target(&ts.data_type)?;
                let text = string_value(&ts.value.value)
                    .ok_or_else(|| WhereError::invalid("a typed literal needs a string"))?;
                self.coerce(
                    Checked::Unknown {
                        text: Some(text),
                        param: None,
                    },
                    &ty,
                )?
            }
            E::Interval(iv) => {
                if iv.leading_field.is_some() || iv.last_field.is_some() {
                    return invalid(
                        "INTERVAL with fields (YEAR TO MONTH…) is not supported; write INTERVAL 'P1Y2M'",
                    );
                }
                let c = self.check(&iv.value)?;
                self.coerce(c, &SqlType::Interval)?
            }
            E::Function(f) => return self.function(f),
            E::Array(arr) => self.array_ctor(&arr.elem)?,
            E::Collate { .. } => {
                return invalid(
                    "COLLATE is not supported: text always compares byte-wise (COLLATE \"C\")",
                );
            }
            E::InSubquery {
                expr,
                subquery,
                negated,
            } => self.in_subquery(expr, subquery, *negated)?,
            E::Exists { subquery, negated } => self.exists(subquery, *negated)?,
            E::Subquery(_) => {
                return invalid(
                    "scalar subqueries `(SELECT …)` used as a value are not supported; write x IN (SELECT …)",
                );
            }
            E::Case { .. } => return invalid("CASE is not supported in a shape's where clause"),
            E::SimilarTo { .. } | E::RLike { .. } => {
                return invalid("SIMILAR TO and regular expressions are not supported; use LIKE");
            }
            E::Like { any: true, .. } | E::ILike { any: true, .. } => {
                return invalid("LIKE ANY is not supported");
            }
            other => {
                return invalid(format!(
                    "{} is not supported in a shape's where clause",
                    describe(other)
                ));
            }
        }))
    }

    /// An unqualified name.
    pub(crate) fn column(&mut self, name: &str) -> Result<Expr, WhereError> {
        if self.scope.shadowed.iter().any(|c| c == name) {
            return invalid(self.shadowed_message(name));
        }
        self.own_column(name)
    }

    /// A column of this checker's table.
    pub(crate) fn own_column(&mut self, name: &str) -> Result<Expr, WhereError> {
        let Some(index) = self.table.column_index(name) else {
            if let Some((outer, _)) = self
                .scope
                .enclosing
                .iter()
                .find(|(t, _)| t.column_index(name).is_some())
            {
                self.outer_reference = true;
                return invalid(format!(
                    "column \"{name}\" is not in {} (the subquery's table) but in the outer table {}: \
                     a subquery may use the outer row only in EXISTS, as inner_column = {}.{name}",
                    self.table.name,
                    outer.name,
                    quote_identifier(&outer.name.name)
                ));
            }
            return Err(WhereError::UnknownColumn {
                location: None,
                name: name.to_owned(),
                message: format!(
                    "unknown column \"{name}\"; the table {} has: {}",
                    self.table.name,
                    self.table.column_list()
                ),
            });
        };
        let col = &self.table.columns[index];
        let ty = SqlType::from_pg(&col.ty).map_err(|t| {
            WhereError::invalid(format!(
                "column \"{name}\" has type {t}, which shape where clauses do not support"
            ))
        })?;
        Ok(Expr::Column {
            index,
            name: name.into(),
            ty,
        })
    }

    fn value(&self, v: &Value) -> Result<Checked, WhereError> {
        let constant = |ty: SqlType, value: Datum<'static>| {
            Ok(Checked::Typed(Expr::Const(Box::new(Constant {
                ty,
                value,
                param: None,
            }))))
        };
        match v {
            Value::Number(n, _) => {
                let (ty, value) = number_literal(n)?;
                constant(ty, value)
            }
            Value::Boolean(b) => constant(SqlType::Bool, Datum::Bool(*b)),
            Value::Null => Ok(Checked::Unknown {
                text: None,
                param: None,
            }),
            Value::Placeholder(p) => {
                let index: usize = p
                    .strip_prefix('$')
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        WhereError::invalid(format!("unsupported placeholder {p}; use $1, $2, …"))
                    })?;
                let text = self
                    .params
                    .get(&index)
                    .ok_or(WhereError::MissingParam(index))?;
                Ok(Checked::Unknown {
                    text: Some(text.clone()),
                    param: Some(index),
                })
            }
            other => match string_value(other) {
                Some(text) => Ok(Checked::Unknown {
                    text: Some(text),
                    param: None,
                }),
                None => invalid(format!("literal {other} is not supported")),
            },
        }
    }

    /// Gives `c` the type `ty`: reads an unknown literal as `ty`, or converts implicitly.
    pub fn coerce(&self, c: Checked, ty: &SqlType) -> Result<Expr, WhereError> {
        match c {
            Checked::Unknown { text: None, param } => Ok(Expr::Const(Box::new(Constant {
                ty: ty.clone(),
                value: Datum::Null,
                param,
            }))),
            Checked::Unknown {
                text: Some(text),
                param,
            } => {
                let value = value::parse_value(ty, &text)
                    .map_err(|e| match param {
                        Some(index) => WhereError::Param {
                            index,
                            message: e.0.clone(),
                        },
                        None => WhereError::invalid(e.0.clone()),
                    })?
                    .into_owned();
                Ok(Expr::Const(Box::new(Constant {
                    ty: ty.clone(),
                    value,
                    param,
                })))
            }
            Checked::Typed(e) => implicit_cast(e, ty),
        }
    }
}

/// `e` converted to `ty` where Postgres would do it implicitly.
pub(crate) fn implicit_cast(e: Expr, ty: &SqlType) -> Result<Expr, WhereError> {
    let from = e.ty();
    if from == *ty {
        return Ok(e);
    }
    let is_const = matches!(e, Expr::Const(_));
    // a constant numeric can be read as a float, an integer constant as a narrower integer
    // (checked now: it cannot fail later)
    let const_numeric_to_float = is_const
        && ((from == SqlType::Numeric && ty.is_float()) || (from.is_integer() && ty.is_integer()));
    let elementwise = match (&from, ty) {
        (SqlType::Array(a), SqlType::Array(b)) => cast::implicit(a, b) && cast::infallible(a, b),
        _ => false,
    };
    if !(cast::implicit(&from, ty) || const_numeric_to_float || elementwise) {
        return invalid(format!("types {from} and {ty} cannot be matched"));
    }
    make_cast(e, from, ty.clone())
}

/// A conversion node, folded right away for constants (so a bad constant fails now).
pub(crate) fn make_cast(e: Expr, from: SqlType, to: SqlType) -> Result<Expr, WhereError> {
    if from == to {
        return Ok(e);
    }
    if let Expr::Const(c) = e {
        let Constant { value, param, .. } = *c;
        let value = cast_constant(&from, &to, value).map_err(|m| match param {
            Some(index) => WhereError::Param { index, message: m },
            None => WhereError::invalid(m),
        })?;
        return Ok(Expr::Const(Box::new(Constant {
            ty: to,
            value,
            param,
        })));
    }
    if !cast::infallible(&from, &to) {
        return invalid(format!(
            "cannot cast a column value from {from} to {to}: the conversion can fail on some values"
        ));
    }
    Ok(Expr::Cast {
        expr: Box::new(e),
        from,
        to,
    })
}

fn cast_constant(
    from: &SqlType,
    to: &SqlType,
    v: Datum<'static>,
) -> Result<Datum<'static>, String> {
    match (from, to) {
        (SqlType::Array(a), SqlType::Array(b)) => match v {
            Datum::Array(arr) => {
                let mut items = Vec::with_capacity(arr.items.len());
                for item in arr.items {
                    items.push(cast_constant(a, b, item)?);
                }
                Ok(Datum::Array(Box::new(value::ArrayDatum {
                    dims: arr.dims,
                    items,
                })))
            }
            other => Ok(other),
        },
        _ => cast::cast(from, to, v).map(Datum::into_owned),
    }
}

fn is_null(e: Expr, negated: bool) -> Expr {
    Expr::IsNull {
        expr: Box::new(e),
        negated,
    }
}

/// A numeric literal typed as Postgres types it: int4, else int8, else numeric.
fn number_literal(n: &str) -> Result<(SqlType, Datum<'static>), WhereError> {
    let digits = n.strip_prefix('-').unwrap_or(n);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(v) = n.parse::<i64>()
    {
        let ty = if i32::try_from(v).is_ok() {
            SqlType::Int4
        } else {
            SqlType::Int8
        };
        return Ok((ty, Datum::Int(v)));
    }
    let v = n
        .parse()
        .map_err(|_| WhereError::invalid(format!("invalid number {n}")))?;
    Ok((SqlType::Numeric, Datum::Numeric(v)))
}

pub(crate) fn string_value(v: &Value) -> Option<String> {
    match v {
        Value::SingleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::UnicodeStringLiteral(s) => Some(s.clone()),
        Value::DollarQuotedString(d) => Some(d.value.clone()),
        _ => None,
    }
}

pub(crate) fn describe(e: &SqlExpr) -> String {
    let text = e.to_string();
    let short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        format!("`{short}…`")
    } else {
        format!("`{short}`")
    }
}

impl Checker<'_> {
    fn unary(&mut self, op: &UnaryOperator, e: &SqlExpr) -> Result<Expr, WhereError> {
        match op {
            UnaryOperator::Not => Ok(Expr::Not(Box::new(self.boolean(e, "NOT")?))),
            UnaryOperator::Minus => {
                if let SqlExpr::Value(v) = e
                    && let Value::Number(n, _) = &v.value
                {
                    let (ty, value) = number_literal(&format!("-{n}"))?;
                    return Ok(Expr::Const(Box::new(Constant {
                        ty,
                        value,
                        param: None,
                    })));
                }
                let operand = self.typed(e)?;
                negate(operand)
            }
            UnaryOperator::Plus => {
                let operand = self.typed(e)?;
                if !operand.ty().is_number() {
                    return invalid(format!("unary + needs a number, not {}", operand.ty()));
                }
                Ok(operand)
            }
            other => invalid(format!("operator {other} is not supported")),
        }
    }

    fn is_bool(&mut self, e: &SqlExpr, value: bool, negated: bool) -> Result<Expr, WhereError> {
        let expr = self.boolean(e, "IS TRUE/FALSE")?;
        Ok(Expr::IsBool {
            expr: Box::new(expr),
            value,
            negated,
        })
    }

    fn binary(
        &mut self,
        l: &SqlExpr,
        op: &BinaryOperator,
        r: &SqlExpr,
    ) -> Result<Checked, WhereError> {
        if let Some(cmp) = cmp_op_pub(op) {
            let (a, b) = (self.check(l)?, self.check(r)?);
            return Ok(Checked::Typed(self.compare(cmp, a, b)?));
        }
        Ok(Checked::Typed(match op {
            BinaryOperator::And | BinaryOperator::Or => self.logic(l, op, r)?,
            BinaryOperator::Plus => match self.datetime_arith(true, l, r)? {
                Some(e) => e,
                None => self.arith(ArithOp::Add, l, r)?,
            },
            BinaryOperator::Minus => match self.datetime_arith(false, l, r)? {
                Some(e) => e,
                None => self.arith(ArithOp::Sub, l, r)?,
            },
            BinaryOperator::Multiply => self.arith(ArithOp::Mul, l, r)?,
            BinaryOperator::Divide => self.arith(ArithOp::Div, l, r)?,
            BinaryOperator::Modulo => self.arith(ArithOp::Mod, l, r)?,
            BinaryOperator::StringConcat => {
                let a = self.string_operand_pub(l, "||")?;
                let b = self.string_operand_pub(r, "||")?;
                Expr::Concat(Box::new(a), Box::new(b))
            }
            BinaryOperator::AtArrow => self.array_op(ArrayOp::Contains, l, r)?,
            BinaryOperator::ArrowAt => self.array_op(ArrayOp::ContainedBy, l, r)?,
            BinaryOperator::PGOverlap => self.array_op(ArrayOp::Overlaps, l, r)?,
            BinaryOperator::Question => self.jsonb_key_op(ArrayOp::HasKey, l, r)?,
            BinaryOperator::QuestionPipe => self.jsonb_key_op(ArrayOp::HasAnyKey, l, r)?,
            BinaryOperator::QuestionAnd => self.jsonb_key_op(ArrayOp::HasAllKeys, l, r)?,
            BinaryOperator::Arrow => self.json_get(l, r, false)?,
            BinaryOperator::LongArrow => self.json_get(l, r, true)?,
            other => return invalid(format!("operator {other} is not supported")),
        }))
    }

    /// `a AND b AND c …` flattened without recursion, so long chains cannot exhaust the stack.
    fn logic(&mut self, l: &SqlExpr, op: &BinaryOperator, r: &SqlExpr) -> Result<Expr, WhereError> {
        let mut operands = vec![r];
        let mut left = l;
        loop {
            match left {
                SqlExpr::BinaryOp {
                    left: ll,
                    op: o,
                    right: lr,
                } if o == op => {
                    operands.push(lr);
                    left = ll;
                }
                other => {
                    operands.push(other);
                    break;
                }
            }
        }
        operands.reverse();
        let name = if *op == BinaryOperator::And {
            "AND"
        } else {
            "OR"
        };
        let checked = operands
            .into_iter()
            .map(|e| self.boolean(e, name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if *op == BinaryOperator::And {
            Expr::And(checked)
        } else {
            Expr::Or(checked)
        })
    }

    pub(crate) fn string_operand_pub(&mut self, e: &SqlExpr, op: &str) -> Result<Expr, WhereError> {
        match self.check(e)? {
            Checked::Typed(t) if !t.ty().is_string() => invalid(format!(
                "{op} needs text operands, not {} (cast with ::text)",
                t.ty()
            )),
            c => self.coerce(c, &SqlType::Text),
        }
    }
}

/// Unary minus (on integers computed in numeric, so `-(-9223372036854775808)` cannot
/// overflow).
fn negate(operand: Expr) -> Result<Expr, WhereError> {
    let ty = operand.ty();
    if ty.is_number() {
        return Ok(Expr::Neg {
            expr: Box::new(operand),
            ty,
        });
    }
    invalid(format!("unary minus needs a number, not {ty}"))
}
