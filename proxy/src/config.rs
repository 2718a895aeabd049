//! The proxy's configuration once flags, environment and defaults are resolved.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shapes::schema::QualifiedName;

use crate::auth::config::AuthConfig;
use crate::mutations::WriteConfig;
use crate::tombstones::TombstoneSpec;

/// Everything the proxy needs to run (`serve`, and `dev` once its cluster is up).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub database_url: String,
    pub listen: SocketAddr,
    pub storage_dir: PathBuf,
    /// Logical replication slot (created if missing).
    pub slot: String,
    /// Publication the slot streams (created if missing; tables join on first use).
    pub publication: String,
    /// Tables whose rows are soft-deleted, and their tombstone column.
    pub tombstones: Vec<TombstoneSpec>,
    /// The write path (`POST /v1/mutations`).
    pub writes: WriteConfig,
    /// `?secret=`: full access (server to server). With it or JWT auth, every request must
    /// authenticate.
    pub secret: Option<String>,
    /// JWT bearer tokens, rules and per-token limits.
    pub auth: AuthConfig,
    pub long_poll_timeout: Duration,
    pub sse_timeout: Duration,
    /// `max-age` of non-live responses after the first (`offset=-1` has its own).
    pub cache_max_age: Duration,
    /// `stale-while-revalidate` of the same responses.
    pub cache_stale_age: Duration,
    /// Shape logs are split into chunks of about this many bytes.
    pub chunk_bytes: u64,
    /// Most shapes kept; the least recently used is evicted beyond.
    pub max_shapes: usize,
    pub max_concurrent_snapshots: usize,
    /// `lock_timeout` for adding a table to the publication.
    pub lock_timeout: Duration,
    /// An ERROR is logged while the slot retains more WAL than this.
    pub max_lag_bytes: u64,
    /// Listen with `SO_REUSEPORT` (a rolling deploy on one host).
    pub reuse_port: bool,
    /// Close the replication connection after this long idle (reopened on demand).
    pub replication_idle_timeout: Option<Duration>,
    /// Serve the operator's status page (`GET /`, `/v1/status`, `/v1/status/stream`).
    pub status_page: bool,
    /// Compact a shape log once this many bytes of history piled up after its compacted
    /// range (and at least as many as it keeps); `None`: never.
    pub compact_after: Option<u64>,
}

impl ServeConfig {
    /// Defaults for everything but the database and where to listen.
    pub fn new(database_url: String, listen: SocketAddr, storage_dir: PathBuf) -> Self {
        Self {
            database_url,
            listen,
            storage_dir,
            slot: "shapesync".to_owned(),
            publication: "shapesync".to_owned(),
            tombstones: Vec::new(),
            writes: WriteConfig::default(),
            secret: None,
            auth: AuthConfig::default(),
            long_poll_timeout: Duration::from_secs(20),
            sse_timeout: Duration::from_secs(60),
            cache_max_age: Duration::from_secs(60),
            cache_stale_age: Duration::from_secs(300),
            chunk_bytes: 10 * 1024 * 1024,
            max_shapes: 100_000,
            max_concurrent_snapshots: 4,
            lock_timeout: Duration::from_secs(5),
            max_lag_bytes: 1 << 30,
            reuse_port: false,
            replication_idle_timeout: None,
            status_page: true,
            // `--compact-after`'s default.
            compact_after: Some(16 << 20),
        }
    }

    /// The tombstone column of `table`, if it is a tombstoned table.
    pub fn tombstone_column(&self, table: &QualifiedName) -> Option<&str> {
        self.tombstones
            .iter()
            .find(|spec| &spec.table == table)
            .map(|spec| spec.column.as_str())
    }
}
