//! Errors of the write path that fail a whole request (a mutation's own problems are
//! `rejected` results, not errors).

use crate::postgres::{self, DatabaseError};

#[derive(Debug, thiserror::Error)]
pub enum MutationError {
    /// Cannot reach Postgres (answered 503).
    #[error(transparent)]
    Connect(#[from] DatabaseError),
    #[error("query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// Another writer created a row or register this transaction believed absent; the
    /// transaction is retried.
    #[error("a row was created by a concurrent write")]
    ConcurrentCreate,
    /// A group of writes ran without savepoints (see `store`) and Postgres refused it for one
    /// row's data: the transaction is aborted and runs again with savepoints from that group
    /// (numbered in write order) on.
    #[error("a write needs savepoints to find the mutation at fault")]
    NeedsSavepoints { group: usize },
    /// An atomic batch ran out of savepoints without a rejection (possible only when the data
    /// changed between two runs of its transaction); the transaction is retried.
    #[error("an atomic batch ran out of savepoints")]
    OutOfSavepoints,
    /// Rows failed the batch's [`Precondition`](super::precondition::Precondition) and it
    /// aborts on that: nothing was written. `slots`: the batch positions that failed.
    #[error("{} rows changed on the server since the state the write assumed", slots.len())]
    Stale { slots: Vec<usize> },
    /// A bug: the state of the database contradicts what the write path just read.
    #[error("{0}")]
    Internal(String),
}

impl MutationError {
    /// Worth retrying the transaction: serialization failure, deadlock, a concurrent create,
    /// a lost connection.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect(err) => err.is_transient(),
            Self::Query(err) => postgres::is_transient(err),
            Self::ConcurrentCreate | Self::OutOfSavepoints => true,
            Self::NeedsSavepoints { .. } | Self::Stale { .. } | Self::Internal(_) => false,
        }
    }

    /// Postgres' tables changed under cached statements or cached table descriptions.
    pub fn is_schema_change(&self) -> bool {
        let Self::Query(err) = self else {
            return false;
        };
        err.code()
            .is_some_and(|code| is_schema_change_code(code.code()))
    }
}

/// SQLSTATEs of statements planned against tables (or cached descriptions) that have changed.
pub fn is_schema_change_code(sqlstate: &str) -> bool {
    matches!(sqlstate, "42703" | "42P01" | "0A000" | "42804" | "26000")
}
