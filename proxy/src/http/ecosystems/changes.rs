//! A run of shape messages folded into the last state of each row: what a client that pages
//! through a shape by checkpoints needs (RxDB documents, WatermelonDB's created / updated /
//! deleted lists), where a row changed ten times in the run is sent once.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One shape message, as far as folding reads it.
#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<Map<String, Value>>,
    headers: Headers,
}

#[derive(Debug, Deserialize)]
struct Headers {
    #[serde(default)]
    operation: Option<String>,
}

/// Only the `value` member of a message, with borrowed texts where they have no escapes.
#[derive(Debug, Deserialize)]
struct ValueOnly<'a> {
    #[serde(default, borrow)]
    value: Option<HashMap<Cow<'a, str>, Option<Cow<'a, str>>>>,
}

/// The text of column `name` in a change message's `value` (`None` for control messages and
/// for a NULL or absent column), reading nothing else of the message into memory.
pub fn value_field(payload: &[u8], name: &str) -> Result<Option<String>, UnreadableMessage> {
    let message: ValueOnly<'_> =
        serde_json::from_slice(payload).map_err(|e| UnreadableMessage(e.to_string()))?;
    Ok(message
        .value
        .and_then(|mut value| value.remove(name).flatten())
        .map(Cow::into_owned))
}

/// The last state of a row in the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// Its columns (after a delete: the row as it was, at least its key).
    pub row: Map<String, Value>,
    pub deleted: bool,
}

/// Rows in the order of their first change in the run.
#[derive(Debug, Default)]
pub struct Fold {
    order: Vec<String>,
    rows: HashMap<String, Folded>,
}

#[derive(Debug, thiserror::Error)]
#[error("unreadable shape message: {0}")]
pub struct UnreadableMessage(String);

impl Fold {
    /// How many rows the run holds so far.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Adds one message (control messages change nothing).
    pub fn push(&mut self, payload: &[u8]) -> Result<(), UnreadableMessage> {
        let message: Message =
            serde_json::from_slice(payload).map_err(|e| UnreadableMessage(e.to_string()))?;
        let (Some(operation), Some(key)) = (message.headers.operation, message.key) else {
            return Ok(());
        };
        let value = message.value.unwrap_or_default();
        let deleted = match operation.as_str() {
            "insert" | "update" => false,
            "delete" => true,
            other => return Err(UnreadableMessage(format!("operation {other:?}"))),
        };
        match self.rows.get_mut(&key) {
            Some(folded) => {
                if deleted {
                    // Keep what is known of the row: a delete may carry only its key.
                    folded.row.extend(value);
                } else if operation == "update" && !folded.deleted {
                    folded.row.extend(value);
                } else {
                    folded.row = value;
                }
                folded.deleted = deleted;
            }
            None => {
                self.order.push(key.clone());
                self.rows.insert(
                    key,
                    Folded {
                        row: value,
                        deleted,
                    },
                );
            }
        }
        Ok(())
    }

    /// The rows, in the order of their first change.
    pub fn into_rows(mut self) -> impl Iterator<Item = Folded> {
        self.order
            .into_iter()
            .filter_map(move |key| self.rows.remove(&key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(fold: &mut Fold, message: Value) {
        fold.push(message.to_string().as_bytes()).unwrap();
    }

    fn change(op: &str, key: &str, value: Value) -> Value {
        json!({"headers": {"operation": op, "relation": ["public", "t"]}, "key": key, "value": value})
    }

    #[test]
    fn a_run_keeps_the_last_state_of_each_row_in_first_change_order() {
        let mut fold = Fold::default();
        push(
            &mut fold,
            change("insert", "a", json!({"id": "a", "n": "1"})),
        );
        push(
            &mut fold,
            change("update", "b", json!({"id": "b", "n": "5"})),
        );
        push(&mut fold, json!({"headers": {"control": "snapshot-end"}}));
        push(
            &mut fold,
            change("update", "a", json!({"id": "a", "n": "2"})),
        );
        push(&mut fold, change("delete", "b", json!({"id": "b"})));
        push(
            &mut fold,
            change("insert", "c", json!({"id": "c", "n": "9"})),
        );
        push(
            &mut fold,
            change("delete", "c", json!({"id": "c", "n": "9"})),
        );
        push(
            &mut fold,
            change("insert", "c", json!({"id": "c", "n": "10"})),
        );
        assert_eq!(fold.len(), 3);
        let rows: Vec<Folded> = fold.into_rows().collect();
        assert_eq!(
            rows,
            vec![
                Folded {
                    row: json!({"id": "a", "n": "2"}).as_object().unwrap().clone(),
                    deleted: false,
                },
                Folded {
                    row: json!({"id": "b", "n": "5"}).as_object().unwrap().clone(),
                    deleted: true,
                },
                Folded {
                    row: json!({"id": "c", "n": "10"}).as_object().unwrap().clone(),
                    deleted: false,
                },
            ]
        );
    }

    #[test]
    fn one_field_of_a_value_is_read_alone() {
        let insert = change("insert", "a", json!({"id": "a\"1", "n": "1", "note": null}));
        let payload = insert.to_string();
        assert_eq!(
            value_field(payload.as_bytes(), "id").unwrap().as_deref(),
            Some("a\"1")
        );
        assert_eq!(value_field(payload.as_bytes(), "note").unwrap(), None);
        let control = json!({"headers": {"control": "up-to-date"}}).to_string();
        assert_eq!(value_field(control.as_bytes(), "id").unwrap(), None);
        assert!(value_field(b"{", "id").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_row() {
        let mut fold = Fold::default();
        assert!(fold.push(b"{not json").is_err());
        assert!(
            fold.push(change("truncate", "a", json!({})).to_string().as_bytes())
                .is_err()
        );
        assert!(fold.is_empty());
    }
}
