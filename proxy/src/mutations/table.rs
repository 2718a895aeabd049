//! What the write path knows about a writable table: its columns and key from the catalog, and
//! the roles the configuration gives columns (LWW clock, tombstone, Yjs documents), from the
//! shared table catalog (proxy/ARCHITECTURE.md, "The table catalog").

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shapes::schema::{QualifiedName, TableSchema};
use tokio_postgres::Client;

use super::config::WriteConfig;
use super::wire::RefusalCode;
use crate::postgres::catalog::CatalogError;
use crate::postgres::table_catalog::{CatalogTable, TableCatalog};
use crate::tombstones::TombstoneSpec;

/// How long the write path trusts a catalog entry before reading the table again.
const FRESH_FOR: Duration = Duration::from_secs(10);

/// A table that accepts writes, with the role of each column.
#[derive(Debug, Clone)]
pub struct WritableTable {
    pub schema: TableSchema,
    /// Primary-key column positions, in key order.
    pub key: Vec<usize>,
    /// Per column, the type to cast client text to (`format_type` without modifier, so that
    /// assignment applies the modifier and a too-long value is an error, not a truncation).
    pub cast_types: Vec<String>,
    /// The last-write-wins column (timestamp or timestamptz), if the table has it.
    pub lww: Option<usize>,
    /// The tombstone column on tombstoned tables.
    pub tombstone: Option<usize>,
    /// Yjs document columns (bytea).
    pub yjs: Vec<usize>,
    /// Check constraints over one column, by name: Postgres names the constraint a row
    /// breaks, not its column.
    pub check_columns: HashMap<String, usize>,
}

/// What a client may do with a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRole {
    Key,
    /// An ordinary column, written by `values` under last-write-wins.
    Plain,
    /// Written by `merge` only.
    Yjs,
    /// Managed by shapesync (LWW clock, tombstone) or by Postgres (generated).
    ReadOnly(&'static str),
}

impl WritableTable {
    pub fn name(&self) -> &QualifiedName {
        &self.schema.name
    }

    pub fn column_name(&self, index: usize) -> &str {
        &self.schema.columns[index].name
    }

    pub fn role(&self, index: usize) -> ColumnRole {
        if self.key.contains(&index) {
            ColumnRole::Key
        } else if Some(index) == self.lww {
            ColumnRole::ReadOnly(
                "it is the last-write-wins clock, set from the mutation's timestamp",
            )
        } else if Some(index) == self.tombstone {
            ColumnRole::ReadOnly("it is the tombstone column, set by a delete")
        } else if self.schema.columns[index].generated {
            ColumnRole::ReadOnly("it is a generated column")
        } else if self.yjs.contains(&index) {
            ColumnRole::Yjs
        } else {
            ColumnRole::Plain
        }
    }

    /// Columns whose clocks the sidecar keeps: plain columns.
    pub fn lww_columns(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.schema.columns.len()).filter(|&i| self.role(i) == ColumnRole::Plain)
    }

    /// Builds the roles from a loaded schema; `None` for the tombstone column when the table is
    /// not tombstoned.
    pub fn new(
        schema: TableSchema,
        cast_types: Vec<String>,
        config: &WriteConfig,
        tombstone: Option<&str>,
    ) -> Result<Self, (RefusalCode, String)> {
        let key = schema.primary_key();
        if key.is_empty() {
            return Err((
                RefusalCode::NotWritable,
                format!(
                    "table {} has no primary key, which writes need to find rows; add one",
                    schema.name
                ),
            ));
        }
        let is_timestamp = |i: &usize| {
            let ty = &schema.columns[*i].ty.name;
            ty == "timestamptz" || ty == "timestamp"
        };
        let lww = schema.column_index(&config.lww_column).filter(is_timestamp);
        let tombstone = match tombstone {
            None => None,
            Some(column) => Some(
                schema
                    .column_index(column)
                    .filter(is_timestamp)
                    .ok_or_else(|| {
                        (
                            RefusalCode::NotWritable,
                            format!(
                                "table {} is configured with tombstone column {column}, which it \
                             lacks (or which is not a timestamp)",
                                schema.name
                            ),
                        )
                    })?,
            ),
        };
        let yjs = config
            .yjs_columns_of(&schema.name)
            .filter_map(|name| schema.column_index(name))
            .filter(|&i| schema.columns[i].ty.name == "bytea" && schema.columns[i].dims == 0)
            .collect();
        Ok(Self {
            schema,
            key,
            cast_types,
            lww,
            tombstone,
            yjs,
            check_columns: HashMap::new(),
        })
    }
}

/// The write path's door to the shared [`TableCatalog`]: an entry older than [`FRESH_FOR`] is
/// read again, because DDL shows in the replication stream only once a row of its table
/// changes, and a write must not be refused for a column added since.
///
/// The roles are derived once per catalog entry: a new entry (reloaded, or read after an
/// invalidation) derives them again; nothing here is invalidated on its own.
#[derive(Debug)]
pub struct TableCache {
    catalog: Arc<TableCatalog>,
    derived: Mutex<HashMap<QualifiedName, Derived>>,
}

/// The writable table built from one catalog entry.
type Derived = (Arc<CatalogTable>, Arc<WritableTable>);

impl TableCache {
    pub fn new(catalog: Arc<TableCatalog>) -> Self {
        Self {
            catalog,
            derived: Mutex::default(),
        }
    }

    /// The table, from the catalog. `Err` carries the refusal for mutations on it. A refusal
    /// is never made from a cached entry: the table is read again first (the refusal names a
    /// fix, such as adding the tombstone column, that no Relation message may show yet).
    pub async fn get(
        &self,
        client: &Client,
        name: &QualifiedName,
        config: &WriteConfig,
        tombstones: &[TombstoneSpec],
    ) -> Result<Result<Arc<WritableTable>, (RefusalCode, String)>, tokio_postgres::Error> {
        let cached = self.catalog.get_within(client, name, FRESH_FOR).await;
        let loaded = cached.is_ok();
        match self.writable(cached, name, config, tombstones)? {
            Err(_) if loaded => {
                let fresh = self.catalog.refresh(client, name).await;
                self.writable(fresh, name, config, tombstones)
            }
            ok => Ok(ok),
        }
    }

    fn writable(
        &self,
        table: Result<Arc<CatalogTable>, CatalogError>,
        name: &QualifiedName,
        config: &WriteConfig,
        tombstones: &[TombstoneSpec],
    ) -> Result<Result<Arc<WritableTable>, (RefusalCode, String)>, tokio_postgres::Error> {
        let table = match table {
            Ok(table) => table,
            Err(CatalogError::Query(err)) => return Err(err),
            Err(err @ CatalogError::UnknownTable(_)) => {
                return Ok(Err((RefusalCode::UnknownTable, err.to_string())));
            }
            Err(err @ (CatalogError::NotATable { .. } | CatalogError::Unlogged(_))) => {
                return Ok(Err((RefusalCode::NotWritable, err.to_string())));
            }
        };
        if let Some((from, writable)) = self.lock().get(name)
            && Arc::ptr_eq(from, &table)
        {
            return Ok(Ok(writable.clone()));
        }
        let tombstone = tombstones
            .iter()
            .find(|spec| &spec.table == name)
            .map(|spec| spec.column.as_str());
        Ok(WritableTable::new(
            table.schema.clone(),
            table.cast_types.clone(),
            config,
            tombstone,
        )
        .map(|mut writable| {
            writable.check_columns = table.checks.iter().cloned().collect();
            let writable = Arc::new(writable);
            self.lock()
                .insert(name.clone(), (table.clone(), writable.clone()));
            writable
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<QualifiedName, Derived>> {
        self.derived.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every table (after Postgres reported a schema mismatch).
    pub fn clear(&self) {
        self.catalog.invalidate_all();
    }
}
