//! The tag state of subquery shapes' rows ([`super::tags`]) in the client's database, written
//! in the batch's transaction with the rows themselves, so a client restarted at its last
//! offset still knows which rows a later move-out takes:
//!
//! - `_shapesync_row_tags`: per shape and row key, the row's tags and active conditions (JSON);
//! - `_shapesync_tag_slots`: per shape, every `(position, value)` of every row's tags, so the
//!   rows a pattern names are found through an index, not by reading all of them.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension};
use shapes::wire::Operation;

use super::StoreCore;
use super::mirror::Change;
use super::tags::{self, Move, MovePattern, RowTags, TagRows};
use crate::error::ClientError;
use crate::schema_mapping::ShapeSchema;

/// One shape's tag state, on the store's connection.
struct TagTable<'c> {
    conn: &'c Connection,
    shape: &'c str,
}

impl TagRows for TagTable<'_> {
    type Error = ClientError;

    fn row(&mut self, key: &str) -> Result<Option<RowTags>, ClientError> {
        let stored: Option<(String, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT tags, active FROM _shapesync_row_tags WHERE shape = ?1 AND row_key = ?2",
            )?
            .query_row((self.shape, key), |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((tags, active)) = stored else {
            return Ok(None);
        };
        Ok(Some(RowTags {
            tags: from_json(&tags, 0)?,
            active: active.map(|a| from_json(&a, 1)).transpose()?,
        }))
    }

    fn store(
        &mut self,
        key: &str,
        before: Option<&RowTags>,
        row: &RowTags,
    ) -> Result<(), ClientError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO _shapesync_row_tags (shape, row_key, tags, active)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute((
                self.shape,
                key,
                to_json(&row.tags)?,
                row.active.as_ref().map(to_json).transpose()?,
            ))?;
        let old = before.map(RowTags::all_slots).unwrap_or_default();
        let new = row.all_slots();
        self.unindex(key, old.difference(&new))?;
        let mut insert = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO _shapesync_tag_slots (shape, pos, value, row_key)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (pos, value) in new.difference(&old) {
            insert.execute((self.shape, *pos as i64, value, key))?;
        }
        Ok(())
    }

    fn forget(&mut self, key: &str, row: &RowTags) -> Result<(), ClientError> {
        self.conn
            .prepare_cached("DELETE FROM _shapesync_row_tags WHERE shape = ?1 AND row_key = ?2")?
            .execute((self.shape, key))?;
        self.unindex(key, row.all_slots().iter())
    }

    fn matching(&mut self, pattern: &MovePattern) -> Result<Vec<String>, ClientError> {
        let Ok(pos) = i64::try_from(pattern.pos) else {
            return Ok(Vec::new());
        };
        let keys = self
            .conn
            .prepare_cached(
                "SELECT row_key FROM _shapesync_tag_slots
                 WHERE shape = ?1 AND pos = ?2 AND value = ?3 ORDER BY row_key",
            )?
            .query_map((self.shape, pos, &pattern.value), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }
}

impl TagTable<'_> {
    fn unindex<'s>(
        &self,
        key: &str,
        slots: impl Iterator<Item = &'s (usize, String)>,
    ) -> Result<(), ClientError> {
        let mut delete = self.conn.prepare_cached(
            "DELETE FROM _shapesync_tag_slots
             WHERE shape = ?1 AND pos = ?2 AND value = ?3 AND row_key = ?4",
        )?;
        for (pos, value) in slots {
            delete.execute((self.shape, *pos as i64, value, key))?;
        }
        Ok(())
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// A column this module wrote, read back; unreadable text is a damaged database.
fn from_json<T: serde::de::DeserializeOwned>(text: &str, column: usize) -> rusqlite::Result<T> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}

impl StoreCore {
    fn tag_table<'c>(&'c self, shape: &'c str) -> TagTable<'c> {
        TagTable {
            conn: &self.conn,
            shape,
        }
    }

    /// Follows a row message's tag headers (a delete ends the row's state).
    pub(crate) fn track_tags(
        &mut self,
        shape: &str,
        key: &str,
        change: &Change,
    ) -> Result<(), ClientError> {
        tags::on_change(
            &mut self.tag_table(shape),
            key,
            change.op,
            change.tags.as_deref(),
        )?;
        if change.tags.is_some()
            && let Some(state) = self.shapes.get_mut(shape)
        {
            state.tagged = true;
        }
        Ok(())
    }

    /// Follows a move event; returns, for the rows a move-out takes out of the shape, deletes
    /// as the server would have sent them (key columns, the event's transaction).
    pub(crate) fn apply_move(
        &mut self,
        shape: &str,
        schema: &ShapeSchema,
        event: &Move,
    ) -> Result<Vec<Change>, ClientError> {
        let gone = tags::on_move(&mut self.tag_table(shape), event)?;
        gone.iter()
            .map(|key| {
                let mut values = vec![None; schema.columns.len()];
                for (&i, value) in schema.pk.iter().zip(Self::key_values(schema, key)?) {
                    values[i] = Some(value);
                }
                Ok(Change {
                    op: Operation::Delete,
                    values,
                    txid: event.txid,
                    tags: None,
                })
            })
            .collect()
    }

    /// Forgets every row's tag state (a fetch from scratch).
    pub(crate) fn clear_tags(&mut self, shape: &str) -> Result<(), ClientError> {
        self.conn
            .execute("DELETE FROM _shapesync_row_tags WHERE shape = ?1", [shape])?;
        self.conn
            .execute("DELETE FROM _shapesync_tag_slots WHERE shape = ?1", [shape])?;
        if let Some(state) = self.shapes.get_mut(shape) {
            state.tagged = false;
        }
        Ok(())
    }

    pub(crate) fn has_tags(&self, shape: &str) -> Result<bool, ClientError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM _shapesync_row_tags WHERE shape = ?1)",
            [shape],
            |r| r.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests;
