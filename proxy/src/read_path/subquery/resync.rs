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
/// and every change after it. Electric's move events (`moves=events`) take rows out as the
/// clients do: by the tags and active conditions the rows were last sent with.
pub fn rows_in_log(log: &ShapeLog) -> std::io::Result<HashMap<String, Map<String, Value>>> {
    let mut rows: HashMap<String, Map<String, Value>> = HashMap::new();
    let mut tags = TagState::default();
    let mut from = Position::START;
    loop {
        let read = log.entries_from(from, 4096)?;
        for entry in &read.entries {
            let Ok(message) = serde_json::from_slice::<Value>(&entry.payload) else {
                continue;
            };
            let headers = &message["headers"];
            if let Some(event) = headers["event"].as_str() {
                for gone in tags.apply_event(event == "move-in", &headers["patterns"]) {
                    rows.remove(&gone);
                }
                continue;
            }
            let Some(key) = message.get("key").and_then(Value::as_str) else {
                continue;
            };
            let value = message.get("value").and_then(Value::as_object);
            match headers["operation"].as_str() {
                Some("insert") => {
                    rows.insert(key.to_owned(), value.cloned().unwrap_or_default());
                    tags.note(key, headers);
                }
                Some("update") => {
                    let row = rows.entry(key.to_owned()).or_default();
                    for (column, v) in value.into_iter().flatten() {
                        row.insert(column.clone(), v.clone());
                    }
                    tags.note(key, headers);
                }
                Some("delete") => {
                    rows.remove(key);
                    tags.rows.remove(key);
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

/// What a client following tags knows of each row: its tags and active conditions.
#[derive(Default)]
struct TagState {
    rows: HashMap<String, (Vec<String>, Vec<bool>)>,
}

impl TagState {
    fn note(&mut self, key: &str, headers: &Value) {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        };
        let (Some(_), Some(active)) = (
            headers["tags"].as_array(),
            headers["active_conditions"].as_array(),
        ) else {
            return;
        };
        let removed = strings(&headers["removed_tags"]);
        let entry = self.rows.entry(key.to_owned()).or_default();
        entry.0.retain(|t| !removed.contains(t));
        for tag in strings(&headers["tags"]) {
            if !entry.0.contains(&tag) {
                entry.0.push(tag);
            }
        }
        entry.1 = active.iter().map(|a| a.as_bool() == Some(true)).collect();
    }

    /// Applies a move event; returns the keys of the rows a move-out took out.
    fn apply_event(&mut self, on: bool, patterns: &Value) -> Vec<String> {
        let mut gone = Vec::new();
        for pattern in patterns.as_array().into_iter().flatten() {
            let (Some(pos), Some(value)) = (pattern["pos"].as_u64(), pattern["value"].as_str())
            else {
                continue;
            };
            let pos = pos as usize;
            for (key, (tags, active)) in &mut self.rows {
                if pos >= active.len() || !tags.iter().any(|t| t.split('/').nth(pos) == Some(value))
                {
                    continue;
                }
                active[pos] = on;
                // A row is kept while every position of one of its disjuncts is true.
                let kept = tags.iter().any(|t| {
                    t.split('/')
                        .enumerate()
                        .all(|(p, slot)| slot.is_empty() || active.get(p) == Some(&true))
                });
                if !kept {
                    gone.push(key.clone());
                }
            }
        }
        for key in &gone {
            self.rows.remove(key);
        }
        gone
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
