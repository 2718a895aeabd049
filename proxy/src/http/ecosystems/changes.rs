//! A run of shape messages folded into the last state of each row: what a client that pages
//! through a shape by checkpoints needs (RxDB documents, WatermelonDB's created / updated /
//! deleted lists), where a row changed ten times in the run is sent once.
//!
//! Folding reads messages of `replica=full` shapes (the only ones the sync protocols read):
//! every insert and update carries the whole row and every delete the whole old row, so the
//! last message of a row *is* its state. A row's last message is kept as it came from the
//! log and only its key and operation are read while folding; its values are parsed once,
//! borrowed from it, when the answer is written ([`Folded::values`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::storage::shape_log::cursor::Entry;

/// What folding reads of a message: its key and operation (the values are skipped).
#[derive(Debug, Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    key: Option<Text<'a>>,
    headers: Headers<'a>,
}

#[derive(Debug, Deserialize)]
struct Headers<'a> {
    #[serde(default, borrow)]
    operation: Option<Text<'a>>,
}

/// Only the `value` member of a message.
#[derive(Debug, Deserialize)]
struct ValueOnly<'a> {
    #[serde(default, borrow)]
    value: Option<RowValues<'a>>,
}

/// A JSON string, borrowed from the message where it has no escapes.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A row's columns as a change message carries them: column → text (`None`: NULL), in the
/// message's order (the table's column order), borrowed from the message.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RowValues<'a>(Vec<(Cow<'a, str>, Option<Cow<'a, str>>)>);

impl<'a> RowValues<'a> {
    /// The text of column `name`: `None` when the row lacks it, `Some(None)` for NULL.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(column, _)| column == name)
            .map(|(_, text)| text.as_deref())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RowValues<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = RowValues<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of column texts")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Text(column)) = map.next_key::<Text<'de>>()? {
                    let text = map.next_value::<Option<Text<'de>>>()?;
                    pairs.push((column, text.map(|t| t.0)));
                }
                Ok(RowValues(pairs))
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

/// The `value` of a change message (`None` for control messages).
pub fn row_values(payload: &[u8]) -> Result<Option<RowValues<'_>>, UnreadableMessage> {
    // UTF-8 checked once for the whole message, not once per string.
    let text = std::str::from_utf8(payload).map_err(|e| UnreadableMessage(e.to_string()))?;
    let message: ValueOnly<'_> =
        serde_json::from_str(text).map_err(|e| UnreadableMessage(e.to_string()))?;
    Ok(message.value)
}

/// The text of column `name` in a change message's `value` (`None` for control messages and
/// for a NULL or absent column), reading nothing else of the message into memory.
pub fn value_field(payload: &[u8], name: &str) -> Result<Option<String>, UnreadableMessage> {
    Ok(row_values(payload)?.and_then(|values| values.get(name).flatten().map(str::to_owned)))
}

/// The last state of a row in the run: its last message.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    payload: Vec<u8>,
    pub deleted: bool,
}

/// The key of a change message and whether it is a delete (`None`: a control message).
fn head(payload: &[u8]) -> Result<Option<(Cow<'_, str>, bool)>, UnreadableMessage> {
    let head: Head<'_> =
        serde_json::from_slice(payload).map_err(|e| UnreadableMessage(e.to_string()))?;
    let (Some(Text(operation)), Some(Text(key))) = (head.headers.operation, head.key) else {
        return Ok(None);
    };
    let deleted = match operation.as_ref() {
        "insert" | "update" => false,
        "delete" => true,
        other => return Err(UnreadableMessage(format!("operation {other:?}"))),
    };
    Ok(Some((key, deleted)))
}

impl Folded {
    /// Its columns (after a delete: the row as it was).
    pub fn values(&self) -> Result<RowValues<'_>, UnreadableMessage> {
        Ok(row_values(&self.payload)?.unwrap_or_default())
    }
}

/// Rows in the order of their first change.
#[derive(Debug, Default)]
pub struct Fold {
    rows: Vec<Folded>,
    /// Key → its place in `rows`, for `rows[..indexed]`. Snapshot rows are indexed only when a
    /// log change follows them in the run: a first sync reads each message once, to write it.
    index: HashMap<String, usize>,
    indexed: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("unreadable shape message: {0}")]
pub struct UnreadableMessage(String);

impl Fold {
    /// How many rows the run holds so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds one entry of a shape, read in order (the snapshot before the log).
    pub fn push_entry(&mut self, entry: Entry) -> Result<(), UnreadableMessage> {
        match entry.offset {
            // A snapshot row (changes start with their key; the snapshot has control
            // messages too): an insert of a key no other snapshot row has.
            None if entry.payload.starts_with(br#"{"key":"#) => {
                self.rows.push(Folded {
                    payload: entry.payload,
                    deleted: false,
                });
                Ok(())
            }
            _ => self.push(entry.payload),
        }
    }

    /// Adds one message (control messages change nothing).
    pub fn push(&mut self, payload: Vec<u8>) -> Result<(), UnreadableMessage> {
        let Some((key, deleted)) = head(&payload)? else {
            return Ok(());
        };
        self.index_rows()?;
        match self.index.get(key.as_ref()) {
            Some(&at) => {
                drop(key);
                self.rows[at] = Folded { payload, deleted };
            }
            None => {
                let key = key.into_owned();
                self.index.insert(key, self.rows.len());
                self.rows.push(Folded { payload, deleted });
                self.indexed = self.rows.len();
            }
        }
        Ok(())
    }

    /// Indexes the rows added since the last change.
    fn index_rows(&mut self) -> Result<(), UnreadableMessage> {
        for at in self.indexed..self.rows.len() {
            if let Some((key, _)) = head(&self.rows[at].payload)? {
                self.index.insert(key.into_owned(), at);
            }
        }
        self.indexed = self.rows.len();
        Ok(())
    }

    /// The rows, in the order of their first change.
    pub fn into_rows(self) -> impl Iterator<Item = Folded> {
        self.rows.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn push(fold: &mut Fold, message: Value) {
        fold.push(message.to_string().into_bytes()).unwrap();
    }

    fn change(op: &str, key: &str, value: Value) -> Value {
        json!({"headers": {"operation": op, "relation": ["public", "t"]}, "key": key, "value": value})
    }

    fn values(folded: &Folded) -> Value {
        let values = folded.values().unwrap();
        Value::Object(
            values
                .0
                .iter()
                .map(|(c, t)| (c.to_string(), t.as_deref().map_or(Value::Null, Value::from)))
                .collect(),
        )
    }

    /// Each row's values and whether it is deleted, in the fold's order.
    fn states(fold: Fold) -> Vec<(Value, bool)> {
        fold.into_rows()
            .map(|row| (values(&row), row.deleted))
            .collect()
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
        push(
            &mut fold,
            change("delete", "b", json!({"id": "b", "n": "5"})),
        );
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
        assert_eq!(
            states(fold),
            vec![
                (json!({"id": "a", "n": "2"}), false),
                (json!({"id": "b", "n": "5"}), true),
                (json!({"id": "c", "n": "10"}), false),
            ]
        );
    }

    fn entry(in_snapshot: bool, message: String) -> Entry {
        use crate::storage::shape_log::cursor::Position;
        use shapes::lsn::Lsn;
        use shapes::offset::Offset;
        let offset = (!in_snapshot).then(|| Offset::log(Lsn(100), 0));
        Entry {
            next: Position::START,
            offset,
            payload: message.into_bytes(),
        }
    }

    #[test]
    fn snapshot_rows_are_found_by_the_log_changes_that_follow_them() {
        let mut fold = Fold::default();
        for key in ["a", "b", "c"] {
            let row = format!(
                r#"{{"key":"{key}","value":{{"id":"{key}","n":"0"}},"headers":{{"operation":"insert"}}}}"#
            );
            fold.push_entry(entry(true, row)).unwrap();
        }
        let control = json!({"headers": {"control": "snapshot-end"}});
        fold.push_entry(entry(true, control.to_string())).unwrap();
        let changes = [
            change("update", "b", json!({"id": "b", "n": "1"})),
            change("insert", "d", json!({"id": "d", "n": "1"})),
            change("delete", "c", json!({"id": "c", "n": "0"})),
            change("update", "d", json!({"id": "d", "n": "2"})),
        ];
        for message in changes {
            fold.push_entry(entry(false, message.to_string())).unwrap();
        }
        assert_eq!(
            states(fold),
            vec![
                (json!({"id": "a", "n": "0"}), false),
                (json!({"id": "b", "n": "1"}), false),
                (json!({"id": "c", "n": "0"}), true),
                (json!({"id": "d", "n": "2"}), false),
            ]
        );
    }

    #[test]
    fn values_keep_the_message_order_nulls_and_escapes() {
        // Written out: `json!` would sort the members.
        let insert = r#"{"headers":{"operation":"insert"},"key":"\"public\".\"t\"/\"a\\\"1\"",
            "value":{"id":"a\"1","note":null,"n":"\u00fcn\u00ef \u2713\n"}}"#;
        let mut fold = Fold::default();
        fold.push(insert.as_bytes().to_vec()).unwrap();
        let row = fold.into_rows().next().unwrap();
        let values = row.values().unwrap();
        assert_eq!(
            values
                .0
                .iter()
                .map(|(c, t)| (c.as_ref(), t.as_deref()))
                .collect::<Vec<_>>(),
            vec![("id", Some("a\"1")), ("note", None), ("n", Some("ünï ✓\n"))]
        );
        assert_eq!(values.get("note"), Some(None));
        assert_eq!(values.get("missing"), None);
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
        assert!(fold.push(b"{not json".to_vec()).is_err());
        assert!(
            fold.push(change("truncate", "a", json!({})).to_string().into_bytes())
                .is_err()
        );
        let not_texts = change("insert", "a", json!({"id": 1}));
        push(&mut fold, not_texts);
        assert!(fold.into_rows().next().unwrap().values().is_err());
    }
}
