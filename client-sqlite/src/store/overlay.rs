//! Pending local values on top of the server's rows.
//!
//! A local write records, per column it sets, an overlay entry (`set`; `merge` for a Yjs
//! update; `exists`/`gone` for row existence), tagged with the write's sequence number. A row
//! with entries has a *shadow*: the server's version of the row, kept apart. What the app reads
//! in `T` is always `shadow` replayed with the row's entries in write order
//! ([`StoreCore::materialize`]); a row without entries is the server's row as is.
//!
//! Entries leave when their write is settled: its txid arrives in a change of that row, a
//! shape's up-to-date carries `global_last_seen_lsn` ≥ its LSN, the server answered with no LSN
//! and the grace period passed, or it lost (conflict: the lost columns; rejected: all).

use rusqlite::OptionalExtension;
use rusqlite::types::Value as SqlValue;
use shapes::lsn::{Lsn, Xid32};

use super::{StoreCore, sync_tables};
use crate::error::ClientError;
use crate::schema_mapping::{ShapeSchema, quote};

impl StoreCore {
    /// The key values of a row key, typed as the key columns are stored.
    pub(crate) fn key_values(
        schema: &ShapeSchema,
        key: &str,
    ) -> Result<Vec<SqlValue>, ClientError> {
        let parts: Vec<serde_json::Value> = serde_json::from_str(key)
            .map_err(|e| ClientError::InvalidWrite(format!("bad row key {key}: {e}")))?;
        Ok(schema
            .pk
            .iter()
            .zip(&parts)
            .map(|(&i, part)| schema.columns[i].storage.from_json(part))
            .collect())
    }

    /// Gives `key` a shadow holding the server's current row (from `T`, which has no overlay
    /// for it yet).
    pub(crate) fn ensure_shadow(
        &mut self,
        shape: &str,
        schema: &ShapeSchema,
        key: &str,
    ) -> Result<(), ClientError> {
        if self.shape(shape)?.overlaid.contains(key) {
            return Ok(());
        }
        let key_values = Self::key_values(schema, key)?;
        let shadow = quote(&sync_tables::shadow_table(shape));
        let copied = self.conn.execute(
            &format!(
                "INSERT OR REPLACE INTO {shadow} (_key, _present, {cols})
                 SELECT ?1, 1, {cols} FROM {t} WHERE {pred}",
                cols = schema.column_list(),
                t = quote(shape),
                pred = schema.key_predicate(2),
            ),
            rusqlite::params_from_iter(
                std::iter::once(SqlValue::Text(key.to_owned())).chain(key_values),
            ),
        )?;
        if copied == 0 {
            self.conn.execute(
                &format!("INSERT OR REPLACE INTO {shadow} (_key, _present) VALUES (?1, 0)"),
                [key],
            )?;
        }
        if let Some(state) = self.shapes.get_mut(shape) {
            state.overlaid.insert(key.to_owned());
        }
        Ok(())
    }

    /// Recomputes `T`'s row for `key`: the shadow replayed with the pending entries. A row
    /// left with no entries loses its shadow.
    pub(crate) fn materialize(
        &mut self,
        shape: &str,
        schema: &ShapeSchema,
        key: &str,
    ) -> Result<(), ClientError> {
        let key_values = Self::key_values(schema, key)?;
        let n = schema.columns.len();
        let shadow = quote(&sync_tables::shadow_table(shape));
        let server: Option<(bool, Vec<SqlValue>)> = self
            .conn
            .prepare_cached(&format!(
                "SELECT _present, {} FROM {shadow} WHERE _key = ?1",
                schema.column_list()
            ))?
            .query_row([key], |r| {
                let present: bool = r.get(0)?;
                let values = (1..=n).map(|i| r.get(i)).collect::<Result<_, _>>()?;
                Ok((present, values))
            })
            .optional()?;
        let mut row = server.and_then(|(present, values)| present.then_some(values));
        let entries = self.entries(shape, key)?;
        for (kind, col, value) in &entries {
            let column = col.as_deref().and_then(|c| schema.index_of(c));
            match (kind.as_str(), row.as_mut(), column) {
                ("exists", None, _) => {
                    let mut fresh = vec![SqlValue::Null; n];
                    for (&i, v) in schema.pk.iter().zip(&key_values) {
                        fresh[i] = v.clone();
                    }
                    row = Some(fresh);
                }
                ("gone", _, _) => row = None,
                ("set", Some(r), Some(i)) => r[i] = value.clone(),
                ("merge", Some(r), Some(i)) => r[i] = crate::yjs_doc::merge_values(&r[i], value)?,
                _ => {}
            }
        }
        self.replace_row(shape, schema, &key_values, row.as_deref())?;
        if entries.is_empty() {
            self.conn
                .execute(&format!("DELETE FROM {shadow} WHERE _key = ?1"), [key])?;
            if let Some(state) = self.shapes.get_mut(shape) {
                state.overlaid.remove(key);
            }
        }
        Ok(())
    }

    fn entries(
        &self,
        shape: &str,
        key: &str,
    ) -> Result<Vec<(String, Option<String>, SqlValue)>, ClientError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, col, value FROM _shapesync_overlays
             WHERE shape = ?1 AND row_key = ?2 ORDER BY seq, rowid",
        )?;
        let rows = stmt
            .query_map([shape, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn replace_row(
        &self,
        shape: &str,
        schema: &ShapeSchema,
        key_values: &[SqlValue],
        row: Option<&[SqlValue]>,
    ) -> Result<(), ClientError> {
        let t = quote(shape);
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM {t} WHERE {}",
                schema.key_predicate(1)
            ))?
            .execute(rusqlite::params_from_iter(key_values))?;
        if let Some(row) = row {
            let holes: Vec<String> = (1..=row.len()).map(|i| format!("?{i}")).collect();
            self.conn
                .prepare_cached(&format!(
                    "INSERT INTO {t} ({}) VALUES ({})",
                    schema.column_list(),
                    holes.join(", ")
                ))?
                .execute(rusqlite::params_from_iter(row))?;
        }
        Ok(())
    }

    /// Removes write `seq`'s entries (of one row, and of some columns, when given) and
    /// recomputes the rows they covered.
    pub(crate) fn drop_overlays(
        &mut self,
        shape: &str,
        seq: i64,
        key: Option<&str>,
        columns: Option<&[String]>,
    ) -> Result<(), ClientError> {
        let mut sql = String::from(
            "SELECT DISTINCT row_key FROM _shapesync_overlays WHERE seq = ?1 AND shape = ?2",
        );
        let mut filter = String::new();
        if key.is_some() {
            filter.push_str(" AND row_key = ?3");
        }
        if let Some(columns) = columns {
            let list: Vec<String> = columns
                .iter()
                .map(|c| format!("'{}'", c.replace('\'', "''")))
                .collect();
            filter.push_str(&format!(
                " AND kind IN ('set', 'merge') AND col IN ({})",
                list.join(",")
            ));
        }
        sql.push_str(&filter);
        let key_param = key.unwrap_or("");
        let params: Vec<&dyn rusqlite::ToSql> = match key {
            Some(_) => vec![&seq, &shape, &key_param],
            None => vec![&seq, &shape],
        };
        let keys: Vec<String> = self
            .conn
            .prepare_cached(&sql)?
            .query_map(params.as_slice(), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        self.conn.execute(
            &format!("DELETE FROM _shapesync_overlays WHERE seq = ?1 AND shape = ?2{filter}"),
            params.as_slice(),
        )?;
        let schema = self.schema(shape)?;
        for key in keys {
            self.materialize(shape, &schema, &key)?;
        }
        Ok(())
    }

    /// Forgets an answered write once none of its entries is left.
    pub(crate) fn release_if_done(&mut self, seq: i64) -> Result<(), ClientError> {
        let left: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM _shapesync_overlays WHERE seq = ?1)",
            [seq],
            |r| r.get(0),
        )?;
        if left {
            return Ok(());
        }
        let txid: Option<Option<i64>> = self
            .conn
            .query_row(
                "DELETE FROM _shapesync_acked WHERE seq = ?1 RETURNING txid",
                [seq],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(Some(txid)) = txid
            && let Ok(txid) = u32::try_from(txid).map(Xid32)
            && let Some(seqs) = self.acked_by_txid.get_mut(&txid)
        {
            seqs.retain(|s| *s != seq);
            if seqs.is_empty() {
                self.acked_by_txid.remove(&txid);
            }
        }
        Ok(())
    }

    /// Settles every answered write of `shape` whose commit LSN is at or before `lsn`.
    pub(crate) fn drop_by_lsn(&mut self, shape: &str, lsn: Lsn) -> Result<(), ClientError> {
        let seqs: Vec<i64> = self
            .conn
            .prepare_cached("SELECT seq FROM _shapesync_acked WHERE shape = ?1 AND lsn <= ?2")?
            .query_map((shape, lsn.as_u64() as i64), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        self.settle(shape, &seqs)
    }

    /// Now on the client's clock, in ms (the unit of `acked_at`).
    pub(crate) fn clock_millis(&self) -> i64 {
        (self.clock)().div_euclid(1000)
    }

    /// Settles answered writes that came back without an LSN once the grace period passed
    /// (on the client's clock, which also stamped `acked_at`).
    pub(crate) fn sweep_unknown_lsn(&mut self, shape: &str) -> Result<(), ClientError> {
        let before = self.clock_millis() - self.ack_grace_ms;
        let seqs: Vec<i64> = self
            .conn
            .prepare_cached(
                "SELECT seq FROM _shapesync_acked WHERE shape = ?1 AND lsn IS NULL AND acked_at <= ?2",
            )?
            .query_map((shape, before), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        self.settle(shape, &seqs)
    }

    fn settle(&mut self, shape: &str, seqs: &[i64]) -> Result<(), ClientError> {
        for &seq in seqs {
            self.drop_overlays(shape, seq, None, None)?;
            self.release_if_done(seq)?;
        }
        Ok(())
    }
}
