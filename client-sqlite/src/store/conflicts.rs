//! Writes that lost: every rolled-back local write is kept in `_shapesync_conflicts` with
//! both versions (what the device wrote, what the server has), the reason and the time, until
//! the app marks it resolved.

use rusqlite::OptionalExtension;
use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::outbox::{Answer, OutboxEntry};
use super::{StoreCore, sync_tables};
use crate::error::ClientError;
use crate::schema_mapping::quote;

/// A rolled-back local write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub id: i64,
    pub mutation_id: String,
    /// The local table (shape) it was written to.
    pub shape: String,
    /// The row key (JSON array of the primary-key values).
    pub row_key: String,
    /// `conflict` (newer writes won `lost`) or `rejected` (nothing was written).
    pub status: String,
    /// The write as the device made it (the mutation's JSON).
    pub local: Json,
    /// The server's row (the answer's row, else the last one received; null: no row).
    pub server: Json,
    pub lost: Vec<String>,
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub resolved: bool,
}

impl StoreCore {
    pub(crate) fn record_conflict(
        &mut self,
        shape: &str,
        key: &str,
        entry: &OutboxEntry,
        answer: Answer<'_>,
    ) -> Result<Conflict, ClientError> {
        let server = match answer.row() {
            Some(row) => Json::Object(row.clone()),
            None => self.server_row_json(shape, key)?,
        };
        let reason = answer.reason();
        let at = super::mirror::now_millis();
        let lost = serde_json::to_string(answer.lost()).unwrap_or_default();
        self.conn.execute(
            "INSERT INTO _shapesync_conflicts
             (mutation_id, shape, row_key, status, local, server, lost, reason, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            (
                &entry.mutation_id,
                shape,
                key,
                answer.status(),
                entry.body.to_string(),
                server.to_string(),
                &lost,
                &reason,
                at,
            ),
        )?;
        Ok(Conflict {
            id: self.conn.last_insert_rowid(),
            mutation_id: entry.mutation_id.clone(),
            shape: shape.to_owned(),
            row_key: key.to_owned(),
            status: answer.status().to_owned(),
            local: entry.body.clone(),
            server,
            lost: answer.lost().to_vec(),
            reason,
            at,
            resolved: false,
        })
    }

    /// The server's version of a row, as JSON (from the shadow when the row has overlays).
    fn server_row_json(&self, shape: &str, key: &str) -> Result<Json, ClientError> {
        let schema = self.schema(shape)?;
        let shadow = quote(&sync_tables::shadow_table(shape));
        let row = self
            .conn
            .query_row(
                &format!(
                    "SELECT _present, {} FROM {shadow} WHERE _key = ?1",
                    schema.column_list()
                ),
                [key],
                |r| {
                    let present: bool = r.get(0)?;
                    let mut object = Map::new();
                    for (i, c) in schema.columns.iter().enumerate() {
                        let value: rusqlite::types::Value = r.get(i + 1)?;
                        object.insert(c.name.clone(), c.storage.to_json(&value));
                    }
                    Ok(present.then_some(Json::Object(object)))
                },
            )
            .optional()?;
        Ok(row.flatten().unwrap_or(Json::Null))
    }

    /// Recorded conflicts, oldest first (`include_resolved` to see them all).
    pub fn conflicts(&self, include_resolved: bool) -> Result<Vec<Conflict>, ClientError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, mutation_id, shape, row_key, status, local, server, lost, reason, at,
                    resolved
             FROM _shapesync_conflicts WHERE resolved = 0 OR ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([include_resolved], |r| {
            let parse = |text: Option<String>| {
                text.and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(Json::Null)
            };
            let lost: Option<String> = r.get(7)?;
            Ok(Conflict {
                id: r.get(0)?,
                mutation_id: r.get(1)?,
                shape: r.get(2)?,
                row_key: r.get(3)?,
                status: r.get(4)?,
                local: parse(r.get(5)?),
                server: parse(r.get(6)?),
                lost: lost
                    .and_then(|l| serde_json::from_str(&l).ok())
                    .unwrap_or_default(),
                reason: r.get(8)?,
                at: r.get(9)?,
                resolved: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a conflict as seen by the user (it stays in the table).
    pub fn resolve_conflict(&mut self, id: i64) -> Result<(), ClientError> {
        self.conn.execute(
            "UPDATE _shapesync_conflicts SET resolved = 1 WHERE id = ?1",
            [id],
        )?;
        self.refresh_counts()
    }
}
