//! Per-request write permissions beyond `--writable` (the auth rules of a token).
//!
//! Decided in three places: before the table is looked up, per mutation (its table and op:
//! [`WriteGuard::admit_op`], so a table the guard does not know gets the same answer whether
//! or not it exists); before the mutation is validated (the columns it writes:
//! [`WriteGuard::admit_columns`], so a column the guard hides gets the same answer as one the
//! table lacks, and no validation message describes what the guard hides); and inside the
//! transaction, per row, with the table's [`WriteGuard::row_check`]: the row as locked before
//! the mutation, and the row as written (`RETURNING`, after defaults and triggers), must both
//! satisfy it, or the mutation is rejected `forbidden` and its write is undone. So a write can
//! neither touch a row it may not write nor leave one behind.

use shapes::schema::QualifiedName;
use shapes::where_clause::WhereClause;

use super::table::WritableTable;
use super::wire::{Mutation, Op, Outcome, RefusalCode};

/// What a request may write.
pub trait WriteGuard: Send + Sync {
    /// Whether `op` may be made on `table` at all; `Err`: why not.
    fn admit_op(&self, table: &QualifiedName, op: Op) -> Result<(), String>;

    /// Whether every column `mutation` sets or merges may be written (the key only names
    /// the row); `Err`: why not, naming only columns the mutation gives or may write.
    fn admit_columns(&self, table: &WritableTable, mutation: &Mutation) -> Result<(), String>;

    /// Whether a message to this request may name `column` of `table`.
    fn shows_column(&self, table: &QualifiedName, column: &str) -> bool;

    /// The tables the subqueries of `table`'s write check read (their schemas are needed to
    /// parse it).
    fn check_tables(&self, table: &QualifiedName) -> Vec<QualifiedName>;

    /// The condition rows of `table` must meet before and after a write (`None`: none);
    /// `Err`: why the table cannot be written at all. `others` gives the schemas of the
    /// tables its subqueries read.
    fn row_check(
        &self,
        table: &WritableTable,
        others: &dyn Fn(&QualifiedName) -> Option<std::sync::Arc<shapes::schema::TableSchema>>,
    ) -> Result<Option<WhereClause>, String>;
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
