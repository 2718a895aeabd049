//! Tables as shapes see them: read from the catalog once, cached until the replication stream
//! says the table changed.
//!
//! Generated columns are left out: pgoutput (before Postgres 16) does not send them, so a
//! shape could never keep them current.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shapes::schema::{QualifiedName, TableSchema};

use crate::postgres::catalog::{self, CatalogError};
use crate::postgres::{DatabaseError, MetadataClient};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// Rows are keyed by their primary key: without one, two equal rows would share a key
    /// and a client would show one where Postgres has two.
    #[error(
        "table {0} has no primary key, which shapes need to tell rows apart (two identical \
         rows would be one row on the client); add one: ALTER TABLE {0} ADD PRIMARY KEY \
         (column, …)"
    )]
    NoPrimaryKey(QualifiedName),
}

#[derive(Debug, Default)]
pub struct TableCache {
    tables: Mutex<HashMap<QualifiedName, Arc<TableSchema>>>,
}

impl TableCache {
    pub async fn get(
        &self,
        metadata: &MetadataClient,
        name: &QualifiedName,
    ) -> Result<Arc<TableSchema>, TableError> {
        if let Some(table) = self.lookup(name) {
            return Ok(table);
        }
        let client = metadata.get().await?;
        let table = Arc::new(replicated_columns(
            catalog::load_table(&client, name).await?,
        ));
        if table.primary_key().is_empty() {
            return Err(TableError::NoPrimaryKey(name.clone()));
        }
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), table.clone());
        Ok(table)
    }

    fn lookup(&self, name: &QualifiedName) -> Option<Arc<TableSchema>> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Forgets a table (its schema changed).
    pub fn invalidate(&self, name: &QualifiedName) {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// The table without its generated columns.
pub fn replicated_columns(mut table: TableSchema) -> TableSchema {
    table.columns.retain(|c| !c.generated);
    table
}
