//! Server rows into the app's tables.
//!
//! Each shape has a table named by the user (`T`, created from `electric-schema`, see
//! [`crate::schema_mapping`]) holding what the app reads: the server's rows with pending local
//! values on top. A row without overlays is written straight into `T`; a row with overlays
//! keeps the server's version in the shadow table and `T` is recomputed from it
//! ([`super::overlay`]), so incoming changes never erase a local value.
//!
//! A fetch from scratch (first sync, 409, must-refetch) starts with [`BatchStep::Reset`]:
//! inside the batch's transaction the server rows are cleared (pending local writes stay as
//! overlays), so is their tag state, and, if the columns or types changed, `T` is recreated
//! with the new columns; the snapshot then refills it and the commit at up-to-date makes the
//! swap visible at once.
//!
//! A `move-out` event deletes the rows it takes out of the shape ([`super::tag_table`]) as
//! server deletes of its transaction, through the same steps, so a pending local write on such
//! a row is kept exactly as when the server deletes it.

use rusqlite::OptionalExtension;
use rusqlite::types::Value as SqlValue;
use shapes::handle::Handle;
use shapes::lsn::{Lsn, Xid32};
use shapes::wire::Operation;

use super::tags::{Move, TagHeaders};
use super::{Cursor, ShapeState, StoreCore, sync_tables};
use crate::error::ClientError;
use crate::schema_mapping::{ShapeSchema, quote};
use crate::shape_spec::ShapeSpec;

/// One change from the server, values by column position (`None`: not in the message, as for
/// the unchanged columns of an update).
#[derive(Debug, Clone)]
pub struct Change {
    pub op: Operation,
    pub values: Vec<Option<SqlValue>>,
    /// The transaction's 32-bit xid (`headers.txids`): matches a write's answer.
    pub txid: Option<Xid32>,
    /// `tags`, `removed_tags`, `active_conditions` (subquery shapes only).
    pub tags: Option<Box<TagHeaders>>,
}

/// What a batch applies, in log order.
#[derive(Debug, Clone)]
pub enum Incoming {
    Change(Change),
    Move(Move),
}

/// A step of a shape's batch (see the module docs of [`crate::store`]).
#[derive(Debug)]
pub enum BatchStep {
    /// A fetch from scratch begins: `electric-schema` of the new snapshot.
    Reset {
        schema_json: String,
    },
    Apply(Vec<Incoming>),
    /// Up-to-date: record the position and commit.
    Commit {
        handle: Handle,
        offset: String,
        global_lsn: Option<Lsn>,
    },
    Abort,
}

impl StoreCore {
    /// Registers a subscription and returns where it resumes. A changed definition starts
    /// from scratch.
    pub fn register(&mut self, spec: &ShapeSpec) -> Result<Cursor, ClientError> {
        let cursor = self.register_definition(spec)?;
        self.conn.execute(
            "UPDATE _shapesync_shapes SET priority = ?2 WHERE name = ?1",
            (&spec.name, spec.priority),
        )?;
        Ok(cursor)
    }

    fn register_definition(&mut self, spec: &ShapeSpec) -> Result<Cursor, ClientError> {
        let definition = spec.definition();
        type Stored = (String, Option<String>, String, Option<String>, i64);
        let stored: Option<Stored> = self
            .conn
            .query_row(
                "SELECT definition, handle, \"offset\", schema, global_lsn
                 FROM _shapesync_shapes WHERE name = ?1",
                [&spec.name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        match stored {
            Some((stored_definition, handle, offset, schema, global_lsn))
                if stored_definition == definition =>
            {
                // Stored from a header that parsed as a handle; a file written before the
                // check may hold one that does not: resume from scratch then.
                let (handle, offset) = match handle.map(|h| h.parse::<Handle>()) {
                    Some(Err(_)) => (None, "-1".to_owned()),
                    Some(Ok(handle)) => (Some(handle), offset),
                    None => (None, offset),
                };
                Ok(Cursor {
                    handle,
                    offset,
                    schema_json: schema,
                    global_lsn: Lsn(global_lsn.max(0) as u64),
                })
            }
            Some((_, _, _, schema, _)) => {
                // The rows are another shape's until the new snapshot commits: synced up to
                // nothing yet.
                self.conn.execute(
                    "UPDATE _shapesync_shapes SET definition = ?2, pg_table = ?3, handle = NULL,
                     \"offset\" = '-1', global_lsn = 0 WHERE name = ?1",
                    (&spec.name, &definition, &spec.table),
                )?;
                if let Some(state) = self.shapes.get_mut(&spec.name) {
                    state.definition = definition;
                    state.table = spec.table.clone();
                    state.global_lsn = Lsn::ZERO;
                }
                Ok(Cursor {
                    handle: None,
                    offset: "-1".into(),
                    schema_json: schema,
                    global_lsn: Lsn::ZERO,
                })
            }
            None => {
                self.claim_table_name(&spec.name)?;
                self.conn.execute(
                    "INSERT INTO _shapesync_shapes (name, definition, pg_table) VALUES (?1, ?2, ?3)",
                    (&spec.name, &definition, &spec.table),
                )?;
                self.shapes.insert(
                    spec.name.clone(),
                    ShapeState {
                        definition,
                        table: spec.table.clone(),
                        schema: None,
                        schema_json: None,
                        overlaid: Default::default(),
                        global_lsn: Lsn::ZERO,
                        tagged: false,
                    },
                );
                Ok(Cursor {
                    handle: None,
                    offset: "-1".into(),
                    schema_json: None,
                    global_lsn: Lsn::ZERO,
                })
            }
        }
    }

    /// A new subscription must not take over a table the app made itself.
    fn claim_table_name(&self, name: &str) -> Result<(), ClientError> {
        let exists: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM sqlite_master WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        match exists {
            Some(_) => Err(ClientError::Shape {
                name: name.to_owned(),
                message: "a table or view of that name exists and is not a shapesync mirror; \
                          choose another local name (NAME=TABLE)"
                    .into(),
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn batch_step(&mut self, shape: &str, step: BatchStep) -> Result<(), ClientError> {
        let result = match step {
            BatchStep::Abort => {
                self.end_batch(false)?;
                return self.load();
            }
            BatchStep::Reset { schema_json } => self
                .begin_batch(shape)
                .and_then(|()| self.reset(shape, &schema_json)),
            BatchStep::Apply(incoming) => self
                .begin_batch(shape)
                .and_then(|()| self.apply_incoming(shape, incoming)),
            BatchStep::Commit {
                handle,
                offset,
                global_lsn,
            } => self
                .begin_batch(shape)
                .and_then(|()| self.commit_cursor(shape, &handle, &offset, global_lsn))
                .and_then(|()| self.end_batch(true))
                .and_then(|()| self.refresh_counts()),
        };
        if result.is_err() {
            let _ = self.end_batch(false);
            let _ = self.load();
        }
        result
    }

    fn reset(&mut self, shape: &str, schema_json: &str) -> Result<(), ClientError> {
        let schema = ShapeSchema::parse(schema_json).map_err(|e| ClientError::Shape {
            name: shape.to_owned(),
            message: e.to_string(),
        })?;
        let state = self.shape(shape)?.clone();
        let same_columns = state.schema.as_ref() == Some(&schema) && self.table_exists(shape)?;
        self.clear_tags(shape)?;
        if same_columns {
            self.conn
                .execute(&format!("DELETE FROM {}", quote(shape)), [])?;
            self.conn.execute(
                &format!(
                    "UPDATE {} SET _present = 0",
                    quote(&sync_tables::shadow_table(shape))
                ),
                [],
            )?;
        } else {
            self.migrate(shape, &state, &schema)?;
        }
        self.conn.execute(
            "UPDATE _shapesync_shapes SET schema = ?2 WHERE name = ?1",
            (shape, schema_json),
        )?;
        if let Some(state) = self.shapes.get_mut(shape) {
            state.schema = Some(schema.clone());
            state.schema_json = Some(schema_json.to_owned());
        }
        for key in state.overlaid {
            self.materialize(shape, &schema, &key)?;
        }
        Ok(())
    }

    fn table_exists(&self, name: &str) -> Result<bool, ClientError> {
        let found: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// (Re)creates the mirror and shadow tables for new columns; rows with overlays keep their
    /// shadow entry (without server values, which the snapshot brings back).
    fn migrate(
        &mut self,
        shape: &str,
        state: &ShapeState,
        schema: &ShapeSchema,
    ) -> Result<(), ClientError> {
        if state.schema.is_some() {
            tracing::info!(
                shape,
                "the shape's columns changed: recreating the local table"
            );
        }
        let shadow = sync_tables::shadow_table(shape);
        self.conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS {t}; DROP TABLE IF EXISTS {s}; {create_t}; {create_s};",
            t = quote(shape),
            s = quote(&shadow),
            create_t = schema.create_table_sql(shape, "", true),
            create_s = schema.create_table_sql(
                &shadow,
                "_key TEXT PRIMARY KEY, _present INTEGER NOT NULL",
                false
            ),
        ))?;
        let mut insert = self.conn.prepare(&format!(
            "INSERT INTO {} (_key, _present) VALUES (?1, 0)",
            quote(&shadow)
        ))?;
        for key in &state.overlaid {
            insert.execute([key])?;
        }
        Ok(())
    }

    fn apply_incoming(&mut self, shape: &str, incoming: Vec<Incoming>) -> Result<(), ClientError> {
        let schema = self.schema(shape)?;
        // Applying server changes never adds an overlay: false stays false for the batch.
        let has_overlays = !self.shape(shape)?.overlaid.is_empty();
        for item in incoming {
            match item {
                Incoming::Change(change) => {
                    self.apply_change(shape, &schema, has_overlays, &change)?
                }
                Incoming::Move(event) => {
                    for delete in self.apply_move(shape, &schema, &event)? {
                        self.apply_change(shape, &schema, has_overlays, &delete)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn apply_change(
        &mut self,
        shape: &str,
        schema: &ShapeSchema,
        has_overlays: bool,
        change: &Change,
    ) -> Result<(), ClientError> {
        let Some(key_values) = schema
            .pk
            .iter()
            .map(|&i| change.values.get(i).and_then(Option::as_ref))
            .collect::<Option<Vec<&SqlValue>>>()
        else {
            tracing::warn!(shape, "a change without its primary key: ignored");
            return Ok(());
        };
        let tracks_tags =
            change.tags.is_some() || (change.op == Operation::Delete && self.shape(shape)?.tagged);
        if tracks_tags {
            let key = ShapeSchema::row_key(key_values.iter().copied());
            self.track_tags(shape, &key, change)?;
        }
        let echo = change
            .txid
            .and_then(|txid| self.acked_by_txid.get(&txid).cloned());
        if !has_overlays && echo.is_none() {
            return self.write_server_row(shape, schema, change, &key_values, false);
        }
        let key = ShapeSchema::row_key(key_values.iter().copied());
        if let Some(seqs) = echo {
            for seq in seqs {
                self.drop_overlays(shape, seq, Some(&key), None)?;
                self.release_if_done(seq)?;
            }
        }
        let overlaid = self.shape(shape)?.overlaid.contains(&key);
        self.write_server_row(shape, schema, change, &key_values, overlaid)?;
        if overlaid {
            self.materialize(shape, schema, &key)?;
        }
        Ok(())
    }

    /// Writes a change into `T` (or into the shadow table when the row has overlays).
    fn write_server_row(
        &self,
        shape: &str,
        schema: &ShapeSchema,
        change: &Change,
        key_values: &[&SqlValue],
        shadow: bool,
    ) -> Result<(), ClientError> {
        let key = shadow.then(|| SqlValue::Text(ShapeSchema::row_key(key_values.iter().copied())));
        let (sql, params) = match &key {
            Some(key) => shadow_sql(&sync_tables::shadow_table(shape), schema, change, key),
            None => mirror_sql(shape, schema, change, key_values),
        };
        if let Some(sql) = sql {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            stmt.execute(rusqlite::params_from_iter(params))?;
        }
        Ok(())
    }

    fn commit_cursor(
        &mut self,
        shape: &str,
        handle: &Handle,
        offset: &str,
        global_lsn: Option<Lsn>,
    ) -> Result<(), ClientError> {
        let lsn = global_lsn.unwrap_or_default().as_u64() as i64;
        self.conn.execute(
            "UPDATE _shapesync_shapes SET handle = ?2, \"offset\" = ?3,
             global_lsn = max(global_lsn, ?4), last_sync = ?5 WHERE name = ?1",
            (shape, handle.as_str(), offset, lsn, now_millis()),
        )?;
        if let Some(lsn) = global_lsn {
            if let Some(state) = self.shapes.get_mut(shape) {
                state.global_lsn = state.global_lsn.max(lsn);
            }
            self.drop_by_lsn(shape, lsn)?;
        }
        self.sweep_unknown_lsn(shape)
    }
}

pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

type Statement<'a> = (Option<String>, Vec<&'a SqlValue>);

/// A server change as SQL on the app's table (`None`: nothing to write).
fn mirror_sql<'a>(
    table: &str,
    schema: &ShapeSchema,
    change: &'a Change,
    key_values: &[&'a SqlValue],
) -> Statement<'a> {
    let table = quote(table);
    match change.op {
        Operation::Insert => {
            let holes = placeholders(1, schema.columns.len());
            let sql = format!(
                "INSERT OR REPLACE INTO {table} ({}) VALUES ({holes})",
                schema.column_list()
            );
            (Some(sql), every_value(change))
        }
        Operation::Update => {
            let (sets, mut params) = assignments(schema, change, 1);
            if sets.is_empty() {
                return (None, params);
            }
            let pred = schema.key_predicate(params.len() + 1);
            params.extend_from_slice(key_values);
            let sql = format!("UPDATE {table} SET {} WHERE {pred}", sets.join(", "));
            (Some(sql), params)
        }
        Operation::Delete => {
            let sql = format!("DELETE FROM {table} WHERE {}", schema.key_predicate(1));
            (Some(sql), key_values.to_vec())
        }
    }
}

/// A server change as SQL on the shadow table (the server's version of rows with overlays).
fn shadow_sql<'a>(
    table: &str,
    schema: &ShapeSchema,
    change: &'a Change,
    key: &'a SqlValue,
) -> Statement<'a> {
    let table = quote(table);
    match change.op {
        Operation::Insert => {
            let holes = placeholders(2, schema.columns.len());
            let sql = format!(
                "INSERT OR REPLACE INTO {table} (_key, _present, {}) VALUES (?1, 1, {holes})",
                schema.column_list()
            );
            let mut params = vec![key];
            params.extend(every_value(change));
            (Some(sql), params)
        }
        Operation::Update => {
            let (mut sets, values) = assignments(schema, change, 2);
            sets.push("_present = 1".into());
            let sql = format!("UPDATE {table} SET {} WHERE _key = ?1", sets.join(", "));
            let mut params = vec![key];
            params.extend(values);
            (Some(sql), params)
        }
        Operation::Delete => {
            let sql = format!("UPDATE {table} SET _present = 0 WHERE _key = ?1");
            (Some(sql), vec![key])
        }
    }
}

/// `"col" = ?n, …` for the columns an update carries, numbering from `first`.
fn assignments<'a>(
    schema: &ShapeSchema,
    change: &'a Change,
    first: usize,
) -> (Vec<String>, Vec<&'a SqlValue>) {
    let mut sets = Vec::new();
    let mut params = Vec::new();
    for (i, value) in change.values.iter().enumerate() {
        if let Some(value) = value {
            sets.push(format!(
                "{} = ?{}",
                quote(&schema.columns[i].name),
                first + params.len()
            ));
            params.push(value);
        }
    }
    (sets, params)
}

fn every_value(change: &Change) -> Vec<&SqlValue> {
    change
        .values
        .iter()
        .map(|v| v.as_ref().unwrap_or(&SqlValue::Null))
        .collect()
}

/// `?first, …, ?(first + n - 1)`.
fn placeholders(first: usize, n: usize) -> String {
    let holes: Vec<String> = (first..first + n).map(|i| format!("?{i}")).collect();
    holes.join(", ")
}
