//! Conditions on the rows a batch writes, checked inside its transaction once the rows are
//! locked and before anything is written: the server side of sync protocols that detect
//! conflicts by comparing states (RxDB's `assumedMasterState`, WatermelonDB's
//! `last_pulled_at`). `/v1/mutations` itself uses last-write-wins and sets none.

use std::collections::HashSet;

use futures_util::future::BoxFuture;
use shapes::schema::QualifiedName;

use super::error::MutationError;
use super::wire::RowJson;

/// The rows of one table a batch is about to write, as they are under its locks.
#[derive(Debug)]
pub struct LockedRow {
    /// The batch positions of the mutations of this row.
    pub slots: Vec<usize>,
    /// The row as stored now (column → text or null), `None` when there is no row.
    pub row: Option<RowJson>,
}

/// A condition a batch's rows must meet. A batch with one does not record its mutation ids
/// (its caller makes them one-off and recognises a retry by the precondition).
pub trait Precondition: Send + Sync {
    /// The batch positions among `rows` whose condition fails. Those mutations are not
    /// written: they are answered `conflict` with the current row and no `lost` columns, or,
    /// with [`Precondition::aborts`], the whole transaction is rolled back.
    fn stale<'a>(
        &'a self,
        table: &'a QualifiedName,
        rows: &'a [LockedRow],
    ) -> BoxFuture<'a, Result<HashSet<usize>, MutationError>>;

    /// Whether one failed condition aborts the batch ([`MutationError::Stale`], naming every
    /// failed position) instead of skipping only its rows.
    fn aborts(&self) -> bool {
        false
    }
}
