//! The read path's readiness, as `GET /v1/health` reports it. The read path sets it (it knows
//! whether the replication stream is up); the HTTP layer only reads it.

/// Whether the proxy serves shapes yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Restoring shapes and connecting to Postgres for the first time.
    Starting,
    /// The replication stream is down (database unreachable); it reconnects by itself.
    Waiting,
    /// Streaming: shapes are served.
    Active,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Waiting => "waiting",
            Self::Active => "active",
        }
    }
}
