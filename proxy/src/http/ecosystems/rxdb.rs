//! RxDB's replication protocol (proxy/PROTOCOL.md, "RxDB"): `pull` pages through the caller's
//! shape of a table by an opaque checkpoint (the shape's handle and a position in its log),
//! `pullStream` sends each new transaction as server-sent events, and `push` writes through
//! the write path with RxDB's conflict rule checked on the locked rows.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use shapes::offset::Offset;
use shapes::schema::{Column, QualifiedName, TableSchema};

use super::caller::{Caller, read_entries};
use super::changes::{Fold, Folded};
use super::values::{self, JsonColumns};
use super::writes::{self, PushFailure, Write};
use super::{no_store, object, query};
use crate::auth::Access;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::mutations::MutationError;
use crate::mutations::precondition::{LockedRow, Precondition};
use crate::mutations::wire::{Op, Outcome};
use crate::storage::shape_log::cursor::Position;
use crate::storage::shape_store::{Shape, ShapeState};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
/// Entries one server-sent event may carry (a larger transaction comes as several events).
const STREAM_BATCH: usize = 10_000;
/// RxDB's field for a deleted document.
const DELETED: &str = "_deleted";
/// RxDB's own fields, never columns.
const INTERNAL: [&str; 3] = ["_meta", "_rev", "_attachments"];

/// Where a client stands in its shape: opaque to RxDB, which stores it and sends it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    handle: String,
    /// Byte position in the snapshot, while the client is in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot: Option<u64>,
    /// The log offset the client has, after the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<String>,
}

impl Checkpoint {
    fn at(shape: &Shape, position: Position) -> Self {
        let (snapshot, offset) = match position {
            Position::Snapshot(pos) => (Some(pos), None),
            Position::After(offset) => (None, Some(offset.to_string())),
        };
        Self {
            handle: shape.handle.to_string(),
            snapshot,
            offset,
        }
    }

    fn position(&self) -> Result<Position, ApiError> {
        match (self.snapshot, &self.offset) {
            (Some(pos), None) => Ok(Position::Snapshot(pos)),
            (None, Some(offset)) => match offset.parse::<Offset>() {
                Ok(offset) if offset >= Offset::SNAPSHOT_END => Ok(Position::After(offset)),
                _ => Err(bad_checkpoint("its offset is not a log offset")),
            },
            _ => Err(bad_checkpoint(
                "it needs exactly one of `snapshot` and `offset`",
            )),
        }
    }
}

fn bad_checkpoint(why: &str) -> ApiError {
    ApiError::invalid(
        "checkpoint",
        format!(
            "not a checkpoint this endpoint gave ({why}); send the last one received, or none to start over"
        ),
    )
}

fn parse_checkpoint(text: Option<&String>) -> Result<Option<Checkpoint>, ApiError> {
    match text.map(String::as_str) {
        None | Some("null") | Some("") => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| bad_checkpoint(&e.to_string())),
    }
}

fn parse_limit(text: Option<&String>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            "limit",
            format!("must be a whole number from 1 to {MAX_LIMIT}"),
        )),
    }
}

/// A table RxDB can replicate: one primary-key column (RxDB's `primaryKey`).
struct Collection {
    name: QualifiedName,
    table: Arc<TableSchema>,
    key: usize,
    /// The tombstone column (`--tombstones`): RxDB's `_deleted`, never a field of its own.
    tombstone: Option<String>,
}

impl Collection {
    async fn of(state: &AppState, caller: &Caller, text: &str) -> Result<Self, ApiError> {
        let (name, table) = caller.table(state, "table", text).await?;
        let key = match table.primary_key().as_slice() {
            [key] => *key,
            keys => {
                return Err(ApiError::invalid(
                    "table",
                    format!(
                        "{name} has {} primary-key columns; RxDB replicates tables with exactly one \
                         (its primaryKey)",
                        keys.len()
                    ),
                ));
            }
        };
        let tombstone = state.settings.tombstone_column(&name).map(str::to_owned);
        Ok(Self {
            name,
            table,
            key,
            tombstone,
        })
    }

    fn key_column(&self) -> &Column {
        &self.table.columns[self.key]
    }

    /// The fields of documents: the columns the caller may read, but the tombstone.
    fn readable(&self, access: &Access) -> Vec<Column> {
        self.table
            .columns
            .iter()
            .filter(|c| Some(&c.name) != self.tombstone.as_ref())
            .filter(|c| match access {
                Access::Token(token) => token.can_read_column(&self.name, &c.name),
                Access::Open | Access::Secret => true,
            })
            .cloned()
            .collect()
    }
}

/// A folded row as an RxDB document.
fn document(columns: &[Column], folded: Folded) -> Value {
    let mut doc = values::into_document(columns, folded.row, JsonColumns::Parsed);
    doc.insert(DELETED.to_owned(), Value::Bool(folded.deleted));
    Value::Object(doc)
}

/// `{"documents": [...], "checkpoint": {...}}`: a pull's answer, and a stream's event.
fn page(documents: Vec<Value>, checkpoint: &Checkpoint) -> Value {
    let checkpoint = json!(checkpoint);
    object([
        ("documents", Value::Array(documents)),
        ("checkpoint", checkpoint),
    ])
}

/// Folds entries of `shape` from `from` until `limit` rows or the end; where it stopped.
async fn fold_from(
    shape: &Arc<Shape>,
    from: Position,
    limit: usize,
) -> Result<(Fold, Position), ApiError> {
    let mut fold = Fold::default();
    let mut at = from;
    while fold.len() < limit {
        let read = read_entries(shape, at, limit - fold.len(), "checkpoint").await?;
        for entry in &read.entries {
            fold.push(&entry.payload)
                .map_err(|e| ApiError::Internal(format!("shape {}: {e}", shape.handle)))?;
        }
        at = read.next;
        if read.at_end || read.entries.is_empty() {
            break;
        }
    }
    Ok((fold, at))
}

/// GET `/v1/rxdb/{table}/pull?checkpoint=<json>&limit=<n>`.
pub(super) async fn pull(
    State(state): State<AppState>,
    Path(table): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.as_deref().unwrap_or("");
    let caller = Caller::authenticate(&state, &headers, query)?;
    let params = query::parse(query, &["checkpoint", "limit"])?;
    let limit = parse_limit(params.get("limit"))?;
    let checkpoint = parse_checkpoint(params.get("checkpoint"))?;
    let collection = Collection::of(&state, &caller, &table).await?;
    let shape = caller.shape(&state, &collection.name).await?;
    let from = match &checkpoint {
        // A checkpoint of a shape that has since rotated starts over on the new one.
        Some(checkpoint) if checkpoint.handle == shape.handle.to_string() => {
            checkpoint.position()?
        }
        _ => Position::START,
    };
    let (fold, next) = fold_from(&shape, from, limit).await?;
    let columns = collection.readable(&caller.access);
    let documents: Vec<Value> = fold.into_rows().map(|f| document(&columns, f)).collect();
    // An empty page leaves the client where it was (control messages it passed are passed
    // again next time, at no cost).
    let checkpoint = match (checkpoint, documents.is_empty()) {
        (Some(checkpoint), true) => checkpoint,
        _ => Checkpoint::at(&shape, next),
    };
    Ok(no_store(Json(page(documents, &checkpoint)).into_response()))
}

/// GET `/v1/rxdb/{table}/pullStream[?checkpoint=<json>]`: one event per transaction of the
/// caller's rows, from the checkpoint or from now; `"RESYNC"` when the shape rotates (the
/// client then pulls from its last checkpoint, which starts over on the new shape).
pub(super) async fn pull_stream(
    State(state): State<AppState>,
    Path(table): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.as_deref().unwrap_or("");
    let caller = Caller::authenticate(&state, &headers, query)?;
    let params = query::parse(query, &["checkpoint"])?;
    let checkpoint = parse_checkpoint(params.get("checkpoint"))?;
    let collection = Collection::of(&state, &caller, &table).await?;
    let shape = caller.shape(&state, &collection.name).await?;
    let from = match &checkpoint {
        Some(checkpoint) if checkpoint.handle == shape.handle.to_string() => {
            Some(checkpoint.position()?)
        }
        Some(_) => None,
        None => Some(Position::After(
            shape.log.last_offset().unwrap_or(Offset::SNAPSHOT_END),
        )),
    };
    let columns = collection.readable(&caller.access);
    let deadline = crate::http::shape::live::token_deadline(&caller.access);
    let live = state.auth.live_connection(&caller.access)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    tokio::spawn(async move {
        let _live = live;
        let Some(from) = from else {
            let _ = tx.send(Event::default().data("\"RESYNC\"")).await;
            return;
        };
        let stream = StreamTask {
            state,
            shape,
            columns,
            tx,
            deadline,
        };
        if let Err(err) = stream.run(from).await {
            tracing::warn!(error = ?err, "an RxDB pull stream ended");
        }
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct StreamTask {
    state: AppState,
    shape: Arc<Shape>,
    columns: Vec<Column>,
    tx: tokio::sync::mpsc::Sender<Event>,
    deadline: Option<tokio::time::Instant>,
}

impl StreamTask {
    async fn run(self, mut at: Position) -> Result<(), ApiError> {
        let mut news = self.shape.log.subscribe();
        let mut shape_state = self.shape.watch_state();
        loop {
            news.borrow_and_update();
            let read = read_entries(&self.shape, at, STREAM_BATCH, "checkpoint").await?;
            for event in self.events(&read.entries)? {
                if self.tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
            at = read.next;
            if !read.at_end {
                continue;
            }
            let expired = async {
                match self.deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let gone = async {
                // The `Ref` it gives is not `Send`: dropped here.
                let _ = shape_state
                    .wait_for(|s| *s == ShapeState::Gone)
                    .await
                    .is_ok();
            };
            tokio::select! {
                changed = news.changed() => if changed.is_err() { return self.resync().await },
                () = gone => return self.resync().await,
                () = self.tx.closed() => return Ok(()),
                () = self.state.shutdown.cancelled() => return Ok(()),
                () = expired => return Ok(()),
            }
        }
    }

    async fn resync(&self) -> Result<(), ApiError> {
        let _ = self.tx.send(Event::default().data("\"RESYNC\"")).await;
        Ok(())
    }

    /// One event per transaction of `entries` (snapshot entries never reach a stream).
    fn events(
        &self,
        entries: &[crate::storage::shape_log::cursor::Entry],
    ) -> Result<Vec<Event>, ApiError> {
        let mut events = Vec::new();
        let mut start = 0;
        while start < entries.len() {
            let tx = entries[start].offset.map(|o| o.lsn());
            let end = entries[start..]
                .iter()
                .position(|e| e.offset.map(|o| o.lsn()) != tx)
                .map_or(entries.len(), |n| start + n);
            let mut fold = Fold::default();
            for entry in &entries[start..end] {
                fold.push(&entry.payload)
                    .map_err(|e| ApiError::Internal(format!("shape {}: {e}", self.shape.handle)))?;
            }
            if !fold.is_empty() {
                let documents: Vec<Value> = fold
                    .into_rows()
                    .map(|f| document(&self.columns, f))
                    .collect();
                let checkpoint = Checkpoint::at(&self.shape, entries[end - 1].next);
                let data = page(documents, &checkpoint);
                events.push(Event::default().data(data.to_string()));
            }
            start = end;
        }
        Ok(events)
    }
}

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
        let master_deleted = match master {
            None => true,
            Some(row) => self
                .tombstone
                .as_ref()
                .is_some_and(|t| row.get(t).is_some_and(|v| !v.is_null())),
        };
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
pub(super) async fn push(
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
    let rows: Vec<PushRow> = super::parse_body(&body)?;
    let collection = Collection::of(&state, &caller, &table).await?;
    let writes = rows
        .iter()
        .enumerate()
        .map(|(i, row)| write_of(&collection, i, row))
        .collect::<Result<Vec<Write>, ApiError>>()?;
    let columns = collection.readable(&caller.access);
    let tombstone = collection.tombstone.clone();
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
        conflicts.push(master.unwrap_or_else(|| deleted_stub(&collection, &rows[i])));
    }
    Ok(no_store(Json(conflicts).into_response()))
}

/// A row as RxDB's master document.
fn master_document(columns: &[Column], tombstone: Option<&str>, row: &Map<String, Value>) -> Value {
    let mut doc = values::document(columns, row, JsonColumns::Parsed);
    let deleted = tombstone.is_some_and(|t| row.get(t).is_some_and(|v| !v.is_null()));
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
    let mut write = Write::new(field.clone(), collection.name.to_string(), op, key);
    if deleted {
        return Ok(write);
    }
    for (name, value) in new {
        if name == &key_column.name
            || name == DELETED
            || INTERNAL.contains(&name.as_str())
            || Some(name) == collection.tombstone.as_ref()
        {
            continue;
        }
        let Some(column) = collection
            .table
            .column_index(name)
            .map(|c| &collection.table.columns[c])
        else {
            return Err(ApiError::invalid(
                format!("{field}.{name}"),
                format!(
                    "{} has no column {name:?}; remove the field from the RxDB schema",
                    collection.name
                ),
            ));
        };
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
