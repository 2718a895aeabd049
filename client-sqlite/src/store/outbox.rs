//! Local writes: applied to the app's table at once (as overlays) and queued in the outbox in
//! the same SQLite transaction; later sent in order, and settled by the server's answer.

use std::collections::BTreeMap;

use base64::Engine as _;
use rusqlite::types::Value as SqlValue;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use super::{ClientEvent, Conflict, StoreCore};
use crate::error::ClientError;
use crate::schema_mapping::ShapeSchema;

/// The kind of a local write (as `/v1/mutations` names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOp {
    Insert,
    Update,
    Upsert,
    Delete,
}

impl WriteOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Upsert => "upsert",
            Self::Delete => "delete",
        }
    }
}

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

/// The server's answer to a batch (PROTOCOL.md part 2), read leniently.
#[derive(Debug, Clone, Deserialize)]
pub struct MutationResponse {
    pub txid: Option<u64>,
    pub lsn: Option<String>,
    pub results: Vec<MutationResult>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MutationResult {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub lost: Vec<String>,
    #[serde(default)]
    pub row: Option<Map<String, Json>>,
    #[serde(default)]
    pub error: Option<Json>,
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
        response: &MutationResponse,
    ) -> Result<Vec<Conflict>, ClientError> {
        let conflicts = self.in_transaction(|core| {
            let mut conflicts = Vec::new();
            for result in &response.results {
                let Some(entry) = sent.iter().find(|e| e.mutation_id == result.id) else {
                    continue;
                };
                if let Some(conflict) = core.settle_one(entry, result, response)? {
                    conflicts.push(conflict);
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
        result: &MutationResult,
        response: &MutationResponse,
    ) -> Result<Option<Conflict>, ClientError> {
        if result.status == "aborted" {
            return Ok(None);
        }
        let (shape, key): (String, String) = self.conn.query_row(
            "DELETE FROM _shapesync_outbox WHERE seq = ?1 RETURNING shape, row_key",
            [entry.seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let lsn = response.lsn.as_deref().and_then(|l| l.parse::<u64>().ok());
        let conflict = match result.status.as_str() {
            "applied" => None,
            "conflict" if result.lost.is_empty() => None,
            "conflict" => {
                let whole = result.row.is_none() || entry.body["op"] == "delete";
                let columns = (!whole).then_some(result.lost.as_slice());
                let conflict = self.record_conflict(&shape, &key, entry, result)?;
                self.drop_overlays(&shape, entry.seq, None, columns)?;
                Some(conflict)
            }
            _ => {
                let conflict = self.record_conflict(&shape, &key, entry, result)?;
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
                response.txid.map(|t| t as i64),
                lsn.map(|l| l as i64),
                self.clock_millis(),
            ),
        )?;
        if let Some(txid) = response.txid {
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
    let mut body = json!({"id": mutation_id, "table": table, "op": write.op.as_str(),
        "key": key, "timestamp": timestamp});
    if !write.values.is_empty() {
        body["values"] = Json::Object(write.values.clone());
    }
    if !write.merge.is_empty() {
        let base64 = &base64::engine::general_purpose::STANDARD;
        let merge: Map<String, Json> = write
            .merge
            .iter()
            .map(|(c, u)| (c.clone(), json!(base64.encode(u))))
            .collect();
        body["merge"] = Json::Object(merge);
    }
    Ok(body)
}

fn storage(schema: &ShapeSchema, column: &str) -> crate::schema_mapping::StorageKind {
    schema
        .index_of(column)
        .map(|i| schema.columns[i].storage)
        .unwrap_or(crate::schema_mapping::StorageKind::Text)
}
