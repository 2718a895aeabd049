//! Decoding one message of a shape log (proxy/PROTOCOL.md, "Messages") straight into a
//! [`Change`] with typed SQLite values by column position: no intermediate JSON tree, so a
//! large initial sync costs one small allocation per value. The tag headers of subquery shapes
//! and their `move-out`/`move-in` event messages are decoded for [`crate::store::tags`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use shapes::lsn::{Lsn, Xid32};
use shapes::offset::Offset;
use shapes::wire::Operation;

use crate::schema_mapping::ShapeSchema;
use crate::store::Change;
use crate::store::tags::{Move, MoveKind, MovePattern, TagHeaders};

/// A decoded message.
#[derive(Debug)]
pub enum Message {
    /// A row change, with its log offset when it has one (snapshot rows have none).
    Change(Change, Option<Offset>),
    /// A `move-out` or `move-in` event, with its log offset when it has one.
    Move(Move, Option<Offset>),
    UpToDate {
        global_last_seen_lsn: Option<Lsn>,
    },
    MustRefetch,
    /// `snapshot-end`, controls and events this client does not use.
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode a shape message: {0}")]
pub struct DecodeError(String);

#[derive(Default, Deserialize)]
struct Headers<'a> {
    #[serde(borrow, default)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    control: Option<Cow<'a, str>>,
    #[serde(default)]
    txids: Option<Vec<u64>>,
    #[serde(borrow, default)]
    lsn: Option<Cow<'a, str>>,
    #[serde(default)]
    op_position: Option<u64>,
    #[serde(borrow, default)]
    global_last_seen_lsn: Option<Cow<'a, str>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    removed_tags: Option<Vec<String>>,
    /// A null (not sent by Electric) counts as false, as an unknown condition does.
    #[serde(default)]
    active_conditions: Option<Vec<Option<bool>>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(default)]
    patterns: Option<Vec<WirePattern>>,
}

/// A move pattern as sent; one without a value (a NULL, which no tag holds) matches no row.
#[derive(Deserialize)]
struct WirePattern {
    pos: usize,
    value: Option<String>,
}

impl Headers<'_> {
    /// `<lsn>_<op_position>` when the message has both (snapshot rows have none).
    fn offset(&self) -> Option<Offset> {
        match (
            self.lsn.as_deref().and_then(|l| l.parse::<u64>().ok()),
            self.op_position,
        ) {
            (Some(tx), Some(op)) if tx > 0 => Some(Offset::At { tx, op }),
            _ => None,
        }
    }

    /// The first of `txids`: 32-bit on the wire; a wider number (another server) matches no
    /// write's answer.
    fn txid(&self) -> Option<Xid32> {
        self.txids
            .as_ref()
            .and_then(|t| t.first().and_then(|&t| u32::try_from(t).ok()))
            .map(Xid32)
    }

    fn take_tags(&mut self) -> Option<Box<TagHeaders>> {
        if self.tags.is_none() && self.removed_tags.is_none() && self.active_conditions.is_none() {
            return None;
        }
        Some(Box::new(TagHeaders {
            tags: self.tags.take().unwrap_or_default(),
            removed_tags: self.removed_tags.take().unwrap_or_default(),
            active_conditions: self
                .active_conditions
                .take()
                .unwrap_or_default()
                .into_iter()
                .map(|a| a.unwrap_or(false))
                .collect(),
        }))
    }

    fn take_move(&mut self, kind: MoveKind) -> Move {
        Move {
            kind,
            patterns: self
                .patterns
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.value.map(|value| MovePattern { pos: p.pos, value }))
                .collect(),
            txid: self.txid(),
        }
    }
}

/// Parses one message (a JSON object) against the shape's columns.
pub fn decode(bytes: &[u8], schema: &ShapeSchema) -> Result<Message, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (values, mut headers) = MessageSeed { schema }
        .deserialize(&mut de)
        .map_err(|e| DecodeError(e.to_string()))?;
    if let Some(control) = headers.control.as_deref() {
        return Ok(match control {
            "up-to-date" => Message::UpToDate {
                global_last_seen_lsn: headers
                    .global_last_seen_lsn
                    .and_then(|l| l.parse().ok())
                    .map(Lsn),
            },
            "must-refetch" => Message::MustRefetch,
            _ => Message::Other,
        });
    }
    if let Some(event) = headers.event.as_deref() {
        let kind = match event {
            "move-out" => MoveKind::Out,
            "move-in" => MoveKind::In,
            _ => return Ok(Message::Other),
        };
        let offset = headers.offset();
        return Ok(Message::Move(headers.take_move(kind), offset));
    }
    let op = match headers.operation.as_deref() {
        Some("insert") => Operation::Insert,
        Some("update") => Operation::Update,
        Some("delete") => Operation::Delete,
        other => return Err(DecodeError(format!("unknown operation {other:?}"))),
    };
    let change = Change {
        op,
        values: values.unwrap_or_else(|| vec![None; schema.columns.len()]),
        txid: headers.txid(),
        tags: headers.take_tags(),
    };
    let offset = headers.offset();
    Ok(Message::Change(change, offset))
}

/// Parses a *control* message without a schema (it has no values): before the first schema.
pub fn decode_control(bytes: &[u8]) -> Option<Message> {
    let empty = ShapeSchema {
        columns: Vec::new(),
        pk: Vec::new(),
    };
    match decode(bytes, &empty) {
        Ok(Message::Change(..) | Message::Move(..)) | Err(_) => None,
        Ok(other) => Some(other),
    }
}

type Values = Vec<Option<rusqlite::types::Value>>;

struct MessageSeed<'s> {
    schema: &'s ShapeSchema,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = (Option<Values>, Headers<'de>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = (Option<Values>, Headers<'de>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a shape message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = None;
        let mut headers = Headers::default();
        while let Some(field) = map.next_key::<Cow<'de, str>>()? {
            match field.as_ref() {
                "value" => {
                    values = Some(map.next_value_seed(ValuesSeed {
                        schema: self.schema,
                    })?)
                }
                "headers" => headers = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((values, headers))
    }
}

struct ValuesSeed<'s> {
    schema: &'s ShapeSchema,
}

impl<'de> DeserializeSeed<'de> for ValuesSeed<'_> {
    type Value = Values;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ValuesSeed<'_> {
    type Value = Values;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of column values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let columns = &self.schema.columns;
        let mut values: Values = vec![None; columns.len()];
        let mut next = 0;
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let text: Option<Cow<'de, str>> = map.next_value()?;
            // Columns usually come in schema order: try the next one first.
            let index = if columns.get(next).is_some_and(|c| c.name == name) {
                Some(next)
            } else {
                self.schema.index_of(&name)
            };
            if let Some(i) = index {
                values[i] = Some(columns[i].storage.from_pg_text(text.as_deref()));
                next = i + 1;
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::Value as SqlValue;

    fn schema() -> ShapeSchema {
        ShapeSchema::parse(
            r#"{"id":{"type":"int4","pk_index":0,"not_null":true},"title":{"type":"text"},"done":{"type":"bool"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn log_changes_decode_with_offsets_and_txids() {
        let m = br#"{"key":"\"public\".\"t\"/\"2\"","value":{"id":"2","done":"t"},"headers":{"operation":"update","relation":["public","t"],"txids":[756],"lsn":"24155000","op_position":4,"last":true}}"#;
        let Message::Change(change, offset) = decode(m, &schema()).unwrap() else {
            panic!("a change")
        };
        assert_eq!(change.op, Operation::Update);
        assert_eq!(
            change.values,
            vec![Some(SqlValue::Integer(2)), None, Some(SqlValue::Integer(1))]
        );
        assert_eq!(change.txid, Some(Xid32(756)));
        assert_eq!(
            offset,
            Some(Offset::At {
                tx: 24155000,
                op: 4
            })
        );
    }

    /// The wire's xids are 32-bit; a wider number (from a server other than ours) still
    /// decodes, the change applies, and it matches no write's answer (a mutation answer's
    /// `txid` is 32-bit).
    #[test]
    fn a_txid_wider_than_32_bits_decodes_without_an_xid() {
        for (txids, expected) in [
            ("[4294967295]", Some(Xid32(u32::MAX))),
            ("[4294967296]", None),
            ("[]", None),
        ] {
            let m = format!(
                r#"{{"key":"k","value":{{"id":"2"}},"headers":{{"operation":"insert","txids":{txids}}}}}"#
            );
            let Message::Change(change, _) = decode(m.as_bytes(), &schema()).unwrap() else {
                panic!("{txids}: a change")
            };
            assert_eq!(change.txid, expected, "txids {txids}");
        }
    }

    #[test]
    fn controls_decode_with_and_without_schema() {
        let m = br#"{"headers":{"control":"up-to-date","global_last_seen_lsn":"24154680"}}"#;
        assert!(matches!(
            decode_control(m),
            Some(Message::UpToDate {
                global_last_seen_lsn: Some(Lsn(24154680))
            })
        ));
        let m = br#"{"headers":{"control":"must-refetch"}}"#;
        assert!(matches!(decode(m, &schema()), Ok(Message::MustRefetch)));
        let m = br#"{"headers":{"control":"snapshot-end","xmin":"1","xmax":"1","xip_list":[]}}"#;
        assert!(matches!(decode(m, &schema()), Ok(Message::Other)));
        assert!(decode(b"{\"headers\":{\"operation\":\"merge\"}}", &schema()).is_err());
    }

    #[test]
    fn tag_headers_decode_with_the_change() {
        let m = br#"{"key":"k","value":{"id":"2","done":"f"},"headers":{"operation":"update","txids":[7],"lsn":"5","op_position":2,"tags":["ab/","/1"],"removed_tags":["cd/"],"active_conditions":[true,null]}}"#;
        let Message::Change(change, Some(_)) = decode(m, &schema()).unwrap() else {
            panic!("a change")
        };
        assert_eq!(
            change.tags.as_deref(),
            Some(&TagHeaders {
                tags: vec!["ab/".into(), "/1".into()],
                removed_tags: vec!["cd/".into()],
                active_conditions: vec![true, false],
            })
        );
        let plain = br#"{"key":"k","value":{"id":"2"},"headers":{"operation":"insert"}}"#;
        let Message::Change(change, None) = decode(plain, &schema()).unwrap() else {
            panic!("a change")
        };
        assert_eq!(
            change.tags, None,
            "a shape without subqueries has no tag state"
        );
    }

    #[test]
    fn move_events_decode_with_their_patterns_and_txid() {
        let m = br#"{"headers":{"event":"move-out","patterns":[{"pos":0,"value":"2829038ff0f68a27e557b496cdb23bf3"},{"pos":2,"value":null}],"txids":[1261]}}"#;
        let Message::Move(event, None) = decode(m, &schema()).unwrap() else {
            panic!("a move")
        };
        assert_eq!(
            event,
            Move {
                kind: MoveKind::Out,
                patterns: vec![MovePattern {
                    pos: 0,
                    value: "2829038ff0f68a27e557b496cdb23bf3".into()
                }],
                txid: Some(Xid32(1261)),
            }
        );
        let m = br#"{"headers":{"event":"move-in","patterns":[{"pos":1,"value":"ab"}],"lsn":"90","op_position":4}}"#;
        let Message::Move(event, offset) = decode(m, &schema()).unwrap() else {
            panic!("a move")
        };
        assert_eq!((event.kind, event.txid), (MoveKind::In, None));
        assert_eq!(offset, Some(Offset::At { tx: 90, op: 4 }));
        // Before the first schema, a move is not a control.
        assert!(decode_control(m).is_none());
        let m = br#"{"headers":{"event":"move-sideways","patterns":[]}}"#;
        assert!(matches!(decode(m, &schema()), Ok(Message::Other)));
    }

    #[test]
    fn escaped_strings_and_nulls_decode() {
        let m = br#"{"value":{"id":"1","title":"a \"q\"","done":null},"headers":{"operation":"insert"}}"#;
        let Message::Change(change, None) = decode(m, &schema()).unwrap() else {
            panic!("a snapshot change")
        };
        assert_eq!(change.values[1], Some(SqlValue::Text("a \"q\"".into())));
        assert_eq!(change.values[2], Some(SqlValue::Null));
    }
}
