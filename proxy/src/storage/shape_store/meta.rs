//! `shape.json`: what a shape directory holds, enough to rebuild the shape after a restart.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};
use shapes::definition::{LogMode, MoveMode, ReplicaMode};
use shapes::lsn::Lsn;
use shapes::request::{RowFilter, ShapeRequest};
use shapes::schema::QualifiedName;
use shapes::wire::SnapshotInfo;

use crate::storage::shape_dir::{self, ShapeDir};

/// On-disk format version of shape directories; a proxy refuses (and rotates) others.
pub const FORMAT_VERSION: u32 = 1;

/// The request that defined a shape, as `shape.json` keeps it (re-parsed against the catalog on
/// restart). The serialized form of [`ShapeRequest`]: its fields and their JSON are the
/// on-disk format, and change only with [`FORMAT_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRequest {
    pub schema: String,
    pub table: String,
    #[serde(rename = "where")]
    pub where_: Option<String>,
    pub params: BTreeMap<usize, String>,
    pub columns: Option<String>,
    pub replica_full: bool,
    pub changes_only: bool,
    /// `moves=events` (Electric's move events instead of inserts and deletes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub move_events: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<StoredFilter>,
    /// The row filters of the tables its subqueries read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inner_filters: Vec<StoredInnerFilter>,
}

/// The row filter of a table a shape's subqueries read, in `shape.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInnerFilter {
    pub schema: String,
    pub table: String,
    #[serde(rename = "where")]
    pub where_: String,
    pub params: BTreeMap<usize, String>,
}

/// A [`RowFilter`] in `shape.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFilter {
    #[serde(rename = "where")]
    pub where_: String,
    pub params: BTreeMap<usize, String>,
}

impl From<&ShapeRequest> for StoredRequest {
    fn from(request: &ShapeRequest) -> Self {
        Self {
            schema: request.table.schema.clone(),
            table: request.table.name.clone(),
            where_: request.where_.clone(),
            params: request.params.clone(),
            columns: request.columns.clone(),
            replica_full: request.replica == ReplicaMode::Full,
            changes_only: request.log == LogMode::ChangesOnly,
            move_events: request.moves == MoveMode::Events,
            filter: request.filter.as_ref().map(|filter| StoredFilter {
                where_: filter.where_.clone(),
                params: filter.params.clone(),
            }),
            inner_filters: request
                .inner_filters
                .iter()
                .map(|(table, filter)| StoredInnerFilter {
                    schema: table.schema.clone(),
                    table: table.name.clone(),
                    where_: filter.where_.clone(),
                    params: filter.params.clone(),
                })
                .collect(),
        }
    }
}

impl From<&StoredRequest> for ShapeRequest {
    fn from(stored: &StoredRequest) -> Self {
        Self {
            table: QualifiedName::new(stored.schema.clone(), stored.table.clone()),
            where_: stored.where_.clone(),
            params: stored.params.clone(),
            columns: stored.columns.clone(),
            replica: if stored.replica_full {
                ReplicaMode::Full
            } else {
                ReplicaMode::Default
            },
            log: if stored.changes_only {
                LogMode::ChangesOnly
            } else {
                LogMode::Full
            },
            moves: if stored.move_events {
                MoveMode::Events
            } else {
                MoveMode::Rows
            },
            filter: stored.filter.as_ref().map(|filter| RowFilter {
                where_: filter.where_.clone(),
                params: filter.params.clone(),
            }),
            inner_filters: stored
                .inner_filters
                .iter()
                .map(|f| {
                    (
                        QualifiedName::new(f.schema.clone(), f.table.clone()),
                        RowFilter {
                            where_: f.where_.clone(),
                            params: f.params.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One column as a shape reads it, kept in `shape.json` so that a restart can tell whether
/// the column changed while the proxy was down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_mod: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeMeta {
    pub format: u32,
    pub handle: String,
    pub request: StoredRequest,
    pub created_micros: u64,
    /// Transactions with a commit LSN at or below this were decided before the shape existed
    /// (they are in its snapshot); the log starts after it.
    #[serde(with = "lsn_number")]
    pub start_lsn: Lsn,
    pub chunk_bytes: u64,
    /// The `electric-schema` header when the shape was made; a different one after a restart
    /// means the table changed and the shape is rotated.
    pub schema_header: String,
    /// Set once the initial snapshot is complete.
    pub snapshot: Option<SnapshotInfo>,
    /// The WAL insert position right after the snapshot: every transaction it holds committed
    /// below it (absent in directories of earlier versions).
    #[serde(default, with = "optional_lsn_number")]
    pub snapshot_lsn: Option<Lsn>,
    /// The table's `pg_class.oid`: a table dropped and made again under the same name while
    /// the proxy was down is another table (absent in directories of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_oid: Option<u32>,
    /// The columns the shape reads (selected, in its `where`, key, tombstone) and their types
    /// when it was made: a change of any of them while the proxy was down rotates it, a change
    /// of any other column does not (absent in directories of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_columns: Option<Vec<ReadColumn>>,
}

/// LSNs in `shape.json` are JSON numbers.
mod lsn_number {
    use serde::{Deserialize, Deserializer, Serializer};
    use shapes::lsn::Lsn;

    pub fn serialize<S: Serializer>(lsn: &Lsn, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(lsn.as_u64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Lsn, D::Error> {
        u64::deserialize(deserializer).map(Lsn)
    }
}

mod optional_lsn_number {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use shapes::lsn::Lsn;

    pub fn serialize<S: Serializer>(lsn: &Option<Lsn>, serializer: S) -> Result<S::Ok, S::Error> {
        lsn.map(Lsn::as_u64).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Lsn>, D::Error> {
        Option::<u64>::deserialize(deserializer).map(|lsn| lsn.map(Lsn))
    }
}

impl ShapeMeta {
    /// Writes atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &ShapeDir) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        shape_dir::replace_file(&dir.meta_file(), &bytes)
    }

    /// Writes atomically (temporary file, rename) without an fsync. For a new shape, once the
    /// files it vouches for are durable: a `shape.json` that a power loss takes or tears only
    /// drops its shape at the next start (its clients refetch), never serves it incomplete.
    pub fn save_unsynced(&self, dir: &ShapeDir) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        shape_dir::PendingFile::write(&dir.meta_file(), &bytes)?.install()
    }

    pub fn load(dir: &ShapeDir) -> io::Result<Self> {
        let bytes = std::fs::read(dir.meta_file())?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shape.json` of earlier versions restores: its request reads into the domain type and
    /// writes back byte for byte.
    #[test]
    fn stored_requests_round_trip_byte_for_byte() {
        let with_filter = r#"{
  "schema": "My Schema",
  "table": "items",
  "where": "a = $1",
  "params": {
    "1": "x",
    "2": "y"
  },
  "columns": "id,a",
  "replica_full": true,
  "changes_only": false,
  "filter": {
    "where": "owner = $1",
    "params": {
      "1": "alice"
    }
  }
}"#;
        let plain = r#"{
  "schema": "public",
  "table": "t",
  "where": null,
  "params": {},
  "columns": null,
  "replica_full": false,
  "changes_only": true
}"#;
        for text in [with_filter, plain] {
            let stored: StoredRequest = serde_json::from_str(text).unwrap();
            let request = ShapeRequest::from(&stored);
            let again = serde_json::to_string_pretty(&StoredRequest::from(&request)).unwrap();
            assert_eq!(again, text);
        }
        let stored: StoredRequest = serde_json::from_str(with_filter).unwrap();
        let request = ShapeRequest::from(&stored);
        assert_eq!(request.table, QualifiedName::new("My Schema", "items"));
        assert_eq!(
            (request.replica, request.log),
            (ReplicaMode::Full, LogMode::Full)
        );
        assert_eq!(request.filter.unwrap().params[&1], "alice");
    }

    /// A whole `shape.json` reads into typed LSNs and writes back byte for byte; one without
    /// `snapshot_lsn` (written by earlier versions) reads as `None`.
    #[test]
    fn shape_json_round_trips_byte_for_byte() {
        let text = r#"{
  "format": 1,
  "handle": "0000000000000abc-1700000000000000",
  "request": {
    "schema": "public",
    "table": "t",
    "where": null,
    "params": {},
    "columns": null,
    "replica_full": false,
    "changes_only": false
  },
  "created_micros": 1700000000000000,
  "start_lsn": 24155000,
  "chunk_bytes": 10485760,
  "schema_header": "{}",
  "snapshot": {
    "xmin": 755,
    "xmax": 757,
    "xip": [
      756
    ]
  },
  "snapshot_lsn": 24155104
}"#;
        let meta: ShapeMeta = serde_json::from_str(text).unwrap();
        assert_eq!(
            (meta.start_lsn, meta.snapshot_lsn),
            (Lsn(24_155_000), Some(Lsn(24_155_104)))
        );
        assert_eq!(serde_json::to_string_pretty(&meta).unwrap(), text);
        let earlier = text.replace(",\n  \"snapshot_lsn\": 24155104", "");
        assert_ne!(earlier, text);
        let meta: ShapeMeta = serde_json::from_str(&earlier).unwrap();
        assert_eq!(meta.snapshot_lsn, None);
    }
}
