//! Type checking of the jsonb key operators `?`, `?|`, `?&` (containment and equality are
//! checked with the array operators and comparisons in [`super::check_ops`]).

use sqlparser::ast::Expr as SqlExpr;

use super::ast::{ArrayOp, Expr};
use super::error::WhereError;
use super::typecheck::{Checked, Checker, implicit_cast};
use super::types::SqlType;

impl Checker<'_> {
    /// jsonb `?` text, `?|` text[], `?&` text[].
    pub(crate) fn jsonb_key_op(
        &mut self,
        op: ArrayOp,
        l: &SqlExpr,
        r: &SqlExpr,
    ) -> Result<Expr, WhereError> {
        let doc = match self.check(l)? {
            Checked::Typed(e) if e.ty() == SqlType::Jsonb => e,
            c @ Checked::Unknown { .. } => self.coerce(c, &SqlType::Jsonb)?,
            Checked::Typed(e) => {
                return Err(WhereError::invalid(format!(
                    "?, ?| and ?& need jsonb, not {}",
                    e.ty()
                )));
            }
        };
        let key_ty = if op == ArrayOp::HasKey {
            SqlType::Text
        } else {
            SqlType::Array(Box::new(SqlType::Text))
        };
        let key = match self.check(r)? {
            c @ Checked::Unknown { .. } => self.coerce(c, &key_ty)?,
            Checked::Typed(e) => implicit_cast(e, &key_ty)?,
        };
        Ok(Expr::ArrayOp {
            op,
            left: Box::new(doc),
            right: Box::new(key),
            ty: SqlType::Jsonb,
        })
    }
}
