//! The messages of the Electric HTTP Shape API v1, encoded as the JSON clients expect.
//!
//! Shape logs store messages pre-encoded, so encoding happens once per change per shape and
//! never again per request. Everything here writes straight into a byte buffer.

use std::io::Write as _;

use crate::lsn::{Lsn, Xid};
use crate::schema::{Column, QualifiedName, TableSchema, TypeKind};

mod template;

pub use template::{MessageTemplate, RowPart};

/// `insert`, `update` or `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Insert,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// The message key of a row: `"<schema>"."<table>"/"<pk1>"/"<pk2>"`.
///
/// `/` is doubled inside values and `.`/`/` doubled inside the relation's names; a NULL key
/// part is `_`. Tables without a primary key use every column, in name order.
///
/// ```
/// use shapes::schema::QualifiedName;
/// use shapes::wire::message_key;
/// let key = message_key(&QualifiedName::new("public", "items"), [Some("a/b"), None]);
/// assert_eq!(key, r#""public"."items"/"a//b"/_"#);
/// ```
pub fn message_key<'a>(
    table: &QualifiedName,
    key_values: impl IntoIterator<Item = Option<&'a str>>,
) -> String {
    let mut key = String::with_capacity(table.schema.len() + table.name.len() + 48);
    key.push('"');
    push_doubled(&mut key, &table.schema, b"/.");
    key.push_str("\".\"");
    push_doubled(&mut key, &table.name, b"/.");
    key.push('"');
    for value in key_values {
        match value {
            None => key.push_str("/_"),
            Some(v) => {
                key.push_str("/\"");
                push_doubled(&mut key, v, b"/");
                key.push('"');
            }
        }
    }
    key
}

/// Appends `text` with each of the ASCII bytes `doubled` written twice, copying the runs
/// between them whole (a key is built for every message).
fn push_doubled(out: &mut String, text: &str, doubled: &[u8]) {
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        if doubled.contains(&byte) {
            // Through the byte; the next run starts with it again. An ASCII byte is a
            // character boundary in UTF-8.
            out.push_str(&text[start..=i]);
            start = i;
        }
    }
    out.push_str(&text[start..]);
}

/// Positions of the columns that make a row's key: the primary key, or every column in name
/// order when the table has none.
pub fn key_columns(table: &TableSchema) -> Vec<usize> {
    let pk = table.primary_key();
    if !pk.is_empty() {
        return pk;
    }
    let mut all: Vec<usize> = (0..table.columns.len()).collect();
    all.sort_by(|a, b| table.columns[*a].name.cmp(&table.columns[*b].name));
    all
}

/// Bytes that JSON strings must escape: control characters, `"` and `\\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Writes `s` as a JSON string (quoted and escaped).
#[inline]
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Most values are short and need no escape: checked byte by byte, then copied whole.
    if s.len() <= 48 && !s.bytes().any(|b| NEEDS_ESCAPE[usize::from(b)]) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    write_escaped_json_str(out, s);
}

fn write_escaped_json_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = first_escape(bytes, start) {
        out.extend_from_slice(&bytes[start..i]);
        match bytes[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The position of the first byte at or after `from` that JSON must escape, looking at eight
/// bytes at a time: most texts have none, and values are written once per message.
fn first_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Whether any byte of `word` is below `n` (exact for n ≤ 0x80).
    const fn any_below(word: u64, n: u8) -> bool {
        word.wrapping_sub(ONES * n as u64) & !word & HIGHS != 0
    }
    let mut at = from;
    for word in bytes[from..].chunks_exact(8) {
        let word = u64::from_ne_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        if any_below(word, 0x20)
            || any_below(word ^ (ONES * u64::from(b'"')), 1)
            || any_below(word ^ (ONES * u64::from(b'\\')), 1)
        {
            break;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| NEEDS_ESCAPE[usize::from(b)])
        .map(|i| at + i)
}

/// Writes an unsigned integer in decimal (without the formatting machinery).
#[inline]
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes `{"col":"text",…}` for the given (column name, value) pairs.
pub fn write_row_object<'a>(
    out: &mut Vec<u8>,
    values: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) {
    out.push(b'{');
    let mut first = true;
    for (name, value) in values {
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_str(out, name);
        out.push(b':');
        match value {
            Some(v) => write_json_str(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

/// Headers of a change in the log (absent for snapshot rows).
#[derive(Debug, Clone, Copy)]
pub struct LogPosition {
    pub txid: u64,
    pub lsn: Lsn,
    pub op_position: u64,
    /// The shape's last op of this transaction.
    pub last: bool,
}

impl LogPosition {
    /// `,"txids":[…],"lsn":"…","op_position":…` and `,"last":true` when it is.
    fn write_headers(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"txids\":[");
        write_u64(out, self.txid);
        out.extend_from_slice(b"],\"lsn\":\"");
        write_u64(out, self.lsn.as_u64());
        out.extend_from_slice(b"\",\"op_position\":");
        write_u64(out, self.op_position);
        if self.last {
            out.extend_from_slice(b",\"last\":true");
        }
    }
}

/// A change message under construction: call [`ChangeMessage::write`].
#[derive(Debug, Clone, Copy)]
pub struct ChangeMessage<'a> {
    pub key: &'a str,
    pub operation: Operation,
    pub relation: &'a QualifiedName,
    pub log: Option<LogPosition>,
    /// For the two halves of a primary-key change: (`key_change_to` | `key_change_from`, key).
    pub key_change: Option<(&'static str, &'a str)>,
    /// Rows of a subset snapshot carry the snapshot's mark.
    pub snapshot_mark: Option<u64>,
}

impl ChangeMessage<'_> {
    /// Writes `{"key":…,"value":{…},"old_value"?:{…},"headers":{…}}`.
    pub fn write<'v>(
        &self,
        out: &mut Vec<u8>,
        value: impl IntoIterator<Item = (&'v str, Option<&'v str>)>,
        old_value: Option<&mut dyn Iterator<Item = (&'v str, Option<&'v str>)>>,
    ) {
        out.extend_from_slice(b"{\"key\":");
        write_json_str(out, self.key);
        out.extend_from_slice(b",\"value\":");
        write_row_object(out, value);
        if let Some(old) = old_value {
            out.extend_from_slice(b",\"old_value\":");
            write_row_object(out, old);
        }
        out.extend_from_slice(b",\"headers\":{\"operation\":\"");
        out.extend_from_slice(self.operation.as_str().as_bytes());
        out.extend_from_slice(b"\",\"relation\":[");
        write_json_str(out, &self.relation.schema);
        out.push(b',');
        write_json_str(out, &self.relation.name);
        out.push(b']');
        if let Some(log) = self.log {
            log.write_headers(out);
        }
        if let Some(mark) = self.snapshot_mark {
            let _ = write!(out, ",\"snapshot_mark\":{mark}");
        }
        if let Some((name, key)) = self.key_change {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            write_json_str(out, key);
        }
        out.extend_from_slice(b"}}");
    }
}

/// Where a change message's operation starts, as [`ChangeMessage::write`] lays it out.
const OPERATION_HEADER: &[u8] = b",\"headers\":{\"operation\":\"";

/// The operation of a message [`ChangeMessage::write`] wrote; `None` for anything else (a
/// control message). Reads the layout, not the JSON: the header can only be where `write`
/// puts it, since every string before it is escaped (no `"` of its own) and values are
/// strings or null (never an object named `headers`).
///
/// ```
/// use shapes::wire::{Operation, operation_of};
/// let message = br#"{"key":"k","value":{"operation":"delete"},"headers":{"operation":"insert"}}"#;
/// assert_eq!(operation_of(message), Some(Operation::Insert));
/// assert_eq!(operation_of(br#"{"headers":{"control":"up-to-date"}}"#), None);
/// ```
pub fn operation_of(message: &[u8]) -> Option<Operation> {
    // The headers are near the end: look from there.
    let at = message
        .windows(OPERATION_HEADER.len())
        .rposition(|window| window == OPERATION_HEADER)?;
    let rest = &message[at + OPERATION_HEADER.len()..];
    [Operation::Insert, Operation::Update, Operation::Delete]
        .into_iter()
        .find(|op| {
            rest.strip_prefix(op.as_str().as_bytes())
                .is_some_and(|after| after.starts_with(b"\""))
        })
}

/// `{"headers":{"control":"up-to-date","global_last_seen_lsn":"…"}}`.
pub fn up_to_date(global_last_seen_lsn: Lsn) -> String {
    format!(
        r#"{{"headers":{{"control":"up-to-date","global_last_seen_lsn":"{}"}}}}"#,
        global_last_seen_lsn.as_u64()
    )
}

/// `{"headers":{"control":"must-refetch"}}`.
pub const MUST_REFETCH: &str = r#"{"headers":{"control":"must-refetch"}}"#;

/// The snapshot a shape's initial rows were read in, as `pg_current_snapshot()` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    pub xmin: Xid,
    pub xmax: Xid,
    pub xip: Vec<Xid>,
}

impl SnapshotInfo {
    /// Parses `pg_current_snapshot()`'s text form `xmin:xmax:xip,xip,…`.
    ///
    /// ```
    /// use shapes::wire::SnapshotInfo;
    /// let s = SnapshotInfo::parse("755:757:756").unwrap();
    /// assert_eq!((s.xmin.0, s.xmax.0, s.xip.len()), (755, 757, 1));
    /// ```
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let xmin = Xid(parts.next()?.parse().ok()?);
        let xmax = Xid(parts.next()?.parse().ok()?);
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().map(Xid))
                .collect::<Result<_, _>>()
                .ok()?,
        };
        parts.next().is_none().then_some(Self { xmin, xmax, xip })
    }

    /// Whether transaction `xid` had committed when the snapshot was taken (its effects are in
    /// the snapshot): `xid < xmin`, or `xid < xmax` and not in progress.
    pub fn sees(&self, xid: Xid) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.xip.contains(&xid))
    }

    /// `{"headers":{"control":"snapshot-end","xmin":"…","xmax":"…","xip_list":[…]}}`.
    pub fn snapshot_end_message(&self) -> String {
        let xip: Vec<String> = self.xip.iter().map(|x| format!("\"{}\"", x.0)).collect();
        format!(
            r#"{{"headers":{{"control":"snapshot-end","xmin":"{}","xmax":"{}","xip_list":[{}]}}}}"#,
            self.xmin.0,
            self.xmax.0,
            xip.join(",")
        )
    }
}

impl serde::Serialize for Xid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Xid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Xid)
    }
}

/// The `electric-schema` header: `{"id":{"type":"int4","not_null":true,"pk_index":0},…}` for
/// the selected columns, in table order.
pub fn schema_header(table: &TableSchema, selected: &[usize]) -> String {
    let mut out = Vec::with_capacity(64 * selected.len());
    out.push(b'{');
    for (n, &i) in selected.iter().enumerate() {
        let column = &table.columns[i];
        if n > 0 {
            out.push(b',');
        }
        write_json_str(&mut out, &column.name);
        out.push(b':');
        write_column_schema(&mut out, column);
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

fn write_column_schema(out: &mut Vec<u8>, column: &Column) {
    let base = match &column.ty.kind {
        TypeKind::Array { element } => element.as_ref(),
        _ => &column.ty,
    };
    out.extend_from_slice(b"{\"type\":");
    write_json_str(out, &base.name);
    let is_array = matches!(column.ty.kind, TypeKind::Array { .. });
    if is_array {
        let _ = write!(out, ",\"dims\":{}", column.dims.max(1));
    }
    if let Some(pk) = column.pk_index {
        let _ = write!(out, ",\"pk_index\":{pk}");
    }
    if column.not_null {
        out.extend_from_slice(b",\"not_null\":true");
    }
    write_type_modifier(out, &base.name, column.type_mod);
    out.push(b'}');
}

fn write_type_modifier(out: &mut Vec<u8>, type_name: &str, type_mod: i32) {
    const TIME_TYPES: [&str; 5] = ["time", "timetz", "timestamp", "timestamptz", "date"];
    match type_name {
        "varchar" | "text" if type_mod > 0 => {
            let _ = write!(out, ",\"max_length\":{}", type_mod - 4);
        }
        "bpchar" if type_mod > 0 => {
            let _ = write!(out, ",\"length\":{}", type_mod - 4);
        }
        "bit" | "varbit" => {
            let _ = write!(out, ",\"length\":{type_mod}");
        }
        "numeric" if type_mod > -1 => {
            let packed = type_mod - 4;
            let _ = write!(
                out,
                ",\"precision\":{},\"scale\":{}",
                (packed >> 16) as i16,
                (packed & 0xffff) as i16
            );
        }
        "interval" if type_mod > -1 => {
            let precision = (type_mod & 0xffff) as i16;
            if precision != -1 {
                let _ = write!(out, ",\"precision\":{precision}");
            }
        }
        t if TIME_TYPES.contains(&t) && type_mod > 0 => {
            let _ = write!(out, ",\"precision\":{type_mod}");
        }
        _ if type_mod > -1 => {
            let _ = write!(out, ",\"type_mod\":{type_mod}");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{base, column, table};
    use rstest::rstest;

    #[test]
    fn keys_escape_slashes_dots_and_nulls_like_electric() {
        let rel = QualifiedName::new("a\".\"b", "c");
        assert_eq!(message_key(&rel, [Some("")]), r#""a".."b"."c"/"""#);
        let rel = QualifiedName::new("a", "b\"/\"");
        assert_eq!(message_key(&rel, [Some("")]), r#""a"."b"//""/"""#);
        let rel = QualifiedName::new("public", "items");
        assert_eq!(
            message_key(&rel, [Some("1"), None]),
            r#""public"."items"/"1"/_"#
        );
        let rel = QualifiedName::new("s.é", "/t/");
        assert_eq!(
            message_key(&rel, [Some("日/本//"), Some("/"), Some("é")]),
            r#""s..é"."//t//"/"日//本////"/"//"/"é""#
        );
    }

    #[test]
    fn json_strings_escape_control_characters_quotes_and_keep_unicode() {
        let mut out = Vec::new();
        write_json_str(&mut out, "a\"b\\c\n\u{1}é✓");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\n\u0001é✓""#);
    }

    #[test]
    fn json_strings_round_trip_every_character_class() {
        let mut text: String = (0u8..0x80).map(char::from).collect();
        text.push_str("é✓日本😀\u{7f}\u{2028}");
        let mut out = Vec::new();
        write_json_str(&mut out, &text);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, text);
    }

    proptest::proptest! {
        /// Any text, escapes anywhere (word boundaries included), reads back as itself, and
        /// exactly the bytes JSON must escape are escaped.
        #[test]
        fn json_strings_round_trip(text in "[\\x00-\\x21\\x22\\x5c a-zé✓\\u{7f}]{0,40}") {
            let mut out = Vec::new();
            write_json_str(&mut out, &text);
            let back: String = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(&back, &text);
            proptest::prop_assert_eq!(out, serde_json::to_vec(&text).unwrap());
        }
    }

    #[rstest]
    fn integers_are_written_in_decimal(#[values(0u64, 7, 10, 999, 1_000_000, u64::MAX)] n: u64) {
        let mut out = Vec::new();
        write_u64(&mut out, n);
        assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
    }

    #[test]
    fn change_messages_match_the_protocol() {
        let rel = QualifiedName::new("public", "items");
        let key = message_key(&rel, [Some("2")]);
        let mut out = Vec::new();
        ChangeMessage {
            key: &key,
            operation: Operation::Insert,
            relation: &rel,
            log: Some(LogPosition {
                txid: 756,
                lsn: Lsn(24_155_000),
                op_position: 0,
                last: true,
            }),
            key_change: None,
            snapshot_mark: None,
        }
        .write(&mut out, [("id", Some("2")), ("title", Some("b"))], None);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"key":"\"public\".\"items\"/\"2\"","value":{"id":"2","title":"b"},
                "headers":{"operation":"insert","relation":["public","items"],"txids":[756],
                "lsn":"24155000","op_position":0,"last":true}})
        );
    }

    #[rstest]
    #[case::insert(Operation::Insert)]
    #[case::update(Operation::Update)]
    #[case::delete(Operation::Delete)]
    fn the_operation_of_a_change_message_is_read_back_whatever_its_values_say(
        #[case] operation: Operation,
    ) {
        let rel = QualifiedName::new("public", "headers");
        // Column names and values that spell the header do not fool it.
        let tricky = r#","headers":{"operation":"delete""#;
        let key = message_key(&rel, [Some(tricky)]);
        let mut out = Vec::new();
        ChangeMessage {
            key: &key,
            operation,
            relation: &rel,
            log: Some(LogPosition {
                txid: 1,
                lsn: Lsn(2),
                op_position: 0,
                last: false,
            }),
            key_change: Some(("key_change_to", tricky)),
            snapshot_mark: None,
        }
        .write(
            &mut out,
            [("operation", Some("delete")), ("headers", Some(tricky))],
            Some(&mut [("operation", Some("update"))].into_iter()),
        );
        assert_eq!(operation_of(&out), Some(operation));
    }

    #[test]
    fn control_messages_have_no_operation() {
        assert_eq!(operation_of(up_to_date(Lsn(5)).as_bytes()), None);
        assert_eq!(operation_of(MUST_REFETCH.as_bytes()), None);
        assert_eq!(operation_of(b""), None);
    }

    #[test]
    fn snapshot_visibility_follows_xmin_xmax_and_in_progress_list() {
        let s = SnapshotInfo::parse("100:105:101,103").unwrap();
        assert!(s.sees(Xid(99)));
        assert!(s.sees(Xid(100)));
        assert!(!s.sees(Xid(101)));
        assert!(s.sees(Xid(102)));
        assert!(!s.sees(Xid(105)));
        assert_eq!(
            s.snapshot_end_message(),
            r#"{"headers":{"control":"snapshot-end","xmin":"100","xmax":"105","xip_list":["101","103"]}}"#
        );
        assert!(SnapshotInfo::parse("1:2").is_none());
        assert!(SnapshotInfo::parse("1:2:x").is_none());
    }

    #[test]
    fn schema_header_carries_types_keys_and_modifiers() {
        let table = table(
            "public",
            "t",
            vec![
                column("id", base("int4")).pk(0).not_null(),
                column("name", base("varchar")).type_mod(14),
                column("price", base("numeric")).type_mod((10 << 16 | 2) + 4),
                column("code", base("bpchar")).type_mod(7),
            ],
        );
        assert_eq!(
            schema_header(&table, &[0, 1, 2, 3]),
            r#"{"id":{"type":"int4","pk_index":0,"not_null":true},"name":{"type":"varchar","max_length":10},"price":{"type":"numeric","precision":10,"scale":2},"code":{"type":"bpchar","length":3}}"#
        );
    }
}
