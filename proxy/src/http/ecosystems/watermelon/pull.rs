//! `pull`: the changes of several tables since `last_pulled_at`, up to one fence.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use shapes::lsn::Lsn;
use shapes::offset::Offset;
use shapes::schema::Column;
use shapes::wire::write_json_str;

use super::{Collection, ID, READ_BATCH, parse_last_pulled_at};
use crate::http::AppState;
use crate::http::ecosystems::caller::{Caller, read_entries};
use crate::http::ecosystems::changes::Fold;
use crate::http::ecosystems::stream_body::{Flush, WriteError, streamed_json};
use crate::http::ecosystems::values::{DocumentWriter, JsonColumns};
use crate::http::ecosystems::{no_store, query};
use crate::http::error::ApiError;
use crate::http::lsn::reach_fence;
use crate::storage::shape_log::cursor::{Entry, Position};
use crate::storage::shape_store::Shape;

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
pub(super) enum Range {
    /// Everything, to a device that has none of it: rows go in `updated` (see
    /// [`write_table_changes`]), deletes are left out.
    Everything,
    /// Everything, to a device that may hold some of it (a new column, or a shape newer than
    /// its last pull): rows go in `updated` and rows deleted in the log in `deleted`.
    Refresh,
    /// The changes after a commit LSN: rows in `updated`, deletes in `deleted`.
    Since(Lsn),
}

/// GET `/v1/watermelon/pull?last_pulled_at=&schema_version=&migration=&tables=`.
pub(in crate::http::ecosystems) async fn pull(
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
        shapes.push(caller.shape(&state, &collection.synced.name).await?);
    }
    // One point for every table: every transaction committed before it is in every log.
    let upto = reach_fence(&state).await?;
    let mut tables = Vec::new();
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
        // Read errors (a position that is not this shape's) are answered before the body.
        tables.push(TableChanges {
            name: collection.given.clone(),
            columns: collection.synced.fields(&caller.access),
            fold: fold_range(shape, range, upto).await?,
            range,
        });
    }
    Ok(no_store(streamed_json(move |out, flush| {
        write_answer(out, flush, tables, upto)
    })))
}

/// One table's part of a pull's answer.
struct TableChanges {
    name: String,
    columns: Vec<Column>,
    fold: Fold,
    range: Range,
}

/// `{"changes":{…},"timestamp":n}`, handed to `flush` a chunk at a time.
fn write_answer(
    out: &mut Vec<u8>,
    flush: &mut Flush<'_>,
    tables: Vec<TableChanges>,
    upto: Lsn,
) -> Result<(), WriteError> {
    out.extend_from_slice(b"{\"changes\":{");
    for (i, table) in tables.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, &table.name);
        out.push(b':');
        write_table_changes(out, flush, &table.columns, table.fold, table.range)?;
    }
    out.extend_from_slice(b"},\"timestamp\":");
    out.extend_from_slice(upto.as_u64().to_string().as_bytes());
    out.push(b'}');
    Ok(())
}

fn table_list(text: Option<&String>) -> Result<Vec<String>, ApiError> {
    let mut names: Vec<String> = Vec::new();
    // Each table once: the answer has one member per table.
    for name in text.into_iter().flat_map(|t| t.split(',')).map(str::trim) {
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        return Err(ApiError::invalid(
            "tables",
            "missing: the tables to sync, comma-separated (`tables=tasks,projects`)",
        ));
    }
    Ok(names)
}

/// The rows of `shape` changed in `range`, up to and including commit `upto`.
pub(super) async fn fold_range(
    shape: &Arc<Shape>,
    range: Range,
    upto: Lsn,
) -> Result<Fold, ApiError> {
    let mut fold = Fold::default();
    scan_range(shape, range, upto, |entry| {
        fold.push_entry(entry)
            .map_err(|e| ApiError::Internal(format!("shape {}: {e}", shape.handle)))
    })
    .await?;
    Ok(fold)
}

/// Hands each entry of `shape` in `range`, up to and including commit `upto`, to `visit`.
pub(super) async fn scan_range(
    shape: &Arc<Shape>,
    range: Range,
    upto: Lsn,
    mut visit: impl FnMut(Entry) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let mut at = match range {
        Range::Everything | Range::Refresh => Position::START,
        Range::Since(since) => {
            Position::After(Offset::log(since, Offset::INF).max(Offset::SNAPSHOT_END))
        }
    };
    loop {
        let read = read_entries(shape, at, READ_BATCH, "last_pulled_at").await?;
        let nothing_read = read.entries.is_empty();
        for entry in read.entries {
            if entry
                .offset
                .and_then(|o| o.lsn())
                .is_some_and(|lsn| lsn > upto)
            {
                return Ok(());
            }
            visit(entry)?;
        }
        at = read.next;
        if read.at_end || nothing_read {
            return Ok(());
        }
    }
}

/// `{"created": […], "updated": […], "deleted": […]}` of one table.
///
/// Rows always go in `updated`, never in `created`: `synchronize()` runs with
/// `sendCreatedAsUpdated: true` (README), and WatermelonDB logs an error for every table that
/// then comes with `created` rows. After a first pull, rows go in `updated` even when the
/// server saw them inserted (the device may have pushed them itself), and every
/// row deleted in the range is in `deleted` even when it was inserted in the range too: the
/// device may hold it all the same, having pushed it itself (its `last_pulled_at` is from the
/// pull before that push). WatermelonDB creates a row it is told to update and does not have,
/// ignores a delete of a row it does not have, and keeps a local delete of a row it is told to
/// update; told to *create* a row it deleted locally, it would bring the row back.
fn write_table_changes(
    out: &mut Vec<u8>,
    flush: &mut Flush<'_>,
    columns: &[Column],
    fold: Fold,
    range: Range,
) -> Result<(), WriteError> {
    let writer = DocumentWriter::new(columns, JsonColumns::Text);
    let mut deleted = Vec::new();
    out.extend_from_slice(b"{\"created\":[],\"updated\":[");
    let mut first = true;
    for row in fold.into_rows() {
        match (range, row.deleted) {
            // A device that has none of the table.
            (Range::Everything, true) => {}
            (_, false) => {
                if !first {
                    out.push(b',');
                }
                first = false;
                writer.write(out, &row.values()?, None);
                flush(out)?;
            }
            (Range::Refresh | Range::Since(_), true) => {
                if let Some(Some(id)) = row.values()?.get(ID) {
                    deleted.push(id.to_owned());
                }
            }
        }
    }
    out.extend_from_slice(b"],\"deleted\":[");
    for (i, id) in deleted.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, id);
    }
    out.extend_from_slice(b"]}");
    Ok(())
}
