//! Bringing a subquery shape back after a restart without a refetch. Its levels lived in
//! memory, and the database has moved on since the position the stream resumes from, so the
//! levels are read again at a new snapshot, and the shape's log gets one transaction that
//! takes its clients from what the log says to what that snapshot says: inserts of rows that
//! came in, updates of rows whose selected columns differ, deletes of rows that left. Later
//! transactions that snapshot saw are skipped, as after the shape's first snapshot.

use std::collections::HashMap;

use serde_json::{Map, Value};
use shapes::routing::RowChange;
use shapes::schema::{Row, TableSchema};

use crate::storage::shape_log::ShapeLog;
use crate::storage::shape_log::cursor::Position;

/// The rows a shape's log ends with (key → selected columns as sent), read from its snapshot
/// and every change after it.
pub fn rows_in_log(log: &ShapeLog) -> std::io::Result<HashMap<String, Map<String, Value>>> {
    let mut rows: HashMap<String, Map<String, Value>> = HashMap::new();
    let mut from = Position::START;
    loop {
        let read = log.entries_from(from, 4096)?;
        for entry in &read.entries {
            let Ok(message) = serde_json::from_slice::<Value>(&entry.payload) else {
                continue;
            };
            let Some(key) = message.get("key").and_then(Value::as_str) else {
                continue;
            };
            let value = message.get("value").and_then(Value::as_object);
            match message["headers"]["operation"].as_str() {
                Some("insert") => {
                    rows.insert(key.to_owned(), value.cloned().unwrap_or_default());
                }
                Some("update") => {
                    let row = rows.entry(key.to_owned()).or_default();
                    for (column, v) in value.into_iter().flatten() {
                        row.insert(column.clone(), v.clone());
                    }
                }
                Some("delete") => {
                    rows.remove(key);
                }
                _ => {}
            }
        }
        if read.at_end || read.entries.is_empty() {
            return Ok(rows);
        }
        from = read.next;
    }
}

/// A row of `layout` from the columns a message carried (the others NULL).
fn row_of(layout: &TableSchema, sent: &Map<String, Value>) -> Row {
    layout
        .columns
        .iter()
        .map(|c| match sent.get(&c.name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        })
        .collect()
}

/// The changes that take the log's rows (`held`, by key) to `fresh` (by key, whole rows):
/// (change, old, new).
pub fn changes_to(
    layout: &TableSchema,
    selected: &[usize],
    mut held: HashMap<String, Map<String, Value>>,
    fresh: Vec<(String, Row)>,
) -> Vec<(RowChange, Option<Row>, Option<Row>)> {
    let mut changes = Vec::new();
    for (key, row) in fresh {
        match held.remove(&key) {
            None => changes.push((RowChange::Insert, None, Some(row))),
            Some(sent) => {
                let old = row_of(layout, &sent);
                if selected.iter().any(|&i| old[i] != row[i]) {
                    changes.push((RowChange::Update, Some(old), Some(row)));
                }
            }
        }
    }
    let mut gone: Vec<_> = held.into_iter().collect();
    gone.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, sent) in gone {
        changes.push((RowChange::Delete, Some(row_of(layout, &sent)), None));
    }
    changes
}
