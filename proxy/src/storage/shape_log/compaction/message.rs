//! The parts of a stored change message that merging needs, read from its JSON, and a merged
//! message written back in the layout `shapes::wire::ChangeMessage::write` uses (pure code).
//!
//! Only `key`, `value`, `old_value` and the operation are read; every other header (relation,
//! txids, lsn, op_position, key-change links) is kept byte for byte from the message whose
//! offset the merged one takes.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use shapes::wire::{Operation, write_json_str, write_row_object};

/// Column values in the order the message lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values(pub Vec<(String, Option<String>)>);

impl Values {
    /// Sets every column of `newer` (later values win).
    pub fn overlay(&mut self, newer: &Values) {
        for (name, value) in &newer.0 {
            match self.0.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1.clone_from(value),
                None => self.0.push((name.clone(), value.clone())),
            }
        }
    }

    /// Adds the columns of `older` that are not there yet (earlier values win).
    pub fn underlay(&mut self, older: &Values) {
        for (name, value) in &older.0 {
            if !self.0.iter().any(|(n, _)| n == name) {
                self.0.push((name.clone(), value.clone()));
            }
        }
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of text or null column values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Values, A::Error> {
                let mut values = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((name, value)) = map.next_entry::<String, Option<String>>()? {
                    values.push((name, value));
                }
                Ok(Values(values))
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

#[derive(Debug, Deserialize)]
struct Headers {
    operation: String,
}

#[derive(Debug, Deserialize)]
struct Raw {
    key: String,
    value: Values,
    #[serde(default)]
    old_value: Option<Values>,
    headers: Headers,
}

/// A change message as merging sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub operation: Operation,
    pub value: Values,
    pub old_value: Option<Values>,
}

/// Why a stored message cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("a log entry is not a change message: {0}")]
    NotAChange(#[source] serde_json::Error),
    #[error("a log entry has the unknown operation {0:?}")]
    UnknownOperation(String),
    #[error("a log entry does not have the layout the proxy writes")]
    Layout,
}

/// Reads a stored change message.
pub fn parse(payload: &[u8]) -> Result<Change, MessageError> {
    let raw: Raw = serde_json::from_slice(payload).map_err(MessageError::NotAChange)?;
    let operation = match raw.headers.operation.as_str() {
        "insert" => Operation::Insert,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        _ => return Err(MessageError::UnknownOperation(raw.headers.operation)),
    };
    Ok(Change {
        key: raw.key,
        operation,
        value: raw.value,
        old_value: raw.old_value,
    })
}

/// Where the headers start, as `ChangeMessage::write` lays a message out.
const OPERATION_HEADER: &[u8] = b",\"headers\":{\"operation\":\"";

/// Writes a message for `key` with `operation`, `value` and `old_value`, and the headers of
/// `template` (a stored message) other than its operation.
pub fn write(
    out: &mut Vec<u8>,
    key: &str,
    operation: Operation,
    value: &Values,
    old_value: Option<&Values>,
    template: &[u8],
) -> Result<(), MessageError> {
    let at = template
        .windows(OPERATION_HEADER.len())
        .rposition(|w| w == OPERATION_HEADER)
        .ok_or(MessageError::Layout)?;
    let rest = &template[at + OPERATION_HEADER.len()..];
    let op_len = rest
        .iter()
        .position(|&b| b == b'"')
        .ok_or(MessageError::Layout)?;
    out.extend_from_slice(b"{\"key\":");
    write_json_str(out, key);
    out.extend_from_slice(b",\"value\":");
    write_row_object(out, value.pairs());
    if let Some(old) = old_value {
        out.extend_from_slice(b",\"old_value\":");
        write_row_object(out, old.pairs());
    }
    out.extend_from_slice(OPERATION_HEADER);
    out.extend_from_slice(operation.as_str().as_bytes());
    out.extend_from_slice(&rest[op_len..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shapes::wire::operation_of;

    const UPDATE: &[u8] = br#"{"key":"\"public\".\"t\"/\"1\"","value":{"id":"1","b":"x"},"old_value":{"b":"w"},"headers":{"operation":"update","relation":["public","t"],"txids":[7],"lsn":"500","op_position":4,"last":true}}"#;

    #[test]
    fn a_message_is_read_with_its_columns_in_order() {
        let change = parse(UPDATE).unwrap();
        assert_eq!(change.key, r#""public"."t"/"1""#);
        assert_eq!(change.operation, Operation::Update);
        assert_eq!(
            change.value,
            Values(vec![
                ("id".into(), Some("1".into())),
                ("b".into(), Some("x".into()))
            ])
        );
        assert_eq!(
            change.old_value,
            Some(Values(vec![("b".into(), Some("w".into()))]))
        );
    }

    #[test]
    fn a_merged_message_keeps_the_template_headers_but_its_operation() {
        let value = Values(vec![
            ("id".into(), Some("1".into())),
            ("b".into(), None),
            ("c".into(), Some("say \"hi\"".into())),
        ]);
        let mut out = Vec::new();
        write(&mut out, "k", Operation::Insert, &value, None, UPDATE).unwrap();
        assert_eq!(operation_of(&out), Some(Operation::Insert));
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"key":"k","value":{"id":"1","b":null,"c":"say \"hi\""},
                "headers":{"operation":"insert","relation":["public","t"],"txids":[7],
                "lsn":"500","op_position":4,"last":true}})
        );
        assert_eq!(parse(&out).unwrap().value, value);
    }

    #[test]
    fn values_overlay_and_underlay() {
        let mut v = Values(vec![("a".into(), Some("1".into())), ("b".into(), None)]);
        v.overlay(&Values(vec![
            ("b".into(), Some("2".into())),
            ("c".into(), None),
        ]));
        assert_eq!(
            v,
            Values(vec![
                ("a".into(), Some("1".into())),
                ("b".into(), Some("2".into())),
                ("c".into(), None)
            ])
        );
        v.underlay(&Values(vec![
            ("a".into(), Some("0".into())),
            ("d".into(), None),
        ]));
        assert_eq!(v.0[0].1.as_deref(), Some("1"));
        assert_eq!(v.0.len(), 4);
    }

    #[test]
    fn what_is_not_a_change_message_is_refused() {
        assert!(matches!(
            parse(br#"{"headers":{"control":"up-to-date"}}"#),
            Err(MessageError::NotAChange(_))
        ));
        assert!(matches!(
            parse(br#"{"key":"k","value":{},"headers":{"operation":"upsert"}}"#),
            Err(MessageError::UnknownOperation(_))
        ));
        assert!(matches!(
            parse(br#"{"key":"k","value":{"n":1},"headers":{"operation":"insert"}}"#),
            Err(MessageError::NotAChange(_))
        ));
    }
}
