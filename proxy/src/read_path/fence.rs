//! Fences: a position every earlier commit is before, and waiting until the read path has
//! processed it (`GET /v1/lsn`, and reopening a stream closed for idleness).
//!
//! A fence is an empty transactional logical message
//! (`pg_logical_emit_message(true, 'shapesync.fence', '')`). Every transaction committed before
//! it has its commit record before the fence, and the replication stream delivers transactions
//! in commit order, so once the fence's transaction is processed every shape log holds all of
//! them. Why not `pg_current_wal_lsn()`: the proxy advances `global_last_seen_lsn` to the commit
//! LSN of the transactions it processes, and the WAL position is usually past the last of them
//! (its commit record's end, checkpoints, hint bits), so waiting for it would wait until some
//! unrelated write came along. The fence is a transaction the proxy is sure to see at once.

use std::time::Duration;

use shapes::lsn::Lsn;
use tokio_util::sync::CancellationToken;

use super::Shapes;

/// The prefix of the fence messages (the consumer ignores logical messages).
pub const FENCE_PREFIX: &str = "shapesync.fence";

/// Why no fence could be written.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
    /// A standby (recovery), a role without the right, a lost connection.
    #[error("the database refused the fence: {0}")]
    Refused(String),
    #[error("the fence LSN: {0}")]
    Unreadable(String),
}

impl Shapes {
    /// Writes a fence; returns its position.
    pub async fn emit_fence(&self) -> Result<Lsn, FenceError> {
        let client = self
            .metadata
            .get()
            .await
            .map_err(|e| FenceError::Unreachable(e.to_string()))?;
        let row = client
            .query_one(
                "SELECT pg_logical_emit_message(true, $1, '')::text",
                &[&FENCE_PREFIX],
            )
            .await
            .map_err(|e| FenceError::Refused(crate::postgres::describe(&e)))?;
        let text: String = row
            .try_get(0)
            .map_err(|e| FenceError::Unreadable(e.to_string()))?;
        text.parse()
            .map_err(|e| FenceError::Unreadable(format!("{e}")))
    }

    /// Waits until the read path has processed `lsn`, at most `timeout` or until `cancel`.
    pub async fn processed(&self, lsn: Lsn, timeout: Duration, cancel: &CancellationToken) -> bool {
        let mut seen = self.watch_last_seen();
        tokio::select! {
            r = tokio::time::timeout(timeout, seen.wait_for(|l| *l >= lsn)) => matches!(r, Ok(Ok(_))),
            () = cancel.cancelled() => false,
        }
    }
}
