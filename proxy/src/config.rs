//! The proxy's configuration once flags, environment and defaults are resolved.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use shapes::schema::QualifiedName;
use shapes::table_name::{parse_table_with_column, reserved_table};

use crate::auth::config::AuthConfig;
use crate::mutations::WriteConfig;

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

/// `table` or `schema.table`, optionally `:column` (default `deleted_at`), as given to
/// `--tombstones`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TombstoneSpec {
    pub table: QualifiedName,
    pub column: String,
}

pub const DEFAULT_TOMBSTONE_COLUMN: &str = "deleted_at";

impl FromStr for TombstoneSpec {
    type Err = String;

    /// Names follow SQL's rules (`shapes::table_name`); the proxy's own and the system
    /// tables are refused, so a typo fails at start instead of at the first write.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (table, column) = parse_table_with_column(s, ':').map_err(|e| {
            format!("`{s}`: {e}; expected `table`, `schema.table` or `table:column`")
        })?;
        if let Some(reserved) = reserved_table(&table) {
            return Err(format!("`{s}`: {reserved}"));
        }
        Ok(Self {
            table,
            column: column.unwrap_or_else(|| DEFAULT_TOMBSTONE_COLUMN.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstone_specs_default_the_column_and_schema() {
        let spec: TombstoneSpec = "todos".parse().unwrap();
        assert_eq!(spec.table, QualifiedName::new("public", "todos"));
        assert_eq!(spec.column, "deleted_at");
        let spec: TombstoneSpec = "app.Notes:removed_at".parse().unwrap();
        assert_eq!(spec.table, QualifiedName::new("app", "notes"));
        assert_eq!(spec.column, "removed_at");
        assert!("todos:".parse::<TombstoneSpec>().is_err());
        assert!("".parse::<TombstoneSpec>().is_err());
        assert!("a b".parse::<TombstoneSpec>().is_err());
    }

    #[test]
    fn tombstone_specs_read_names_as_sql_does() {
        let spec: TombstoneSpec = "Ärger".parse().unwrap();
        assert_eq!(spec.table, QualifiedName::new("public", "Ärger"));
        let spec: TombstoneSpec = r#""My:Table":"Gone At""#.parse().unwrap();
        assert_eq!(spec.table, QualifiedName::new("public", "My:Table"));
        assert_eq!(spec.column, "Gone At");
    }

    #[test]
    fn tombstones_on_the_proxy_schema_or_a_catalog_are_refused() {
        let err = "shapesync.row_clocks".parse::<TombstoneSpec>().unwrap_err();
        assert!(err.contains("belongs to shapesync itself"), "{err}");
        let err = "pg_catalog.pg_class:relname"
            .parse::<TombstoneSpec>()
            .unwrap_err();
        assert!(err.contains("system schema"), "{err}");
    }
}
