//! RxDB's replication protocol (proxy/PROTOCOL.md, "RxDB"): `pull` pages through the caller's
//! shape of a table by an opaque checkpoint (the shape's handle and a position in its log),
//! `pullStream` sends each new transaction as server-sent events, and `push` writes through
//! the write path with RxDB's conflict rule checked on the locked rows.

mod push;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use shapes::offset::Offset;
use shapes::schema::Column;

use super::caller::{Caller, SyncedTable, read_entries};
use super::changes::{Fold, UnreadableMessage};
use super::values::{DocumentWriter, JsonColumns};
use super::{json_response, no_store, query};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::storage::shape_log::cursor::Position;
use crate::storage::shape_store::Shape;

pub(super) use push::push;
pub(super) use stream::pull_stream;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
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
    synced: SyncedTable,
    key: usize,
}

impl Collection {
    async fn of(state: &AppState, caller: &Caller, text: &str) -> Result<Self, ApiError> {
        let synced = caller.table(state, "table", text).await?;
        let key = match synced.table.primary_key().as_slice() {
            [key] => *key,
            keys => {
                return Err(ApiError::invalid(
                    "table",
                    format!(
                        "{} has {} primary-key columns; RxDB replicates tables with exactly one \
                         (its primaryKey)",
                        synced.name,
                        keys.len()
                    ),
                ));
            }
        };
        Ok(Self { synced, key })
    }

    fn key_column(&self) -> &Column {
        &self.synced.table.columns[self.key]
    }
}

/// What both reads start with: the caller, its collection and shape, and where in the shape
/// its checkpoint stands (`None`: the checkpoint is of another shape, since rotated).
struct Read {
    caller: Caller,
    params: HashMap<String, String>,
    checkpoint: Option<Checkpoint>,
    collection: Collection,
    shape: Arc<Shape>,
}

impl Read {
    async fn open(
        state: &AppState,
        table: &str,
        headers: &HeaderMap,
        query: &str,
        known: &[&str],
    ) -> Result<Self, ApiError> {
        let caller = Caller::authenticate(state, headers, query)?;
        let params = query::parse(query, known)?;
        let checkpoint = parse_checkpoint(params.get("checkpoint"))?;
        let collection = Collection::of(state, &caller, table).await?;
        let shape = caller.shape(state, &collection.synced.name).await?;
        Ok(Self {
            caller,
            params,
            checkpoint,
            collection,
            shape,
        })
    }

    /// Where the checkpoint stands in the shape: `Ok(None)` without one, `Err` (outer) for a
    /// malformed one, `Some(None)` for one of another shape.
    fn position(&self) -> Result<Option<Option<Position>>, ApiError> {
        let Some(checkpoint) = &self.checkpoint else {
            return Ok(None);
        };
        if checkpoint.handle != self.shape.handle.to_string() {
            return Ok(Some(None));
        }
        checkpoint.position().map(|p| Some(Some(p)))
    }

    fn fields(&self) -> Vec<Column> {
        self.collection.synced.fields(&self.caller.access)
    }
}

/// `{"documents": [...], "checkpoint": {...}}` of the folded rows: a pull's answer, and a
/// stream's event. Written straight from the rows (see [`values::write_document`]).
fn page(
    fields: &[Column],
    fold: Fold,
    checkpoint: &Checkpoint,
) -> Result<Vec<u8>, UnreadableMessage> {
    let writer = DocumentWriter::new(fields, JsonColumns::Parsed);
    let mut out = Vec::with_capacity(128 + fold.len() * 160);
    out.extend_from_slice(b"{\"documents\":[");
    for (i, row) in fold.into_rows().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        writer.write(&mut out, &row.values()?, Some(row.deleted));
    }
    out.extend_from_slice(b"],\"checkpoint\":");
    // A struct of strings and numbers: serializing it cannot fail.
    let _ = serde_json::to_writer(&mut out, checkpoint);
    out.push(b'}');
    Ok(out)
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
        let nothing_read = read.entries.is_empty();
        for entry in read.entries {
            fold.push_entry(entry)
                .map_err(|e| ApiError::Internal(format!("shape {}: {e}", shape.handle)))?;
        }
        at = read.next;
        if read.at_end || nothing_read {
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
    let read = Read::open(&state, &table, &headers, query, &["checkpoint", "limit"]).await?;
    let limit = parse_limit(read.params.get("limit"))?;
    // A checkpoint of a shape that has since rotated starts over on the new one.
    let from = read.position()?.flatten().unwrap_or(Position::START);
    let (fold, next) = fold_from(&read.shape, from, limit).await?;
    let fields = read.fields();
    // An empty page leaves the client where it was (control messages it passed are passed
    // again next time, at no cost).
    let checkpoint = match (read.checkpoint, fold.is_empty()) {
        (Some(checkpoint), true) => checkpoint,
        _ => Checkpoint::at(&read.shape, next),
    };
    let page = page(&fields, fold, &checkpoint)
        .map_err(|e| ApiError::Internal(format!("shape {}: {e}", read.shape.handle)))?;
    Ok(no_store(json_response(page)))
}
