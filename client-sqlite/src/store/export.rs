//! Reading the user's data back out: the whole mirror as JSON (`export`), one cell (a Yjs
//! document's state), and when the last sync happened.

use std::io::Write;
use std::time::{Duration, SystemTime};

use rusqlite::OptionalExtension;
use rusqlite::types::Value as SqlValue;
use serde_json::{Map, Value as Json};
use shapes::lsn::Lsn;

use super::StoreCore;
use crate::error::ClientError;
use crate::schema_mapping::quote;

impl StoreCore {
    /// `{"table": [{…}, …], …}` for every synced shape, written row by row.
    pub fn export_json<W: Write>(&self, mut out: W) -> Result<W, ClientError> {
        let io = |e: std::io::Error| ClientError::InvalidWrite(format!("writing the export: {e}"));
        let mut names: Vec<&String> = self.shapes.keys().collect();
        names.sort();
        out.write_all(b"{").map_err(io)?;
        let mut first_table = true;
        for name in names {
            let Some(schema) = self.shapes[name].schema.as_ref() else {
                continue;
            };
            if !first_table {
                out.write_all(b",").map_err(io)?;
            }
            first_table = false;
            serde_json::to_writer(&mut out, name).map_err(|e| io(e.into()))?;
            out.write_all(b":[").map_err(io)?;
            let order: Vec<String> = schema
                .pk
                .iter()
                .map(|&i| quote(&schema.columns[i].name))
                .collect();
            let mut stmt = self.conn.prepare(&format!(
                "SELECT {} FROM {} ORDER BY {}",
                schema.column_list(),
                quote(name),
                order.join(", ")
            ))?;
            let mut rows = stmt.query([])?;
            let mut first_row = true;
            while let Some(row) = rows.next()? {
                let mut object = Map::new();
                for (i, c) in schema.columns.iter().enumerate() {
                    let value: SqlValue = row.get(i)?;
                    object.insert(c.name.clone(), c.storage.to_json(&value));
                }
                if !first_row {
                    out.write_all(b",").map_err(io)?;
                }
                first_row = false;
                serde_json::to_writer(&mut out, &Json::Object(object)).map_err(|e| io(e.into()))?;
            }
            out.write_all(b"]").map_err(io)?;
        }
        out.write_all(b"}\n").map_err(io)?;
        Ok(out)
    }

    /// The bytes in `column` of the row `key` as the app reads it (None: no row, or NULL).
    pub fn read_blob(
        &self,
        shape: &str,
        key: &Map<String, Json>,
        column: &str,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let schema = self.schema(shape)?;
        let index = schema.index_of(column).ok_or_else(|| {
            ClientError::InvalidWrite(format!("the shape {shape:?} has no column {column:?}"))
        })?;
        let mut key_values = Vec::new();
        for &i in &schema.pk {
            let c = &schema.columns[i];
            let value = key.get(&c.name).ok_or_else(|| {
                ClientError::InvalidWrite(format!("the key column {:?} is missing", c.name))
            })?;
            key_values.push(c.storage.from_json(value));
        }
        let value: Option<SqlValue> = self
            .conn
            .query_row(
                &format!(
                    "SELECT {} FROM {} WHERE {}",
                    quote(&schema.columns[index].name),
                    quote(shape),
                    schema.key_predicate(1)
                ),
                rusqlite::params_from_iter(key_values),
                |r| r.get(0),
            )
            .optional()?;
        Ok(match value {
            Some(SqlValue::Blob(b)) => Some(b),
            Some(SqlValue::Text(t)) => shapes::bytea::decode(&t),
            _ => None,
        })
    }

    /// When every shape was last up to date (as recorded by the last commits).
    pub fn last_sync(&self) -> Result<Option<SystemTime>, ClientError> {
        let millis: Option<i64> =
            self.conn
                .query_row("SELECT min(last_sync) FROM _shapesync_shapes", [], |r| {
                    r.get(0)
                })?;
        Ok(millis.map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)))
    }
}

/// What `status` shows about one subscription.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShapeSummary {
    pub name: String,
    pub table: String,
    pub handle: Option<String>,
    pub offset: String,
    pub rows: i64,
    /// The database position (LSN) the mirror of this shape includes: every transaction
    /// committed at or before it (0 = none yet). A decimal number in JSON, as on the wire.
    #[serde(serialize_with = "lsn_as_number")]
    pub synced_up_to: Lsn,
    /// Sync priority (0 first … 3 last).
    pub priority: u8,
    /// Its initial sync (or last refetch) is complete: the table is readable.
    pub ready: bool,
}

impl StoreCore {
    pub fn shape_summaries(&self) -> Result<Vec<ShapeSummary>, ClientError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, pg_table, handle, \"offset\", schema IS NOT NULL, global_lsn, priority
             FROM _shapesync_shapes ORDER BY priority, name",
        )?;
        type Row = (String, String, Option<String>, String, bool, i64, u8);
        let shapes: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (name, table, handle, offset, synced, global_lsn, priority) in shapes {
            let ready = synced && offset != "-1";
            let rows = if synced {
                self.conn
                    .query_row(&format!("SELECT count(*) FROM {}", quote(&name)), [], |r| {
                        r.get(0)
                    })
                    .unwrap_or(0)
            } else {
                0
            };
            out.push(ShapeSummary {
                name,
                table,
                handle,
                offset,
                rows,
                synced_up_to: Lsn(global_lsn.max(0) as u64),
                priority,
                ready,
            });
        }
        Ok(out)
    }
}

fn lsn_as_number<S: serde::Serializer>(lsn: &Lsn, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(lsn.as_u64())
}
