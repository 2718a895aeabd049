//! WatermelonDB's sync protocol (proxy/PROTOCOL.md, "WatermelonDB"): `pull` lists what changed
//! in several tables since `last_pulled_at`, as of one point of the replication stream (its
//! `timestamp` is the LSN of a fence), and `push` applies a device's changes in one transaction,
//! refusing all of them (409) when any of their rows changed on the server after
//! `last_pulled_at`.

mod pull;
mod push;

use shapes::lsn::Lsn;
use shapes::schema::Column;

use super::caller::{Caller, SyncedTable};
use crate::http::AppState;
use crate::http::error::ApiError;

pub(super) use pull::pull;
pub(super) use push::push;

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
    synced: SyncedTable,
}

impl Collection {
    async fn of(
        state: &AppState,
        caller: &Caller,
        param: &str,
        text: &str,
    ) -> Result<Self, ApiError> {
        let synced = caller.table(state, param, text).await?;
        let table = &synced.table;
        let id_key = match table.primary_key().as_slice() {
            [key] => table.columns[*key].name == ID && text_like(&table.columns[*key]),
            _ => false,
        };
        if !id_key {
            return Err(ApiError::invalid(
                param,
                format!(
                    "{} cannot sync with WatermelonDB: it needs a primary key of one text \
                     column named `id` (text, varchar or uuid)",
                    synced.name
                ),
            ));
        }
        Ok(Self {
            given: text.to_owned(),
            synced,
        })
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
