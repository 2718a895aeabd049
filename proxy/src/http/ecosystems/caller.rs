//! Who is asking and what they may read: the caller's shape of a table, the same shape a
//! `/v1/shape` request for the whole table would get (its read rule's row filter, its readable
//! columns), with whole rows on every update (`replica=full`) so documents can be rebuilt
//! from the log alone.

use std::sync::Arc;

use axum::http::HeaderMap;
use shapes::definition::{LogMode, ReplicaMode};
use shapes::request::ShapeRequest;
use shapes::schema::{Column, QualifiedName, TableSchema};
use shapes::table_name::parse_table_name;

use crate::auth::Access;
use crate::http::AppState;
use crate::http::credentials::RequestCredentials;
use crate::http::error::ApiError;
use crate::read_path::ShapeError;
use crate::storage::shape_log::cursor::{Entries, Position};
use crate::storage::shape_store::Shape;

/// An authenticated request of one of the sync protocols.
pub struct Caller {
    pub access: Access,
}

impl Caller {
    /// 401 before anything else, as `/v1/shape` does.
    pub fn authenticate(
        state: &AppState,
        headers: &HeaderMap,
        query: &str,
    ) -> Result<Self, ApiError> {
        let access = RequestCredentials::of(headers, query).authenticate(&state.auth)?;
        Ok(Self { access })
    }

    /// A token's `sub`, for scoping mutation ids.
    pub fn subject(&self) -> Option<&str> {
        match &self.access {
            Access::Token(token) => token.subject(),
            Access::Open | Access::Secret => None,
        }
    }

    /// The table a path or parameter names, as the catalog has it (400 naming `param`).
    pub async fn table(
        &self,
        state: &AppState,
        param: &str,
        text: &str,
    ) -> Result<SyncedTable, ApiError> {
        let name = parse_table_name(text).map_err(|e| {
            ApiError::invalid(param, format!("{e}; expected `table` or `schema.table`"))
        })?;
        let table = state.shapes.table(&name).await.map_err(|e| {
            let mut err = ApiError::from(ShapeError::from(e));
            if let ApiError::Invalid(errors) = &mut err
                && let Some((_, messages)) = errors.pop_first()
            {
                errors.insert(param.to_owned(), messages);
            }
            err
        })?;
        let tombstone = state.settings.tombstone_column(&name).map(str::to_owned);
        Ok(SyncedTable {
            name,
            table,
            tombstone,
        })
    }

    /// The caller's shape of `table` (made on first use), ready to read.
    pub async fn shape(
        &self,
        state: &AppState,
        table: &QualifiedName,
    ) -> Result<Arc<Shape>, ApiError> {
        let mut request = ShapeRequest {
            table: table.clone(),
            where_: None,
            params: Default::default(),
            columns: None,
            replica: ReplicaMode::Full,
            log: LogMode::Full,
            moves: Default::default(),
            filter: None,
            inner_filters: Vec::new(),
        };
        if let Access::Token(token) = &self.access {
            let shapes = &state.shapes;
            token
                .scope_shape(&mut request, |name| async move {
                    shapes
                        .table(&name)
                        .await
                        .map_err(|e| ApiError::from(ShapeError::from(e)))
                })
                .await?;
        }
        state
            .shapes
            .shape_for_admitting(&request, || {
                state
                    .auth
                    .admit_new_shape(&self.access)
                    .map_err(ApiError::from)
            })
            .await
    }
}

/// A table as the sync protocols see it.
pub struct SyncedTable {
    pub name: QualifiedName,
    pub table: Arc<TableSchema>,
    /// The tombstone column (`--tombstones`): deleted documents, never a field of one.
    pub tombstone: Option<String>,
}

impl SyncedTable {
    /// The fields of documents: the columns `access` may read, but the tombstone.
    pub fn fields(&self, access: &Access) -> Vec<Column> {
        self.table
            .columns
            .iter()
            .filter(|c| !self.is_tombstone(&c.name))
            .filter(|c| match access {
                Access::Token(token) => token.can_read_column(&self.name, &c.name),
                Access::Open | Access::Secret => true,
            })
            .cloned()
            .collect()
    }

    /// The column a document field names; a 400 naming `field` when there is none.
    pub fn column(&self, field: &str, name: &str) -> Result<&Column, ApiError> {
        let table = &self.table;
        table
            .column_index(name)
            .map(|c| &table.columns[c])
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("{field}.{name}"),
                    format!(
                        "{} has no column {name:?}; remove the field from the client's schema",
                        self.name
                    ),
                )
            })
    }

    pub fn is_tombstone(&self, column: &str) -> bool {
        self.tombstone.as_deref() == Some(column)
    }
}

/// Whether a stored row (column → text) has its tombstone set.
pub fn tombstoned(
    tombstone: Option<&str>,
    row: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    tombstone.is_some_and(|t| row.get(t).is_some_and(|v| !v.is_null()))
}

/// Up to `max` entries of `shape` from `from`, read off the async threads. A position that is
/// not one of this shape is a 400 naming `param`.
pub async fn read_entries(
    shape: &Arc<Shape>,
    from: Position,
    max: usize,
    param: &str,
) -> Result<Entries, ApiError> {
    let reader = shape.clone();
    let read = tokio::task::spawn_blocking(move || reader.log.entries_from(from, max))
        .await
        .map_err(|e| ApiError::Internal(format!("reading shape {}: {e}", shape.handle)))?;
    read.map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => ApiError::invalid(
            param,
            format!("not a position of this shape ({e}); send null to start over"),
        ),
        _ => ApiError::Internal(format!("reading shape {}: {e}", shape.handle)),
    })
}
