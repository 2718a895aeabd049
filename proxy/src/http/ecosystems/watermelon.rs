//! WatermelonDB's sync protocol (proxy/PROTOCOL.md, "WatermelonDB"): `pull` lists what changed
//! in several tables since `last_pulled_at`, as of one point of the replication stream (its
//! `timestamp` is a commit LSN), and `push` applies a device's changes in one transaction,
//! refusing all of them (409) when any of their rows changed on the server after
//! `last_pulled_at`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shapes::lsn::Lsn;
use shapes::offset::Offset;
use shapes::schema::{Column, QualifiedName, TableSchema};

use super::caller::{Caller, read_entries};
use super::changes::Fold;
use super::values::{self, JsonColumns};
use super::writes::{self, PushFailure, Write};
use super::{no_store, object, query};
use crate::auth::Access;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::lsn::reach_fence;
use crate::mutations::MutationError;
use crate::mutations::precondition::{LockedRow, Precondition};
use crate::mutations::wire::Op;
use crate::storage::shape_log::cursor::Position;
use crate::storage::shape_store::Shape;

/// Entries read at a time.
const READ_BATCH: usize = 10_000;
/// The primary key WatermelonDB requires of every table.
const ID: &str = "id";
/// WatermelonDB's bookkeeping fields of a record, never columns.
const STATUS: &str = "_status";
const CHANGED: &str = "_changed";

/// A table WatermelonDB can sync: a one-column text primary key named `id`.
struct Collection {
    /// The name WatermelonDB knows it by (as the request gave it).
    given: String,
    name: QualifiedName,
    table: Arc<TableSchema>,
    /// The tombstone column (`--tombstones`): rows with it set are deleted records; never a
    /// field of records.
    tombstone: Option<String>,
}

impl Collection {
    async fn of(
        state: &AppState,
        caller: &Caller,
        param: &str,
        text: &str,
    ) -> Result<Self, ApiError> {
        let (name, table) = caller.table(state, param, text).await?;
        let keys = table.primary_key();
        let id_key = match keys.as_slice() {
            [key] => table.columns[*key].name == ID && text_like(&table.columns[*key]),
            _ => false,
        };
        if !id_key {
            return Err(ApiError::invalid(
                param,
                format!(
                    "{name} cannot sync with WatermelonDB: it needs a primary key of one text \
                     column named `id` (text, varchar or uuid)"
                ),
            ));
        }
        let tombstone = state.settings.tombstone_column(&name).map(str::to_owned);
        Ok(Self {
            given: text.to_owned(),
            name,
            table,
            tombstone,
        })
    }

    /// The fields of records: the columns the caller may read, but the tombstone.
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

fn text_like(column: &Column) -> bool {
    column.dims == 0
        && matches!(
            column.ty.name.as_str(),
            "text" | "varchar" | "bpchar" | "uuid"
        )
}

/// `last_pulled_at`: `null` or a number this endpoint gave as `timestamp`.
fn parse_last_pulled_at(
    text: Option<&String>,
    required_number: bool,
) -> Result<Option<Lsn>, ApiError> {
    let message = if required_number {
        "must be the `timestamp` of the last pull (a whole number)"
    } else {
        "must be null or the `timestamp` of the last pull (a whole number)"
    };
    match text.map(String::as_str) {
        None => Err(ApiError::invalid(
            "last_pulled_at",
            format!("missing: {message}"),
        )),
        Some("null" | "undefined" | "0") if !required_number => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .map(|n| Some(Lsn(n)))
            .map_err(|_| ApiError::invalid("last_pulled_at", message)),
    }
}

/// WatermelonDB's `migration` of a pull: tables and columns added to the device's schema
/// since `from`, whose existing rows the device needs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Migration {
    #[allow(dead_code)]
    from: u64,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    columns: Vec<MigratedColumns>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigratedColumns {
    table: String,
    #[allow(dead_code)]
    columns: Vec<String>,
}

/// What a pull sends of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    /// Everything, to a device that has none of it: rows go in `created`.
    Everything,
    /// Everything, to a device that may hold some of it (a new column, or a shape newer than
    /// its last pull): rows go in `updated` and rows deleted in the log in `deleted`.
    Refresh,
    /// The changes after a commit LSN.
    Since(Lsn),
}

/// GET `/v1/watermelon/pull?last_pulled_at=&schema_version=&migration=&tables=`.
pub(super) async fn pull(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.as_deref().unwrap_or("");
    let caller = Caller::authenticate(&state, &headers, query)?;
    let params = query::parse(
        query,
        &["last_pulled_at", "schema_version", "migration", "tables"],
    )?;
    let last_pulled_at = parse_last_pulled_at(params.get("last_pulled_at"), false)?;
    match params.get("schema_version").map(|v| v.parse::<u32>()) {
        Some(Ok(_)) => {}
        _ => {
            return Err(ApiError::invalid(
                "schema_version",
                "must be the device's schema version (a whole number)",
            ));
        }
    }
    let migration: Migration = match params.get("migration").map(String::as_str) {
        None | Some("null" | "undefined" | "") => Migration::default(),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            ApiError::invalid(
                "migration",
                format!("not WatermelonDB's migration object: {e}"),
            )
        })?,
    };
    let names = table_list(params.get("tables"))?;
    let mut collections = Vec::new();
    for name in &names {
        collections.push(Collection::of(&state, &caller, "tables", name).await?);
    }
    let mut shapes = Vec::new();
    for collection in &collections {
        shapes.push(caller.shape(&state, &collection.name).await?);
    }
    // One point for every table: every transaction committed before it is in every log.
    let upto = reach_fence(&state).await?;
    let mut changes = Map::new();
    for (collection, shape) in collections.iter().zip(&shapes) {
        let range = if last_pulled_at.is_none() || migration.tables.contains(&collection.given) {
            Range::Everything
        } else if migration
            .columns
            .iter()
            .any(|c| c.table == collection.given)
        {
            Range::Refresh
        } else {
            match last_pulled_at {
                Some(since) if since >= shape.meta.start_lsn => Range::Since(since),
                _ => Range::Refresh,
            }
        };
        let fold = fold_range(shape, range, upto).await?;
        let columns = collection.readable(&caller.access);
        changes.insert(
            collection.given.clone(),
            table_changes(&columns, fold, range),
        );
    }
    Ok(no_store(
        Json(object([
            ("changes", Value::Object(changes)),
            ("timestamp", Value::from(upto.as_u64())),
        ]))
        .into_response(),
    ))
}

fn table_list(text: Option<&String>) -> Result<Vec<String>, ApiError> {
    let names: Vec<String> = text
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(ApiError::invalid(
            "tables",
            "missing: the tables to sync, comma-separated (`tables=tasks,projects`)",
        ));
    }
    Ok(names)
}

/// The rows of `shape` changed in `range`, up to and including commit `upto`.
async fn fold_range(shape: &Arc<Shape>, range: Range, upto: Lsn) -> Result<Fold, ApiError> {
    let mut at = match range {
        Range::Everything | Range::Refresh => Position::START,
        Range::Since(since) => {
            Position::After(Offset::log(since, Offset::INF).max(Offset::SNAPSHOT_END))
        }
    };
    let mut fold = Fold::default();
    loop {
        let read = read_entries(shape, at, READ_BATCH, "last_pulled_at").await?;
        for entry in &read.entries {
            if entry
                .offset
                .and_then(|o| o.lsn())
                .is_some_and(|lsn| lsn > upto)
            {
                return Ok(fold);
            }
            fold.push(&entry.payload)
                .map_err(|e| ApiError::Internal(format!("shape {}: {e}", shape.handle)))?;
        }
        at = read.next;
        if read.at_end || read.entries.is_empty() {
            return Ok(fold);
        }
    }
}

/// `{"created": […], "updated": […], "deleted": […]}` of one table.
fn table_changes(columns: &[Column], fold: Fold, range: Range) -> Value {
    let (mut created, mut updated, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
    let record = |row| Value::Object(values::into_document(columns, row, JsonColumns::Text));
    for row in fold.into_rows() {
        match (range, row.deleted, row.inserted) {
            // The device never had it.
            (Range::Everything, true, _) | (Range::Since(_), true, true) => {}
            (_, true, _) => {
                if let Some(id) = row.row.get(ID) {
                    deleted.push(id.clone());
                }
            }
            (Range::Everything, false, _) | (Range::Since(_), false, true) => {
                created.push(record(row.row));
            }
            (Range::Refresh | Range::Since(_), false, _) => updated.push(record(row.row)),
        }
    }
    object([
        ("created", Value::Array(created)),
        ("updated", Value::Array(updated)),
        ("deleted", Value::Array(deleted)),
    ])
}

/// One table of a push, as WatermelonDB sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableChanges {
    #[serde(default)]
    created: Vec<Map<String, Value>>,
    #[serde(default)]
    updated: Vec<Map<String, Value>>,
    #[serde(default)]
    deleted: Vec<String>,
}

/// WatermelonDB's conflict rule on the locked rows: none may have changed on the server after
/// the device's last pull. Any that did aborts the push.
struct UnchangedSince {
    state: AppState,
    since: Lsn,
    /// Per table, the caller's shape.
    shapes: HashMap<QualifiedName, Arc<Shape>>,
    /// Per row of the push, its id.
    ids: Vec<String>,
    /// Batch position → row of the push.
    rows: Vec<usize>,
}

impl UnchangedSince {
    /// The ids of `table`'s rows the caller's shape saw change after `since`.
    async fn changed_ids(
        &self,
        table: &QualifiedName,
    ) -> Result<Option<HashSet<String>>, MutationError> {
        let Some(shape) = self.shapes.get(table) else {
            return Ok(None);
        };
        if self.since < shape.meta.start_lsn {
            // The shape began after the device's pull: nothing tells what changed in between.
            return Ok(None);
        }
        // The rows are locked: every commit that changed them is before this fence.
        let upto = reach_fence(&self.state)
            .await
            .map_err(|e| MutationError::Internal(format!("{e:?}")))?;
        let fold = fold_range(shape, Range::Since(self.since), upto)
            .await
            .map_err(|e| MutationError::Internal(format!("{e:?}")))?;
        Ok(Some(
            fold.into_rows()
                .filter_map(|row| row.row.get(ID).and_then(Value::as_str).map(str::to_owned))
                .collect(),
        ))
    }
}

impl Precondition for UnchangedSince {
    fn stale<'a>(
        &'a self,
        table: &'a QualifiedName,
        rows: &'a [LockedRow],
    ) -> BoxFuture<'a, Result<HashSet<usize>, MutationError>> {
        Box::pin(async move {
            let changed = self.changed_ids(table).await?;
            Ok(rows
                .iter()
                .flat_map(|row| row.slots.iter().copied())
                .filter(|slot| {
                    changed
                        .as_ref()
                        .is_none_or(|ids| ids.contains(&self.ids[self.rows[*slot]]))
                })
                .collect())
        })
    }

    fn aborts(&self) -> bool {
        true
    }
}

/// POST `/v1/watermelon/push?last_pulled_at=<n>`.
pub(super) async fn push(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = query.as_deref().unwrap_or("");
    let caller = Caller::authenticate(&state, &headers, query)?;
    let params = query::parse(query, &["last_pulled_at"])?;
    let Some(since) = parse_last_pulled_at(params.get("last_pulled_at"), true)? else {
        return Err(ApiError::Internal("last_pulled_at".into()));
    };
    let body = body.map_err(|r| {
        ApiError::invalid("body", format!("cannot read the body: {}", r.body_text()))
    })?;
    let pushed: BTreeMap<String, TableChanges> = super::parse_body(&body)?;
    let mut writes = Vec::new();
    let mut tables = Vec::new();
    let mut shapes = HashMap::new();
    for (given, changes) in &pushed {
        let collection = Collection::of(&state, &caller, given, given).await?;
        shapes.insert(
            collection.name.clone(),
            caller.shape(&state, &collection.name).await?,
        );
        collect_writes(&collection, changes, &mut writes, &mut tables)?;
    }
    let ids: Vec<String> = writes.iter().map(|(id, _)| id.clone()).collect();
    let writes: Vec<Write> = writes.into_iter().map(|(_, w)| w).collect();
    let outcome = writes::push(&state, &caller, "watermelon", &writes, |included| {
        Arc::new(UnchangedSince {
            state: state.clone(),
            since,
            shapes: shapes.clone(),
            ids: ids.clone(),
            rows: included.to_vec(),
        }) as Arc<dyn Precondition>
    })
    .await;
    let by_table = |indices: &[usize]| {
        let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for &i in indices {
            lists
                .entry(tables[i].clone())
                .or_default()
                .push(ids[i].clone());
        }
        lists
    };
    match outcome {
        Ok(pushed) => {
            let refused: Vec<usize> = (0..pushed.outcomes.len())
                .filter(|i| pushed.outcomes[*i].is_none())
                .collect();
            let body = if refused.is_empty() {
                json!({})
            } else {
                json!({"experimentalRejectedIds": by_table(&refused)})
            };
            Ok(no_store(Json(body).into_response()))
        }
        Err(PushFailure::Stale(indices)) => Ok(no_store(
            (
                StatusCode::CONFLICT,
                Json(json!({
                    "message": format!(
                        "{} pushed records changed on the server after last_pulled_at; nothing \
                         was written: pull, then push again",
                        indices.len()
                    ),
                    "conflicts": by_table(&indices),
                })),
            )
                .into_response(),
        )),
        Err(PushFailure::Api(err)) => Err(err),
    }
}

/// The writes of one table's changes, each with its record id; `tables[i]` names the table of
/// write `i`.
fn collect_writes(
    collection: &Collection,
    changes: &TableChanges,
    writes: &mut Vec<(String, Write)>,
    tables: &mut Vec<String>,
) -> Result<(), ApiError> {
    let table = collection.name.to_string();
    let given = &collection.given;
    for (list, records) in [("created", &changes.created), ("updated", &changes.updated)] {
        for (i, record) in records.iter().enumerate() {
            let field = format!("{given}.{list}[{i}]");
            let Some(id) = record.get(ID).and_then(Value::as_str) else {
                return Err(ApiError::invalid(
                    format!("{field}.id"),
                    "missing: the record's id (a string)",
                ));
            };
            // An update sends the columns WatermelonDB marked changed, when it says.
            let changed: Option<HashSet<&str>> = match record.get(CHANGED) {
                Some(Value::String(names)) if list == "updated" && !names.is_empty() => {
                    Some(names.split(',').collect())
                }
                _ => None,
            };
            let mut key = Map::new();
            key.insert(ID.to_owned(), Value::String(id.to_owned()));
            let mut write = Write::new(field.clone(), table.clone(), Op::Upsert, key);
            for (name, value) in record {
                if name == ID
                    || name == STATUS
                    || name == CHANGED
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
                        format!("{} has no column {name:?}", collection.name),
                    ));
                };
                if changed.as_ref().is_some_and(|c| !c.contains(name.as_str())) {
                    continue;
                }
                write.mutation.values.insert(
                    name.clone(),
                    values::from_document(column, value, JsonColumns::Text),
                );
            }
            writes.push((id.to_owned(), write));
            tables.push(given.clone());
        }
    }
    for (i, id) in changes.deleted.iter().enumerate() {
        let mut key = Map::new();
        key.insert(ID.to_owned(), Value::String(id.clone()));
        let field = format!("{given}.deleted[{i}]");
        writes.push((
            id.clone(),
            Write::new(field, table.clone(), Op::Delete, key),
        ));
        tables.push(given.clone());
    }
    Ok(())
}
