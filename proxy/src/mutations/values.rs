//! Checking every value of a batch against its column type before the write transaction,
//! so a bad value is a `rejected` result rather than an error that aborts the others.
//!
//! The fast path is one statement for the whole batch: per type, all values cast in one
//! `unnest` (it also yields the canonical text of key values, which is how rows and registers
//! are found). Only if Postgres refuses some value does the slow path run: a function that casts
//! each value alone inside an exception block and reports its error. Both are read-only, so no
//! transaction id is spent.

use std::collections::BTreeMap;

use super::batch::{Batch, Slot};
use super::pool::PooledConnection;
use super::refusal::code_for;
use super::sql;
use super::wire::{Outcome, RefusalCode};

/// Where a checked value goes back: the mutation, and key position or value position.
#[derive(Debug, Clone, Copy)]
enum Target {
    Key(usize),
    Value,
}

#[derive(Debug)]
struct Entry {
    slot: usize,
    target: Target,
    column: usize,
    text: String,
}

/// Checks the values of pending mutations; rejects the mutations with a bad value and puts
/// canonical key texts in the others.
pub async fn check(
    conn: &mut PooledConnection<'_>,
    batch: &mut Batch,
) -> Result<(), tokio_postgres::Error> {
    let mut by_type: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for (slot, mutation) in batch.pending() {
        let table = &mutation.table;
        for (p, text) in mutation.key.iter().enumerate() {
            let column = table.key[p];
            by_type
                .entry(table.cast_types[column].clone())
                .or_default()
                .push(Entry {
                    slot,
                    target: Target::Key(p),
                    column,
                    text: text.clone(),
                });
        }
        for (column, text) in &mutation.values {
            let ty = &table.cast_types[*column];
            // Any text is a valid text value: nothing to check.
            if let (Some(text), false) = (text, ty == "text") {
                by_type.entry(ty.clone()).or_default().push(Entry {
                    slot,
                    target: Target::Value,
                    column: *column,
                    text: text.clone(),
                });
            }
        }
    }
    if by_type.is_empty() {
        return Ok(());
    }
    let types: Vec<String> = by_type.keys().cloned().collect();
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let arrays: Vec<Vec<String>> = by_type
        .values()
        .map(|entries| entries.iter().map(|e| e.text.clone()).collect())
        .collect();
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = arrays
        .iter()
        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let entries: Vec<Entry> = by_type.into_values().flatten().collect();
    match conn.query(&sql::check_values(&types), &params).await {
        Ok(rows) => {
            let mut canonical = Vec::with_capacity(entries.len());
            for n in 0..types.len() {
                let texts: Vec<Option<String>> = rows[0].try_get(n)?;
                canonical.extend(texts);
            }
            store_canonical(batch, &entries, &canonical);
            Ok(())
        }
        Err(err) if err.code().is_some_and(|c| code_for(c.code()).is_some()) => {
            check_each(conn, batch, &entries).await
        }
        Err(err) => Err(err),
    }
}

fn store_canonical(batch: &mut Batch, entries: &[Entry], canonical: &[Option<String>]) {
    for (entry, text) in entries.iter().zip(canonical) {
        if let (Slot::Pending(m), Target::Key(p), Some(text)) =
            (&mut batch.slots[entry.slot], entry.target, text)
        {
            m.key[p] = text.clone();
        }
    }
}

/// The slow path: each value alone; the first bad value of a mutation rejects it.
async fn check_each(
    conn: &mut PooledConnection<'_>,
    batch: &mut Batch,
    entries: &[Entry],
) -> Result<(), tokio_postgres::Error> {
    let values: Vec<&str> = entries.iter().map(|e| e.text.as_str()).collect();
    let types: Vec<&str> = entries
        .iter()
        .map(|e| match &batch.slots[e.slot] {
            Slot::Pending(m) => m.table.cast_types[e.column].as_str(),
            Slot::Done(_) => "text",
        })
        .collect();
    let rows = conn
        .query(sql::CHECK_EACH_VALUE, &[&values, &types])
        .await?;
    let mut canonical = vec![None; entries.len()];
    for row in rows {
        let ord: i32 = row.try_get(0)?;
        let Some(index) = usize::try_from(ord).ok().and_then(|o| o.checked_sub(1)) else {
            continue;
        };
        let Some(entry) = entries.get(index) else {
            continue;
        };
        canonical[index] = row.try_get(1)?;
        let code: Option<String> = row.try_get(2)?;
        let Some(code) = code else { continue };
        let message: Option<String> = row.try_get(3)?;
        let Slot::Pending(mutation) = &batch.slots[entry.slot] else {
            continue;
        };
        let column = mutation.table.column_name(entry.column).to_owned();
        let code = code_for(&code).unwrap_or(RefusalCode::InvalidValue);
        let message = message.unwrap_or_default();
        batch.reject(entry.slot, Outcome::rejected(code, Some(&column), message));
    }
    store_canonical(batch, entries, &canonical);
    Ok(())
}
