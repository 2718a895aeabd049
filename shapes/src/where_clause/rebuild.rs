//! Writing a checked `where` back as SQL for Postgres (snapshots), and as the canonical text
//! that identifies a shape.
//!
//! The SQL is built so that Postgres computes exactly what [`super::eval`] computes, and can
//! never raise an error: identifiers are quoted, every constant is a bound parameter with an
//! explicit cast (`$1::int8`), text comparisons say `COLLATE "C"`, integer arithmetic runs in
//! numeric, divisors go through `NULLIF(…, 0)`, enums compare by their position (so no enum
//! type name is needed), and `->`/`->>` on a `json` document holding `\u0000` gives NULL.

use super::ast::{ArithOp, ArrayOp, Constant, DateTimeOp, Expr, Func};
use super::ctype::Ctype;
use super::datetime_arith::{self as dt, IntervalGuard};
use super::eval::JSON_NUL_ESCAPE;
use super::json::JsonKey;
use super::types::SqlType;
use super::value::{Datum, to_input_text};
use crate::schema::quote_identifier;

/// Accumulates SQL text and parameter values.
pub(crate) struct SqlWriter {
    pub out: String,
    pub params: Vec<String>,
    first_param: usize,
    /// Canonical mode: constants inline as literals, no SQL-only wrapping.
    pub(crate) canonical: bool,
    /// The clauses being written, outermost first: the shape's `where`, then the `where` of
    /// each subquery being written inside it ([`super::rebuild_subquery`]).
    pub(crate) scopes: Vec<Scope>,
}

/// A clause being written: its subqueries, and the alias its table's columns are qualified
/// with (none for the shape's own table, `s1`, `s2`… for subqueries by depth).
pub(crate) struct Scope {
    pub subqueries: Vec<std::sync::Arc<super::Subquery>>,
    pub alias: Option<String>,
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl SqlWriter {
    pub fn sql(first_param: usize) -> Self {
        SqlWriter {
            out: String::new(),
            params: Vec::new(),
            first_param,
            canonical: false,
            scopes: Vec::new(),
        }
    }

    pub fn canonical() -> Self {
        SqlWriter {
            out: String::new(),
            params: Vec::new(),
            first_param: 1,
            canonical: true,
            scopes: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }

    /// A parameter holding `text`, cast to `ty`; inline in canonical mode.
    fn param(&mut self, text: String, ty: &str) {
        if self.canonical {
            self.out
                .push_str(&format!("{}::{ty}", quote_literal(&text)));
        } else {
            let n = self.first_param + self.params.len();
            self.params.push(text);
            self.out.push_str(&format!("${n}::{ty}"));
        }
    }

    pub(crate) fn list(&mut self, items: &[Expr], sep: &str) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.push(sep);
            }
            self.write(item);
        }
    }

    /// `(e) COLLATE "C"` when the comparison type orders by collation.
    pub(crate) fn collated(&mut self, e: &Expr, ty: &SqlType) {
        if ty.is_collatable() && !self.canonical {
            self.push("(");
            self.write(e);
            self.push(") COLLATE \"C\"");
        } else {
            self.write(e);
        }
    }

    /// The operand of a case mapping (`lower`, `upper`, `ILIKE`) under the collation whose
    /// ctype the evaluator reproduces: the database's default one, or `"C"` (ASCII only)
    /// when the clause was parsed without the database's ctype. An explicit collation also
    /// keeps a column's own collation from changing the mapping.
    fn case_collated(&mut self, e: &Expr, ctype: &Ctype) {
        if self.canonical {
            self.write(e);
            return;
        }
        self.push("(");
        self.write(e);
        self.push(match ctype {
            Ctype::Ascii | Ctype::Unsupported(_) => ") COLLATE \"C\"",
            Ctype::Simple { .. } | Ctype::Full { .. } => ") COLLATE \"default\"",
        });
    }

    fn constant(&mut self, c: &Constant) {
        if let SqlType::Enum(_) = &c.ty {
            match &c.value {
                Datum::Enum(i) if !self.canonical => self.param((i + 1).to_string(), "int4"),
                Datum::Enum(_) => self.push(&quote_literal(
                    &to_input_text(&c.ty, &c.value).unwrap_or_default(),
                )),
                _ if self.canonical => self.push("NULL"),
                _ => self.push("NULL::int4"),
            }
            return;
        }
        let ty = c.ty.sql_name();
        match (&c.value, self.canonical) {
            (Datum::Null, _) => self.push(&format!("NULL::{ty}")),
            // a bare integer reads back as int4 (int8 when it does not fit): any other type is
            // spelled out, or `2::int8 = 5` would read back as `2 = 5` on int4
            (Datum::Int(i), true) if ty == literal_type(*i) => self.push(&i.to_string()),
            (Datum::Int(i), true) if *i >= 0 => self.push(&format!("{i}::{ty}")),
            (Datum::Int(i), true) => self.push(&format!("({i})::{ty}")),
            (Datum::Bool(b), true) => self.push(if *b { "TRUE" } else { "FALSE" }),
            (v, _) => {
                let text = to_input_text(&c.ty, v).unwrap_or_default();
                self.param(text, &ty);
            }
        }
    }

    #[recursive::recursive]
    pub fn write(&mut self, e: &Expr) {
        match e {
            Expr::Column { name, ty, .. } => {
                let q = match self.scopes.last().and_then(|s| s.alias.as_deref()) {
                    Some(alias) => {
                        format!("{}.{}", quote_identifier(alias), quote_identifier(name))
                    }
                    None => quote_identifier(name),
                };
                if matches!(ty, SqlType::Enum(_)) && !self.canonical {
                    self.push(&format!("array_position(enum_range({q}), {q})"));
                } else {
                    self.push(&q);
                }
            }
            Expr::Const(c) => self.constant(c),
            Expr::Not(x) => {
                self.push("(NOT ");
                self.write(x);
                self.push(")");
            }
            Expr::And(items) | Expr::Or(items) => {
                let sep = if matches!(e, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.push("(");
                self.list(items, sep);
                self.push(")");
            }
            Expr::IsNull { expr, negated } => {
                self.push("(");
                self.write(expr);
                self.push(if *negated {
                    " IS NOT NULL)"
                } else {
                    " IS NULL)"
                });
            }
            Expr::IsBool {
                expr,
                value,
                negated,
            } => {
                self.push("(");
                self.write(expr);
                self.push(&format!(
                    " IS {}{})",
                    if *negated { "NOT " } else { "" },
                    if *value { "TRUE" } else { "FALSE" }
                ));
            }
            Expr::Compare {
                op,
                left,
                right,
                ty,
            } => {
                self.push("(");
                self.collated(left, ty);
                self.push(&format!(" {} ", op.sql()));
                self.write(right);
                self.push(")");
            }
            Expr::Distinct {
                left,
                right,
                ty,
                negated,
            } => {
                self.push("(");
                self.collated(left, ty);
                self.push(if *negated {
                    " IS NOT DISTINCT FROM "
                } else {
                    " IS DISTINCT FROM "
                });
                self.write(right);
                self.push(")");
            }
            Expr::InList {
                expr,
                list,
                ty,
                negated,
            } => {
                self.push("(");
                self.collated(expr, ty);
                self.push(if *negated { " NOT IN (" } else { " IN (" });
                self.list(list, ", ");
                self.push("))");
            }
            Expr::Quantified {
                op,
                left,
                right,
                ty,
                all,
            } => {
                self.push("(");
                self.collated(left, ty);
                self.push(&format!(
                    " {} {} (",
                    op.sql(),
                    if *all { "ALL" } else { "ANY" }
                ));
                self.write(right);
                self.push("))");
            }
            Expr::Like {
                expr,
                pattern,
                escape,
                case_insensitive,
                negated,
                ctype,
            } => {
                self.push("(");
                if *case_insensitive {
                    self.case_collated(expr, ctype);
                } else {
                    self.collated(expr, &SqlType::Text);
                }
                let op = match (*negated, *case_insensitive) {
                    (false, false) => " LIKE ",
                    (true, false) => " NOT LIKE ",
                    (false, true) => " ILIKE ",
                    (true, true) => " NOT ILIKE ",
                };
                self.push(op);
                self.constant(pattern);
                self.push(" ESCAPE ");
                let escape = escape.map(String::from).unwrap_or_default();
                if self.canonical {
                    self.push(&quote_literal(&escape));
                } else {
                    self.param(escape, "text");
                }
                self.push(")");
            }
            Expr::Arith {
                op,
                left,
                right,
                ty,
            } => self.arith(*op, ty, left, right),
            // a constant operand goes in parentheses: `- 1` would read back as the constant
            // `-1`, not as this negation (`- + 1`)
            Expr::Neg { expr, .. } if self.canonical && matches!(**expr, Expr::Const(_)) => {
                self.push("(- (");
                self.write(expr);
                self.push("))");
            }
            Expr::Neg { expr, .. } => {
                self.push("(- ");
                self.numeric_operand(expr);
                self.push(")");
            }
            Expr::DateTime {
                op,
                left,
                right,
                ty,
            } => self.datetime(*op, left, right, ty),
            Expr::Concat(a, b) => {
                self.push("(");
                self.write(a);
                self.push(" || ");
                self.write(b);
                self.push(")");
            }
            Expr::Func { func, arg, ctype } => {
                let name = match func {
                    Func::Lower => "lower",
                    Func::Upper => "upper",
                    Func::Length => "length",
                };
                if *func == Func::Length {
                    self.push(name);
                    self.push("(");
                    self.collated(arg, &SqlType::Text);
                    self.push(")");
                } else if self.canonical {
                    self.push(name);
                    self.push("(");
                    self.write(arg);
                    self.push(")");
                } else {
                    // the result says COLLATE "C" again: a COLLATE inside a function call
                    // carries over to its result, and two explicit collations in one
                    // comparison are an error
                    self.push("(");
                    self.push(name);
                    self.push("(");
                    self.case_collated(arg, ctype);
                    self.push(")) COLLATE \"C\"");
                }
            }
            Expr::Coalesce { args, .. } => {
                self.push("COALESCE(");
                self.list(args, ", ");
                self.push(")");
            }
            Expr::Cast { expr, from, to } => self.cast(expr, from, to),
            Expr::ArrayOp {
                op, left, right, ..
            } => {
                let op = match op {
                    ArrayOp::Contains => " @> ",
                    ArrayOp::ContainedBy => " <@ ",
                    ArrayOp::Overlaps => " && ",
                    ArrayOp::HasKey => " ? ",
                    ArrayOp::HasAnyKey => " ?| ",
                    ArrayOp::HasAllKeys => " ?& ",
                };
                self.push("(");
                self.write(left);
                self.push(op);
                self.write(right);
                self.push(")");
            }
            Expr::ArrayCtor { items, ty } => {
                self.push("ARRAY[");
                self.list(items, ", ");
                self.push(&format!("]::{}[]", ty.sql_name()));
            }
            Expr::JsonGet {
                expr,
                key,
                as_text,
                jsonb,
            } => self.json_get(expr, key, *as_text, *jsonb),
            Expr::InSubquery {
                exprs,
                subquery,
                negated,
                exists,
            } => self.in_subquery(exprs, *subquery, *negated, *exists),
        }
    }

    /// An arithmetic operand: integers go to numeric in SQL (no overflow).
    fn numeric_operand(&mut self, e: &Expr) {
        if !self.canonical && e.ty().is_integer() && !e.computed_in_numeric() {
            self.push("(");
            self.write(e);
            self.push(")::numeric");
        } else {
            self.write(e);
        }
    }

    fn arith(&mut self, op: ArithOp, ty: &SqlType, left: &Expr, right: &Expr) {
        // canonical text must read back as the same tree: integer `/` is `/` on integers and
        // `div()` on numeric
        let (prefix, mid, suffix) = match (op, self.canonical) {
            (ArithOp::IntDiv, true) if !ty.is_integer() => ("div(", ", ", ")"),
            (ArithOp::Div | ArithOp::IntDiv, true) => ("(", " / ", ")"),
            (ArithOp::Mod, true) => ("(", " % ", ")"),
            (op, _) => Self::sql_arith(op),
        };
        self.push(prefix);
        self.numeric_operand(left);
        self.push(mid);
        self.numeric_operand(right);
        self.push(suffix);
    }

    fn sql_arith(op: ArithOp) -> (&'static str, &'static str, &'static str) {
        match op {
            ArithOp::Add => ("(", " + ", ")"),
            ArithOp::Sub => ("(", " - ", ")"),
            ArithOp::Mul => ("(", " * ", ")"),
            ArithOp::Div => ("(", " / NULLIF(", ", 0))"),
            ArithOp::IntDiv => ("div(", ", NULLIF(", ", 0))"),
            ArithOp::Mod => ("mod(", ", NULLIF(", ", 0))"),
        }
    }

    fn cast(&mut self, expr: &Expr, from: &SqlType, to: &SqlType) {
        if !self.canonical && from.is_integer() && to.is_integer() && expr.computed_in_numeric() {
            // already numeric in SQL, and exact: a cast could only overflow
            self.write(expr);
            return;
        }
        if let (SqlType::Enum(e), false) = (from, self.canonical) {
            // enums are handled as positions in SQL; a label is looked up by position
            let labels = super::array_text::format_array(&super::array_text::ArrayText {
                dims: vec![(1, e.labels.len())],
                items: e.labels.iter().cloned().map(Some).collect(),
            });
            self.push("(");
            self.param(labels, "text[]");
            self.push(")[");
            self.write(expr);
            self.push("]");
            return;
        }
        if !self.canonical
            && matches!(
                (from, to),
                (SqlType::Timestamp, SqlType::Timestamptz)
                    | (SqlType::Timestamptz, SqlType::Timestamp)
            )
        {
            // UTC whatever the session's time zone, as the evaluator reads it
            self.push("((");
            self.write(expr);
            self.push(") AT TIME ZONE 'UTC')");
            return;
        }
        self.push("(");
        self.write(expr);
        self.push(&format!(")::{}", to.sql_name()));
    }

    /// Date and time arithmetic, guarded so that Postgres computes it exactly where the
    /// evaluator does and gives NULL elsewhere, never an error ([`dt`]).
    fn datetime(&mut self, op: DateTimeOp, left: &Expr, right: &Expr, ty: &SqlType) {
        let sign = match op {
            DateTimeOp::AddDays | DateTimeOp::AddInterval => " + ",
            _ => " - ",
        };
        if self.canonical {
            self.push("(");
            self.write(left);
            self.push(sign);
            self.write(right);
            self.push(")");
            return;
        }
        match op {
            DateTimeOp::AddDays | DateTimeOp::SubDays => {
                // strict, as Postgres' operators are: NULL days give NULL, infinity or not (and
                // the range test below is never reached with an infinite date)
                self.push("(CASE WHEN (");
                self.write(right);
                self.push(") IS NULL THEN NULL WHEN NOT isfinite(");
                self.write(left);
                self.push(") THEN ");
                self.write(left);
                self.push(" WHEN ((");
                self.write(left);
                self.push(") - DATE '2000-01-01')::int8");
                self.push(sign);
                self.push("(");
                self.write(right);
                self.push(&format!(
                    ")::int8 BETWEEN {} AND {} THEN (",
                    dt::MIN_DATE - dt::DAYS_1970_TO_2000,
                    dt::MAX_DATE - dt::DAYS_1970_TO_2000
                ));
                self.write(left);
                self.push(")");
                self.push(sign);
                self.push("(");
                self.write(right);
                self.push(") END)");
            }
            DateTimeOp::DateDiff => {
                self.push("(CASE WHEN isfinite(");
                self.write(left);
                self.push(") AND isfinite(");
                self.write(right);
                self.push(") THEN (");
                self.write(left);
                self.push(") - (");
                self.write(right);
                self.push(") END)");
            }
            DateTimeOp::AddInterval | DateTimeOp::SubInterval => {
                let guard = match right {
                    Expr::Const(c) => match &c.value {
                        Datum::Interval(iv) if op == DateTimeOp::SubInterval => {
                            IntervalGuard::for_interval(&dt::negated(iv))
                        }
                        Datum::Interval(iv) => IntervalGuard::for_interval(iv),
                        _ => IntervalGuard::for_interval(&Default::default()),
                    },
                    _ => IntervalGuard::for_interval(&Default::default()),
                };
                let bound = |micros: i64| {
                    super::datetime::format_timestamp(micros, *ty == SqlType::Timestamptz)
                };
                self.push("(CASE WHEN (");
                self.write(right);
                self.push(") IS NULL THEN NULL WHEN NOT isfinite(");
                self.write(left);
                self.push(") THEN ");
                self.write(left);
                self.push(" WHEN (");
                self.write(left);
                self.push(") BETWEEN ");
                self.param(bound(guard.lowest), &ty.sql_name());
                self.push(" AND ");
                self.param(bound(guard.highest), &ty.sql_name());
                self.push(" THEN ");
                // timestamptz arithmetic in UTC whatever the session's time zone
                let utc = *ty == SqlType::Timestamptz;
                self.push(if utc { "(((" } else { "((" });
                self.write(left);
                self.push(if utc { ") AT TIME ZONE 'UTC')" } else { ")" });
                self.push(sign);
                self.write(right);
                self.push(if utc {
                    ") AT TIME ZONE 'UTC' END)"
                } else {
                    ") END)"
                });
            }
        }
    }

    fn json_get(&mut self, doc: &Expr, key: &JsonKey, as_text: bool, jsonb: bool) {
        let guard = !jsonb && !self.canonical && !matches!(doc, Expr::JsonGet { .. });
        if guard {
            self.push("CASE WHEN strpos((");
            self.write(doc);
            self.push(&format!(
                ")::text, E'{}') = 0 THEN ",
                JSON_NUL_ESCAPE.replace('\\', "\\\\")
            ));
        }
        self.push("(");
        self.write(doc);
        self.push(if as_text { " ->> " } else { " -> " });
        match key {
            JsonKey::Field(f) => self.param(f.clone(), "text"),
            JsonKey::Index(i) => self.param(i.to_string(), "int4"),
        }
        self.push(")");
        if guard {
            self.push(" END");
        }
    }
}

/// The type Postgres gives a bare integer literal.
fn literal_type(i: i64) -> &'static str {
    if i32::try_from(i).is_ok() {
        "int4"
    } else {
        "int8"
    }
}
