//! `shape.json`: what a shape directory holds, enough to rebuild the shape after a restart.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};
use shapes::definition::{LogMode, ReplicaMode};
use shapes::wire::SnapshotInfo;

use crate::storage::shape_dir::{self, ShapeDir};

/// On-disk format version of shape directories; a proxy refuses (and rotates) others.
pub const FORMAT_VERSION: u32 = 1;

/// The request that defined a shape, as given (re-parsed against the catalog on restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeRequest {
    pub schema: String,
    pub table: String,
    #[serde(rename = "where")]
    pub where_: Option<String>,
    pub params: BTreeMap<usize, String>,
    pub columns: Option<String>,
    pub replica_full: bool,
    pub changes_only: bool,
    /// The row filter of the auth rules (claims bound), ANDed into `where`: part of the
    /// shape's identity, kept so a restart rebuilds the same shape. Never from the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<RowFilter>,
}

/// A server-side row filter: `where` text with `$n` placeholders and their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowFilter {
    #[serde(rename = "where")]
    pub where_: String,
    pub params: BTreeMap<usize, String>,
}

impl ShapeRequest {
    pub fn replica(&self) -> ReplicaMode {
        if self.replica_full {
            ReplicaMode::Full
        } else {
            ReplicaMode::Default
        }
    }

    pub fn log_mode(&self) -> LogMode {
        if self.changes_only {
            LogMode::ChangesOnly
        } else {
            LogMode::Full
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeMeta {
    pub format: u32,
    pub handle: String,
    pub request: ShapeRequest,
    pub created_micros: u64,
    /// Transactions with a commit LSN at or below this were decided before the shape existed
    /// (they are in its snapshot); the log starts after it.
    pub start_lsn: u64,
    pub chunk_bytes: u64,
    /// The `electric-schema` header when the shape was made; a different one after a restart
    /// means the table changed and the shape is rotated.
    pub schema_header: String,
    /// Set once the initial snapshot is complete.
    pub snapshot: Option<SnapshotInfo>,
    /// The WAL insert position right after the snapshot: every transaction it holds committed
    /// below it (absent in directories of earlier versions).
    #[serde(default)]
    pub snapshot_lsn: Option<u64>,
}

impl ShapeMeta {
    /// Writes atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &ShapeDir) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        shape_dir::replace_file(&dir.meta_file(), &bytes)
    }

    pub fn load(dir: &ShapeDir) -> io::Result<Self> {
        let bytes = std::fs::read(dir.meta_file())?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}
