//! Tables as shapes see them: the shared [`TableCatalog`]'s entry without generated columns,
//! refused when it has no primary key.

use std::sync::Arc;

use shapes::schema::{QualifiedName, TableSchema};

use crate::postgres::catalog::CatalogError;
use crate::postgres::table_catalog::TableCatalog;
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

/// The read path's door to the catalog.
#[derive(Debug)]
pub struct TableCache {
    catalog: Arc<TableCatalog>,
}

impl TableCache {
    pub fn new(catalog: Arc<TableCatalog>) -> Self {
        Self { catalog }
    }

    pub async fn get(
        &self,
        metadata: &MetadataClient,
        name: &QualifiedName,
    ) -> Result<Arc<TableSchema>, TableError> {
        let table = match self.catalog.cached(name) {
            Some(table) => table,
            None => {
                let client = metadata.get().await?;
                self.catalog.get(&client, name).await?
            }
        };
        if table.replicated.primary_key().is_empty() {
            return Err(TableError::NoPrimaryKey(name.clone()));
        }
        Ok(table.replicated.clone())
    }

    /// Forgets a table (its schema changed).
    pub fn invalidate(&self, name: &QualifiedName) {
        self.catalog.invalidate(name);
    }
}
