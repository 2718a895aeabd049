//! Per-request write permissions beyond `--writable` (the auth rules of a token).
//!
//! Decided in two places: before the transaction, per mutation (its op and the columns it
//! writes: [`WriteGuard::admit`]); and inside it, per row, with the table's
//! [`WriteGuard::row_check`]: the row as locked before the mutation, and the row as written
//! (`RETURNING`, after defaults and triggers), must both satisfy it, or the mutation is
//! rejected `forbidden` and its write is undone. So a write can neither touch a row it may
//! not write nor leave one behind.

use shapes::where_clause::WhereClause;

use super::table::WritableTable;
use super::validate::ValidMutation;
use super::wire::{Outcome, RefusalCode};

/// What a request may write.
pub trait WriteGuard: Send + Sync {
    /// Whether `mutation` may be made at all; `Err`: why not.
    fn admit(&self, table: &WritableTable, mutation: &ValidMutation) -> Result<(), String>;

    /// The condition rows of `table` must meet before and after a write (`None`: none);
    /// `Err`: why the table cannot be written at all.
    fn row_check(&self, table: &WritableTable) -> Result<Option<WhereClause>, String>;
}

/// The result of a mutation the guard refused.
pub fn forbidden(message: impl Into<String>) -> Outcome {
    Outcome::rejected(RefusalCode::Forbidden, None, message)
}

/// Why a row failed the check: before the write (someone else's row) or after it.
pub fn check_failed(table: &WritableTable, after: bool) -> String {
    if after {
        format!(
            "the rules of {} do not allow this write: the row it would leave fails their check",
            table.name()
        )
    } else {
        format!(
            "the rules of {} do not allow writing this row: it fails their check",
            table.name()
        )
    }
}
