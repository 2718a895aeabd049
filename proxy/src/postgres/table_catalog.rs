//! The one cache of table metadata, consulted by the read path (shapes) and the write path
//! (mutations) alike (proxy/ARCHITECTURE.md, "The table catalog").
//!
//! An entry is dropped when the replication stream shows the table's columns changed, when a
//! write fails with a schema-change SQLSTATE, and replaced when a reader refreshes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shapes::schema::{QualifiedName, TableSchema};
use tokio_postgres::Client;

use super::catalog::{self, CatalogError};

/// A table as the catalog had it when last read.
#[derive(Debug)]
pub struct CatalogTable {
    /// Every column, generated ones included (the write path names them to refuse writes).
    pub schema: TableSchema,
    /// The columns shapes serve: all but generated ones, which pgoutput (before Postgres 16)
    /// does not send, so a shape could never keep them current.
    pub replicated: Arc<TableSchema>,
    /// Per column of `schema`, the type to cast client text to (see
    /// [`catalog::LoadedColumns`]).
    pub cast_types: Vec<String>,
    /// Check constraints over one column: (constraint name, column position in `schema`).
    /// Postgres names the constraint a row breaks, not its column.
    pub checks: Vec<(String, usize)>,
    loaded: Instant,
}

impl CatalogTable {
    fn new(loaded: catalog::LoadedColumns) -> Self {
        Self {
            replicated: Arc::new(replicated_columns(loaded.schema.clone())),
            schema: loaded.schema,
            cast_types: loaded.cast_types,
            checks: loaded.checks,
            loaded: Instant::now(),
        }
    }
}

/// The table without its generated columns.
pub fn replicated_columns(mut table: TableSchema) -> TableSchema {
    table.columns.retain(|c| !c.generated);
    table
}

#[derive(Debug, Default)]
pub struct TableCatalog {
    tables: Mutex<HashMap<QualifiedName, Arc<CatalogTable>>>,
}

impl TableCatalog {
    /// The cached entry, however old.
    pub fn cached(&self, name: &QualifiedName) -> Option<Arc<CatalogTable>> {
        self.lock().get(name).cloned()
    }

    /// The cached entry, or the table read from the catalog (and cached).
    pub async fn get(
        &self,
        client: &Client,
        name: &QualifiedName,
    ) -> Result<Arc<CatalogTable>, CatalogError> {
        match self.cached(name) {
            Some(table) => Ok(table),
            None => self.refresh(client, name).await,
        }
    }

    /// The cached entry if it was read less than `max_age` ago, else a fresh read.
    pub async fn get_within(
        &self,
        client: &Client,
        name: &QualifiedName,
        max_age: Duration,
    ) -> Result<Arc<CatalogTable>, CatalogError> {
        match self.cached(name) {
            Some(table) if table.loaded.elapsed() < max_age => Ok(table),
            _ => self.refresh(client, name).await,
        }
    }

    /// Reads the table again and replaces its entry, for every reader. A table that is gone
    /// (or no longer a table) loses its entry. A table without a primary key is not kept:
    /// both paths refuse it, and the fix their refusals name (`ADD PRIMARY KEY`) changes no
    /// column, so no Relation message would drop the entry.
    pub async fn refresh(
        &self,
        client: &Client,
        name: &QualifiedName,
    ) -> Result<Arc<CatalogTable>, CatalogError> {
        match catalog::load_columns(client, name).await {
            Ok(loaded) => {
                let table = Arc::new(CatalogTable::new(loaded));
                let mut tables = self.lock();
                if table.schema.primary_key().is_empty() {
                    tables.remove(name);
                } else {
                    tables.insert(name.clone(), table.clone());
                }
                Ok(table)
            }
            Err(err) => {
                if !matches!(err, CatalogError::Query(_)) {
                    self.invalidate(name);
                }
                Err(err)
            }
        }
    }

    /// Forgets a table (the replication stream shows its columns changed).
    pub fn invalidate(&self, name: &QualifiedName) {
        self.lock().remove(name);
    }

    /// Forgets every table (a write failed with a schema-change SQLSTATE, which does not say
    /// which table changed).
    pub fn invalidate_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<QualifiedName, Arc<CatalogTable>>> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}
