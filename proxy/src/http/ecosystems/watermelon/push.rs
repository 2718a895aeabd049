//! `push`: a device's changes in one transaction, refused whole when any of its rows changed
//! on the server after `last_pulled_at`.

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
use shapes::schema::QualifiedName;

use super::pull::{Range, scan_range};
use super::{CHANGED, Collection, ID, STATUS, parse_last_pulled_at};
use crate::http::AppState;
use crate::http::ecosystems::caller::Caller;
use crate::http::ecosystems::changes;
use crate::http::ecosystems::values::{self, JsonColumns};
use crate::http::ecosystems::writes::{self, PushFailure, Write};
use crate::http::ecosystems::{no_store, parse_body, query};
use crate::http::error::ApiError;
use crate::http::lsn::reach_fence;
use crate::mutations::MutationError;
use crate::mutations::precondition::{LockedRow, Precondition};
use crate::mutations::wire::Op;
use crate::storage::shape_store::Shape;

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
        // Only each message's `value.id` is read: a push checks its rows against every
        // change since the device's pull.
        let mut ids = HashSet::new();
        scan_range(
            shape,
            Range::Since(self.since),
            upto,
            |entry| match changes::value_field(&entry.payload, ID) {
                Ok(Some(id)) => {
                    ids.insert(id);
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(ApiError::Internal(format!("shape {}: {e}", shape.handle))),
            },
        )
        .await
        .map_err(|e| MutationError::Internal(format!("{e:?}")))?;
        Ok(Some(ids))
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
pub(in crate::http::ecosystems) async fn push(
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
    let pushed: BTreeMap<String, TableChanges> = parse_body(&body)?;
    let mut writes = Vec::new();
    let mut tables = Vec::new();
    let mut shapes = HashMap::new();
    for (given, changes) in &pushed {
        let collection = Collection::of(&state, &caller, given, given).await?;
        shapes.insert(
            collection.synced.name.clone(),
            caller.shape(&state, &collection.synced.name).await?,
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
    let table = collection.synced.name.to_string();
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
                    || collection.synced.is_tombstone(name)
                {
                    continue;
                }
                let column = collection.synced.column(&field, name)?;
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
