//! A table's change messages with the parts that never vary from row to row encoded once:
//! the key's relation, each column's `"name":`, and the headers up to the log position.
//!
//! This is the live path's encoder, run for every change of every shape it reaches. Its bytes
//! are exactly those of [`ChangeMessage::write`](super::ChangeMessage::write) with the key of
//! [`message_key`](super::message_key): a property test below holds the two together.

use super::{LogPosition, NEEDS_ESCAPE, Operation, push_doubled, write_json_str};
use crate::schema::{QualifiedName, TableSchema, Value};

/// The fixed parts of one table's change messages, for rows in one layout of its columns.
#[derive(Debug)]
pub struct MessageTemplate {
    table: QualifiedName,
    /// `{"key":"` and the key's relation part, escaped: `{"key":"\"public\".\"items\"`.
    key_open: Box<[u8]>,
    /// `,"name":"` of each column of the layout: what comes before a string value (without
    /// the comma for the first column, without the quote before `null` or an escaped value).
    fields: Box<[Box<[u8]>]>,
    /// `,"headers":{"operation":"…","relation":["…","…"]`, by [`Operation`].
    headers: [Box<[u8]>; 3],
}

/// The columns a message carries of one row.
#[derive(Debug, Clone, Copy)]
pub struct RowPart<'a> {
    pub row: &'a [Value],
    /// Positions in `row`, in the order the message lists them.
    pub columns: &'a [usize],
}

impl MessageTemplate {
    /// The template of `table`'s messages for rows in `layout`'s column order.
    pub fn new(table: &QualifiedName, layout: &TableSchema) -> Self {
        let mut relation = String::from("\"");
        push_doubled(&mut relation, &table.schema, b"/.");
        relation.push_str("\".\"");
        push_doubled(&mut relation, &table.name, b"/.");
        relation.push('"');
        let mut key_open = b"{\"key\":".to_vec();
        write_json_str(&mut key_open, &relation);
        key_open.pop(); // The key goes on: its closing quote comes after the values.
        let fields = layout
            .columns
            .iter()
            .map(|column| {
                let mut field = Vec::with_capacity(column.name.len() + 5);
                field.push(b',');
                write_json_str(&mut field, &column.name);
                field.extend_from_slice(b":\"");
                field.into_boxed_slice()
            })
            .collect();
        let headers = [Operation::Insert, Operation::Update, Operation::Delete].map(|op| {
            let mut out = b",\"headers\":{\"operation\":\"".to_vec();
            out.extend_from_slice(op.as_str().as_bytes());
            out.extend_from_slice(b"\",\"relation\":[");
            write_json_str(&mut out, &table.schema);
            out.push(b',');
            write_json_str(&mut out, &table.name);
            out.push(b']');
            out.into_boxed_slice()
        });
        Self {
            table: table.clone(),
            key_open: key_open.into_boxed_slice(),
            fields,
            headers,
        }
    }

    /// The table the messages name.
    pub fn table(&self) -> &QualifiedName {
        &self.table
    }

    /// Writes the message of a change at `log`: its key from `key` (positions in `value.row`),
    /// `value` as `value` and `old` as `old_value`.
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        operation: Operation,
        key: &[usize],
        value: RowPart<'_>,
        old: Option<RowPart<'_>>,
        log: LogPosition,
    ) {
        out.reserve(self.size_hint(value) + old.map_or(0, |o| self.size_hint(o)));
        out.extend_from_slice(&self.key_open);
        for &i in key {
            match value.row[i].as_deref() {
                None => out.extend_from_slice(b"/_"),
                Some(v) => {
                    out.extend_from_slice(b"/\\\"");
                    write_key_value(out, v);
                    out.extend_from_slice(b"\\\"");
                }
            }
        }
        out.extend_from_slice(b"\",\"value\":");
        self.write_object(out, value);
        if let Some(old) = old {
            out.extend_from_slice(b",\"old_value\":");
            self.write_object(out, old);
        }
        out.extend_from_slice(&self.headers[operation as usize]);
        log.write_headers(out);
        out.extend_from_slice(b"}}");
    }

    fn write_object(&self, out: &mut Vec<u8>, part: RowPart<'_>) {
        out.push(b'{');
        for (n, &i) in part.columns.iter().enumerate() {
            // `,"name":"`, less the comma before the first column.
            let field = &self.fields[i][usize::from(n == 0)..];
            let unquoted = &field[..field.len() - 1];
            match part.row[i].as_deref() {
                // Most values are short and need no escape: three copies.
                Some(v) if v.len() <= 48 && !v.bytes().any(|b| NEEDS_ESCAPE[usize::from(b)]) => {
                    out.extend_from_slice(field);
                    out.extend_from_slice(v.as_bytes());
                    out.push(b'"');
                }
                Some(v) => {
                    out.extend_from_slice(unquoted);
                    write_json_str(out, v);
                }
                None => {
                    out.extend_from_slice(unquoted);
                    out.extend_from_slice(b"null");
                }
            }
        }
        out.push(b'}');
    }

    /// About the bytes `part` adds to a message (and the message's fixed parts), so that a
    /// message's buffer grows once.
    fn size_hint(&self, part: RowPart<'_>) -> usize {
        let values: usize = part
            .columns
            .iter()
            .map(|&i| self.fields[i].len() + part.row[i].as_ref().map_or(4, String::len) + 2)
            .sum();
        self.key_open.len() + 2 * values + self.headers[0].len() + 96
    }
}

/// Writes one value of a message key inside the key's JSON string: `/` doubled (the key's
/// separator), then escaped for JSON.
fn write_key_value(out: &mut Vec<u8>, v: &str) {
    if !v.bytes().any(|b| b == b'/' || NEEDS_ESCAPE[usize::from(b)]) {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    let mut doubled = String::with_capacity(v.len() + 4);
    push_doubled(&mut doubled, v, b"/");
    let mut quoted = Vec::with_capacity(doubled.len() + 8);
    write_json_str(&mut quoted, &doubled);
    out.extend_from_slice(&quoted[1..quoted.len() - 1]);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::lsn::Lsn;
    use crate::schema::TableSchema;
    use crate::testing::{base, column};
    use crate::wire::{ChangeMessage, message_key};

    /// What the general encoder writes for the same message.
    fn general(
        table: &QualifiedName,
        layout: &TableSchema,
        operation: Operation,
        key: &[usize],
        value: RowPart<'_>,
        old: Option<RowPart<'_>>,
        log: LogPosition,
    ) -> Vec<u8> {
        let key = message_key(table, key.iter().map(|&i| value.row[i].as_deref()));
        let message = ChangeMessage {
            key: &key,
            operation,
            relation: table,
            log: Some(log),
            key_change: None,
            snapshot_mark: None,
        };
        fn pairs<'a>(
            layout: &'a TableSchema,
            part: RowPart<'a>,
        ) -> Vec<(&'a str, Option<&'a str>)> {
            part.columns
                .iter()
                .map(|&i| (layout.columns[i].name.as_str(), part.row[i].as_deref()))
                .collect()
        }
        let mut out = Vec::new();
        let mut old_pairs = old.map(|o| pairs(layout, o).into_iter());
        message.write(
            &mut out,
            pairs(layout, value),
            old_pairs
                .as_mut()
                .map(|o| o as &mut dyn Iterator<Item = (&str, Option<&str>)>),
        );
        out
    }

    fn layout(table: &QualifiedName, names: &[String]) -> TableSchema {
        TableSchema {
            name: table.clone(),
            oid: 1,
            columns: names.iter().map(|n| column(n, base("text"))).collect(),
        }
    }

    #[test]
    fn writes_what_the_general_encoder_writes_for_an_insert() {
        let table = QualifiedName::new("public", "items");
        let layout = layout(&table, &["id".into(), "title".into(), "n".into()]);
        let row = vec![Some("1".to_owned()), Some("a \"b\"".to_owned()), None];
        let value = RowPart {
            row: &row,
            columns: &[0, 1, 2],
        };
        let log = LogPosition {
            txid: 7,
            lsn: Lsn(500),
            op_position: 4,
            last: true,
        };
        let mut out = Vec::new();
        MessageTemplate::new(&table, &layout).write(
            &mut out,
            Operation::Insert,
            &[0],
            value,
            None,
            log,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"a \"b\"","n":null},"headers":{"operation":"insert","relation":["public","items"],"txids":[7],"lsn":"500","op_position":4,"last":true}}"#
        );
    }

    /// Names and values with every character class the two encoders treat specially.
    fn text() -> impl Strategy<Value = String> {
        "[\\x00-\\x21\\x22\\x2e\\x2f\\x5c a-z0-9é✓\\u{7f}]{0,24}"
    }

    /// Values, also past the 48 bytes under which the encoder takes its short path.
    fn value_text() -> impl Strategy<Value = String> {
        "[\\x00-\\x21\\x22\\x2e\\x2f\\x5c a-z0-9é✓\\u{7f}]{0,60}"
    }

    fn row_and_columns() -> impl Strategy<Value = (Vec<String>, Vec<Value>, Vec<Value>)> {
        (1usize..6).prop_flat_map(|n| {
            (
                proptest::collection::vec(text(), n),
                proptest::collection::vec(proptest::option::of(value_text()), n),
                proptest::collection::vec(proptest::option::of(value_text()), n),
            )
        })
    }

    proptest! {
        #[test]
        fn writes_exactly_what_the_general_encoder_writes(
            schema in text(),
            name in text(),
            (names, row, old_row) in row_and_columns(),
            key_len in 1usize..3,
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            operation in prop_oneof![
                Just(Operation::Insert),
                Just(Operation::Update),
                Just(Operation::Delete)
            ],
            with_old in any::<bool>(),
            (txid, lsn, op_position, last) in (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()),
        ) {
            let table = QualifiedName::new(schema, name);
            let layout = layout(&table, &names);
            let key: Vec<usize> = (0..key_len.min(names.len())).collect();
            let columns: Vec<usize> = picks.iter().map(|p| p.index(names.len())).collect();
            let value = RowPart { row: &row, columns: &columns };
            let old = with_old.then_some(RowPart { row: &old_row, columns: &columns });
            let log = LogPosition { txid, lsn: Lsn(lsn), op_position, last };
            let mut out = Vec::new();
            MessageTemplate::new(&table, &layout)
                .write(&mut out, operation, &key, value, old, log);
            let expected = general(&table, &layout, operation, &key, value, old, log);
            prop_assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected)
            );
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
        }
    }
}
