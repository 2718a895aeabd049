//! `push`: RxDB's conflict rule, checked on the locked rows in the write transaction.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value};
use shapes::schema::{Column, QualifiedName};

use super::{Collection, DELETED, INTERNAL};
use crate::http::AppState;
use crate::http::ecosystems::caller::{Caller, tombstoned};
use crate::http::ecosystems::values::{self, JsonColumns};
use crate::http::ecosystems::writes::{self, PushFailure, Write};
use crate::http::ecosystems::{no_store, parse_body, query};
use crate::http::error::ApiError;
use crate::mutations::MutationError;
use crate::mutations::precondition::{LockedRow, Precondition};
use crate::mutations::wire::{Op, Outcome};

/// One row of a push, as RxDB sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PushRow {
    #[serde(default)]
    assumed_master_state: Option<Map<String, Value>>,
    new_document_state: Map<String, Value>,
}

/// RxDB's conflict rule on the locked rows: the master must be what the client assumed.
struct AssumedMaster {
    tombstone: Option<String>,
    /// Per row of the push: the state the client assumed.
    assumed: Vec<Option<Map<String, Value>>>,
    /// Batch position → row of the push.
    rows: Vec<usize>,
    columns: Vec<Column>,
}

impl AssumedMaster {
    fn stale_row(&self, index: usize, master: Option<&Map<String, Value>>) -> bool {
        let master_deleted = master.is_none_or(|row| tombstoned(self.tombstone.as_deref(), row));
        let Some(assumed) = &self.assumed[index] else {
            // An insert: a conflict when the row exists.
            return !master_deleted;
        };
        let assumed_deleted = assumed
            .get(DELETED)
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if assumed_deleted || master_deleted {
            return assumed_deleted != master_deleted;
        }
        let Some(master) = master else {
            return true;
        };
        let doc = values::document(&self.columns, master, JsonColumns::Parsed);
        assumed
            .iter()
            .filter(|(name, _)| name.as_str() != DELETED && !INTERNAL.contains(&name.as_str()))
            .any(|(name, value)| !doc.get(name).is_some_and(|m| values::same_value(m, value)))
    }
}

impl Precondition for AssumedMaster {
    fn stale<'a>(
        &'a self,
        _table: &'a QualifiedName,
        rows: &'a [LockedRow],
    ) -> BoxFuture<'a, Result<HashSet<usize>, MutationError>> {
        Box::pin(async move {
            Ok(rows
                .iter()
                .flat_map(|row| row.slots.iter().map(move |&slot| (slot, row.row.as_ref())))
                .filter(|(slot, master)| self.stale_row(self.rows[*slot], *master))
                .map(|(slot, _)| slot)
                .collect())
        })
    }
}

/// POST `/v1/rxdb/{table}/push`: `[{assumedMasterState?, newDocumentState}]` → the master
/// documents of the rows in conflict (`[]` when none).
pub(in crate::http::ecosystems) async fn push(
    State(state): State<AppState>,
    Path(table): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = query.as_deref().unwrap_or("");
    let caller = Caller::authenticate(&state, &headers, query)?;
    query::parse(query, &[])?;
    let body = body.map_err(|r| {
        ApiError::invalid("body", format!("cannot read the body: {}", r.body_text()))
    })?;
    let rows: Vec<PushRow> = parse_body(&body)?;
    let collection = Collection::of(&state, &caller, &table).await?;
    let writes = rows
        .iter()
        .enumerate()
        .map(|(i, row)| write_of(&collection, i, row))
        .collect::<Result<Vec<Write>, ApiError>>()?;
    let columns = collection.synced.fields(&caller.access);
    let tombstone = collection.synced.tombstone.clone();
    let assumed: Vec<Option<Map<String, Value>>> = rows
        .iter()
        .map(|r| r.assumed_master_state.clone())
        .collect();
    let pushed = writes::push(&state, &caller, "rxdb", &writes, |included| {
        Arc::new(AssumedMaster {
            tombstone: tombstone.clone(),
            assumed: assumed.clone(),
            rows: included.to_vec(),
            columns: columns.clone(),
        }) as Arc<dyn Precondition>
    })
    .await
    .map_err(|failure| match failure {
        PushFailure::Api(err) => err,
        PushFailure::Stale(_) => ApiError::Internal("an RxDB push aborted on a conflict".into()),
    })?;
    let mut conflicts = Vec::new();
    for (i, outcome) in pushed.outcomes.into_iter().enumerate() {
        let master = match outcome {
            Some(Outcome::Conflict { row, .. }) => {
                row.map(|row| master_document(&columns, tombstone.as_deref(), &row))
            }
            Some(_) => continue,
            // Not the caller's to write: what it last saw of the row stands.
            None => rows[i].assumed_master_state.clone().map(Value::Object),
        };
        let master = master.unwrap_or_else(|| deleted_stub(&collection, &rows[i]));
        // The master is already the pushed state: a retry of a push whose answer was lost.
        // Answered as applied, so RxDB takes that state as the master it assumes from now
        // on. As a conflict, RxDB would write the master over its fork; if the document was
        // edited since, that write fails, RxDB keeps assuming the older master, and the next
        // push of the edit conflicts and loses it.
        if !is_document(&master, &rows[i].new_document_state) {
            conflicts.push(master);
        }
    }
    Ok(no_store(Json(conflicts).into_response()))
}

/// Whether `master` is the document `new` (its fields compared as a JavaScript client would;
/// two deleted documents are the same whatever their fields).
fn is_document(master: &Value, new: &Map<String, Value>) -> bool {
    let deleted = |doc: Option<&Value>| doc.and_then(Value::as_bool).unwrap_or(false);
    let master_deleted = deleted(master.get(DELETED));
    if master_deleted != deleted(new.get(DELETED)) {
        return false;
    }
    master_deleted
        || new
            .iter()
            .filter(|(name, _)| name.as_str() != DELETED && !INTERNAL.contains(&name.as_str()))
            .all(|(name, value)| {
                master
                    .get(name)
                    .is_some_and(|m| values::same_value(m, value))
            })
}

/// A row as RxDB's master document.
fn master_document(columns: &[Column], tombstone: Option<&str>, row: &Map<String, Value>) -> Value {
    let mut doc = values::document(columns, row, JsonColumns::Parsed);
    let deleted = tombstoned(tombstone, row);
    doc.insert(DELETED.to_owned(), Value::Bool(deleted));
    Value::Object(doc)
}

/// The master of a row that does not exist: its key, deleted.
fn deleted_stub(collection: &Collection, row: &PushRow) -> Value {
    let key = &collection.key_column().name;
    let mut doc = Map::new();
    if let Some(value) = row.new_document_state.get(key) {
        doc.insert(key.clone(), value.clone());
    }
    doc.insert(DELETED.to_owned(), Value::Bool(true));
    Value::Object(doc)
}

/// The mutation of one pushed row: a delete, or an upsert of the fields that differ from the
/// state the client assumed (all of them for a new document).
fn write_of(collection: &Collection, i: usize, row: &PushRow) -> Result<Write, ApiError> {
    let field = format!("[{i}].newDocumentState");
    let new = &row.new_document_state;
    let key_column = collection.key_column();
    let key_value = match new.get(&key_column.name) {
        Some(value) if !value.is_null() => value,
        _ => {
            return Err(ApiError::invalid(
                format!("{field}.{}", key_column.name),
                "missing: the primary key of the document",
            ));
        }
    };
    if let Some(assumed) = &row.assumed_master_state
        && assumed
            .get(&key_column.name)
            .is_some_and(|v| v != key_value)
    {
        return Err(ApiError::invalid(
            format!("[{i}].assumedMasterState.{}", key_column.name),
            "differs from the primary key of newDocumentState",
        ));
    }
    let deleted = match new.get(DELETED) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(deleted)) => *deleted,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{field}.{DELETED}"),
                "must be true or false",
            ));
        }
    };
    let mut key = Map::new();
    key.insert(
        key_column.name.clone(),
        values::from_document(key_column, key_value, JsonColumns::Parsed),
    );
    let op = if deleted { Op::Delete } else { Op::Upsert };
    let mut write = Write::new(field.clone(), collection.synced.name.to_string(), op, key);
    if deleted {
        return Ok(write);
    }
    for (name, value) in new {
        if name == &key_column.name
            || name == DELETED
            || INTERNAL.contains(&name.as_str())
            || collection.synced.is_tombstone(name)
        {
            continue;
        }
        let column = collection.synced.column(&field, name)?;
        // Only what changed: a column the caller may not write, sent back as it was, is no
        // write of it. A document that was deleted is written whole.
        let unchanged = row
            .assumed_master_state
            .as_ref()
            .filter(|a| a.get(DELETED) != Some(&Value::Bool(true)))
            .and_then(|a| a.get(name))
            .is_some_and(|old| values::same_value(old, value));
        if !unchanged {
            write.mutation.values.insert(
                name.clone(),
                values::from_document(column, value, JsonColumns::Parsed),
            );
        }
    }
    Ok(write)
}
