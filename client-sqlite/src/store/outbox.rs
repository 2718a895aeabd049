//! Local writes: applied to the app's table at once (as overlays) and queued in the outbox in
//! the same SQLite transaction; later sent in order, and settled by the server's answer.

use std::collections::BTreeMap;

use base64::Engine as _;
use rusqlite::types::Value as SqlValue;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use shapes::lsn::{Lsn, Xid32};
use shapes::mutations::{Mutation, MutationResponse, Outcome, RowJson};

use super::{ClientEvent, Conflict, StoreCore};
use crate::error::ClientError;
use crate::schema_mapping::ShapeSchema;

/// The kind of a local write: the op of `/v1/mutations` (one definition, in `shapes`).
pub use shapes::mutations::Op as WriteOp;

/// A write through the client: to the local table `shape`, sent to the shape's Postgres table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LocalWrite {
    /// The local table; may be left out in JSON when the caller names it otherwise.
    #[serde(default)]
    pub shape: String,
    pub op: WriteOp,
    /// Primary-key column → value (for inserts, taken from `values` when absent here).
    #[serde(default)]
    pub key: Map<String, Json>,
    /// Column → new value (JSON null, booleans, numbers, or strings in Postgres text form).
    #[serde(default)]
    pub values: Map<String, Json>,
    /// Yjs column → update bytes (v1 encoding), merged on the server.
    #[serde(skip)]
    pub merge: BTreeMap<String, Vec<u8>>,
}

/// A queued write: its mutation id and place in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub mutation_id: String,
    pub seq: i64,
}

/// How the server answered a batch of writes.
#[derive(Debug, Clone)]
pub enum BatchAnswer {
    /// A result per write (`POST /v1/mutations`' response, the type the proxy sends).
    Results(MutationResponse),
    /// The whole batch was refused for good (400, 413): every write in it is rejected, so the
    /// outbox does not stay stuck behind it.
    Refused { status: u16, message: String },
}

/// One write's answer, as the store settles it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer<'a> {
    Outcome(&'a Outcome),
    BatchRefused { status: u16, message: &'a str },
}

impl<'a> Answer<'a> {
    /// `applied`, `conflict`, `rejected` or `aborted`, as recorded with a conflict.
    pub(crate) fn status(self) -> &'static str {
        match self {
            Self::Outcome(outcome) => outcome.status(),
            Self::BatchRefused { .. } => "rejected",
        }
    }

    pub(crate) fn lost(self) -> &'a [String] {
        match self {
            Self::Outcome(outcome) => outcome.lost(),
            Self::BatchRefused { .. } => &[],
        }
    }

    pub(crate) fn row(self) -> Option<&'a RowJson> {
        match self {
            Self::Outcome(outcome) => outcome.row(),
            Self::BatchRefused { .. } => None,
        }
    }

    /// Why the write did not (fully) apply, in words for the conflict record.
    pub(crate) fn reason(self) -> String {
        let refusal = |code: &str, column: Option<&str>, message: &str| {
            format!(
                "rejected: {code} {}{message}",
                column.map(|c| format!("(column {c}) ")).unwrap_or_default()
            )
        };
        match self {
            Self::BatchRefused { status, message } => {
                refusal(&format!("http_{status}"), None, message)
            }
            Self::Outcome(Outcome::Rejected { error }) => {
                refusal(error.code.as_str(), error.column.as_deref(), &error.message)
            }
            Self::Outcome(outcome @ Outcome::Conflict { .. }) => {
                format!("newer writes won {}", outcome.lost().join(", "))
            }
            Self::Outcome(outcome) => format!("{} by the server", outcome.status()),
        }
    }
}

/// One outbox entry as sent.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub seq: i64,
    pub mutation_id: String,
    pub body: Json,
}

impl StoreCore {
    /// Applies a local write at once and queues it, in one transaction.
    pub fn enqueue(
        &mut self,
        write: &LocalWrite,
        timestamp_micros: i64,
    ) -> Result<Queued, ClientError> {
        self.in_transaction(|core| core.enqueue_in_tx(write, timestamp_micros))
    }

    fn enqueue_in_tx(&mut self, write: &LocalWrite, at: i64) -> Result<Queued, ClientError> {
        let schema = self.schema(&write.shape)?;
        let table = self.shape(&write.shape)?.table.clone();
        let (key_json, key) = checked_key(write, &schema)?;
        self.ensure_shadow(&write.shape, &schema, &key)?;
        let mutation_id = format!("{}-{:032x}", self.client_id, rand::random::<u128>());
        let body = mutation_body(write, &mutation_id, &table, &key_json, at)?;
        self.conn.execute(
            "INSERT INTO _shapesync_outbox (mutation_id, shape, row_key, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            (
                &mutation_id,
                &write.shape,
                &key,
                body.to_string(),
                super::mirror::now_millis(),
            ),
        )?;
        let seq = self.conn.last_insert_rowid();
        self.add_entries(seq, write, &schema, &key, &key_json)?;
        self.materialize(&write.shape, &schema, &key)?;
        self.refresh_counts()?;
        Ok(Queued { mutation_id, seq })
    }

    fn add_entries(
        &self,
        seq: i64,
        write: &LocalWrite,
        schema: &ShapeSchema,
        key: &str,
        key_json: &Map<String, Json>,
    ) -> Result<(), ClientError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO _shapesync_overlays (seq, shape, row_key, kind, col, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut add = |kind: &str, col: Option<&str>, value: SqlValue| {
            stmt.execute((seq, &write.shape, key, kind, col, value))
                .map(|_| ())
        };
        match write.op {
            WriteOp::Insert | WriteOp::Upsert => {
                add("exists", None, SqlValue::Null)?;
                for (name, value) in key_json {
                    let kind = storage(schema, name);
                    add("set", Some(name), kind.from_json(value))?;
                }
            }
            WriteOp::Delete => add("gone", None, SqlValue::Null)?,
            WriteOp::Update => {}
        }
        if write.op != WriteOp::Delete {
            for (name, value) in &write.values {
                add("set", Some(name), storage(schema, name).from_json(value))?;
            }
            for (name, update) in &write.merge {
                add("merge", Some(name), SqlValue::Blob(update.clone()))?;
            }
        }
        Ok(())
    }

    /// The first `limit` queued writes, in order.
    pub fn outbox_batch(&self, limit: usize) -> Result<Vec<OutboxEntry>, ClientError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, mutation_id, body FROM _shapesync_outbox ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(seq, mutation_id, body)| {
                let body = serde_json::from_str(&body)
                    .map_err(|e| ClientError::InvalidWrite(format!("outbox entry {seq}: {e}")))?;
                Ok(OutboxEntry {
                    seq,
                    mutation_id,
                    body,
                })
            })
            .collect()
    }

    /// Settles a sent batch with the server's answer; returns the conflicts it recorded.
    pub fn record_results(
        &mut self,
        sent: &[OutboxEntry],
        answer: &BatchAnswer,
    ) -> Result<Vec<Conflict>, ClientError> {
        let conflicts = self.in_transaction(|core| {
            let mut conflicts = Vec::new();
            match answer {
                BatchAnswer::Results(response) => {
                    let txid = response.txid.map(Xid32);
                    // Decimal, as the wire writes it; an unreadable one is treated as unknown.
                    let lsn = response
                        .lsn
                        .as_deref()
                        .and_then(|l| l.parse().ok())
                        .map(Lsn);
                    for result in &response.results {
                        let Some(entry) = sent.iter().find(|e| e.mutation_id == result.id) else {
                            continue;
                        };
                        let answer = Answer::Outcome(&result.outcome);
                        let settled = core.settle_one(entry, answer, txid, lsn)?;
                        conflicts.extend(settled);
                    }
                }
                BatchAnswer::Refused { status, message } => {
                    for entry in sent {
                        let answer = Answer::BatchRefused {
                            status: *status,
                            message,
                        };
                        conflicts.extend(core.settle_one(entry, answer, None, None)?);
                    }
                }
            }
            core.refresh_counts()?;
            Ok(conflicts)
        })?;
        for conflict in &conflicts {
            let _ = self.events.send(ClientEvent::Conflict(conflict.clone()));
        }
        Ok(conflicts)
    }

    fn settle_one(
        &mut self,
        entry: &OutboxEntry,
        answer: Answer<'_>,
        txid: Option<Xid32>,
        lsn: Option<Lsn>,
    ) -> Result<Option<Conflict>, ClientError> {
        if answer.status() == "aborted" {
            return Ok(None);
        }
        let (shape, key): (String, String) = self.conn.query_row(
            "DELETE FROM _shapesync_outbox WHERE seq = ?1 RETURNING shape, row_key",
            [entry.seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let conflict = match answer.status() {
            "applied" => None,
            "conflict" if answer.lost().is_empty() => None,
            "conflict" => {
                let whole = answer.row().is_none() || entry.body["op"] == "delete";
                let columns = (!whole).then_some(answer.lost());
                let conflict = self.record_conflict(&shape, &key, entry, answer)?;
                self.drop_overlays(&shape, entry.seq, None, columns)?;
                Some(conflict)
            }
            _ => {
                let conflict = self.record_conflict(&shape, &key, entry, answer)?;
                self.drop_overlays(&shape, entry.seq, None, None)?;
                Some(conflict)
            }
        };
        self.conn.execute(
            "INSERT OR REPLACE INTO _shapesync_acked (seq, shape, txid, lsn, acked_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            (
                entry.seq,
                &shape,
                txid.map(|t| i64::from(t.0)),
                lsn.map(|l| l.as_u64() as i64),
                self.clock_millis(),
            ),
        )?;
        if let Some(txid) = txid {
            self.acked_by_txid.entry(txid).or_default().push(entry.seq);
        }
        let seen = self.shape(&shape)?.global_lsn;
        if lsn.is_some_and(|lsn| lsn <= seen) {
            self.drop_overlays(&shape, entry.seq, None, None)?;
        }
        self.release_if_done(entry.seq)?;
        Ok(conflict)
    }

    /// Settles writes answered without an LSN, for every shape, once the grace has passed.
    pub fn sweep_all(&mut self) -> Result<(), ClientError> {
        let shapes: Vec<String> = self.shapes.keys().cloned().collect();
        self.in_transaction(|core| {
            for shape in &shapes {
                core.sweep_unknown_lsn(shape)?;
            }
            Ok(())
        })
    }
}

/// The write's primary key (as given, and as a row key), after checking its columns exist.
fn checked_key(
    write: &LocalWrite,
    schema: &ShapeSchema,
) -> Result<(Map<String, Json>, String), ClientError> {
    let mut key_json = Map::new();
    let mut key_values = Vec::new();
    for &i in &schema.pk {
        let name = &schema.columns[i].name;
        let value = write
            .key
            .get(name)
            .or_else(|| write.values.get(name))
            .ok_or_else(|| {
                ClientError::InvalidWrite(format!("the key column {name:?} is missing"))
            })?;
        key_json.insert(name.clone(), value.clone());
        key_values.push(schema.columns[i].storage.from_json(value));
    }
    for column in write.values.keys().chain(write.merge.keys()) {
        if schema.index_of(column).is_none() {
            return Err(ClientError::InvalidWrite(format!(
                "the shape {:?} has no column {column:?}",
                write.shape
            )));
        }
    }
    Ok((key_json, ShapeSchema::row_key(&key_values)))
}

/// The mutation as `/v1/mutations` takes it; stored as is, so a retry sends the same bytes.
fn mutation_body(
    write: &LocalWrite,
    mutation_id: &str,
    table: &str,
    key: &Map<String, Json>,
    at: i64,
) -> Result<Json, ClientError> {
    let timestamp = chrono::DateTime::from_timestamp_micros(at)
        .ok_or_else(|| ClientError::InvalidWrite(format!("bad timestamp {at}")))?
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let base64 = &base64::engine::general_purpose::STANDARD;
    let mutation = Mutation {
        id: mutation_id.to_owned(),
        table: table.to_owned(),
        op: write.op,
        key: key.clone(),
        values: write.values.clone(),
        merge: write
            .merge
            .iter()
            .map(|(c, u)| (c.clone(), json!(base64.encode(u))))
            .collect(),
        timestamp,
    };
    serde_json::to_value(mutation)
        .map_err(|e| ClientError::InvalidWrite(format!("encoding the mutation: {e}")))
}

fn storage(schema: &ShapeSchema, column: &str) -> crate::schema_mapping::StorageKind {
    schema
        .index_of(column)
        .map(|i| schema.columns[i].storage)
        .unwrap_or(crate::schema_mapping::StorageKind::Text)
}
