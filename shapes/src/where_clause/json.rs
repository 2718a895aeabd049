//! Navigating JSON text the way Postgres' `->` and `->>` do, without building a tree: values
//! arrive as text (json: as written; jsonb: Postgres' canonical output), and a lookup returns
//! the slice of the text that holds the member, which is exactly what Postgres returns.

/// A `->`/`->>` key: an object field or an array position (negative counts from the end).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JsonKey {
    Field(String),
    Index(i64),
}

/// Deepest nesting accepted while scanning (Postgres' own limit is the stack).
const MAX_DEPTH: usize = 1000;

struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while let Some(b) = self.s.as_bytes().get(self.at) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    /// Skips one value, returning its slice.
    fn value(&mut self, depth: usize) -> Option<&'a str> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        let start = self.at;
        match self.peek()? {
            b'{' | b'[' => {
                let close = if self.peek()? == b'{' { b'}' } else { b']' };
                let object = close == b'}';
                self.at += 1;
                self.ws();
                if self.peek()? == close {
                    self.at += 1;
                    return Some(&self.s[start..self.at]);
                }
                loop {
                    if object {
                        self.ws();
                        self.string()?;
                        self.ws();
                        if self.peek()? != b':' {
                            return None;
                        }
                        self.at += 1;
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.at += 1,
                        c if c == close => {
                            self.at += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => {
                self.string()?;
            }
            _ => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.at += 1;
                }
                if self.at == start {
                    return None;
                }
            }
        }
        Some(&self.s[start..self.at])
    }

    /// Skips a string (with its quotes), returning the raw slice.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.at;
        if self.peek()? != b'"' {
            return None;
        }
        self.at += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(&self.s[start..self.at]);
                }
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
    }
}

/// Decodes a JSON string literal (with quotes) into text; `None` if malformed.
pub fn unescape_string(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hex = |chars: &mut std::str::Chars<'_>| -> Option<u32> {
                    let h: String = chars.by_ref().take(4).collect();
                    if h.len() != 4 {
                        return None;
                    }
                    u32::from_str_radix(&h, 16).ok()
                };
                let first = hex(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&first) {
                    if chars.next()? != '\\' || chars.next()? != 'u' {
                        return None;
                    }
                    let low = hex(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    first
                };
                out.push(char::from_u32(code)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// `doc -> key`: the member's text, or `None` when absent (or `doc` is not an object/array).
///
/// With duplicate keys (possible in `json`, never in `jsonb`), the last one wins, as in
/// Postgres.
///
/// ```
/// use shapes::where_clause::json::{get, JsonKey};
/// assert_eq!(get(r#"{"a": [1, {"b": 2}]}"#, &JsonKey::Field("a".into())), Some("[1, {\"b\": 2}]"));
/// assert_eq!(get("[1, 2, 3]", &JsonKey::Index(-1)), Some("3"));
/// ```
pub fn get<'a>(doc: &'a str, key: &JsonKey) -> Option<&'a str> {
    let mut c = Cursor { s: doc, at: 0 };
    c.ws();
    match (c.peek()?, key) {
        (b'{', JsonKey::Field(name)) => {
            c.at += 1;
            let mut found = None;
            loop {
                c.ws();
                if c.peek()? == b'}' {
                    return found;
                }
                let k = c.string()?;
                c.ws();
                if c.peek()? != b':' {
                    return None;
                }
                c.at += 1;
                let v = c.value(0)?;
                if unescape_string(k).as_deref() == Some(name.as_str()) {
                    found = Some(v);
                }
                c.ws();
                match c.peek()? {
                    b',' => c.at += 1,
                    b'}' => return found,
                    _ => return None,
                }
            }
        }
        (b'[', JsonKey::Index(i)) => {
            c.at += 1;
            let mut items = Vec::new();
            c.ws();
            if c.peek()? != b']' {
                loop {
                    items.push(c.value(0)?);
                    c.ws();
                    match c.peek()? {
                        b',' => c.at += 1,
                        b']' => break,
                        _ => return None,
                    }
                }
            }
            let len = items.len() as i64;
            let pos = if *i < 0 { len + i } else { *i };
            if (0..len).contains(&pos) {
                Some(items[pos as usize])
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `doc -> key` for `jsonb`, where a scalar document behaves as a one-element array
/// (Postgres stores it so): `'42'::jsonb -> 0` is `42`.
pub fn get_jsonb<'a>(doc: &'a str, key: &JsonKey) -> Option<&'a str> {
    let t = doc.trim();
    let scalar = !(t.starts_with('{') || t.starts_with('['));
    match key {
        JsonKey::Index(0 | -1) if scalar && !t.is_empty() => Some(t),
        _ => get(doc, key),
    }
}

/// `doc ->> key` from `doc -> key`: strings are decoded, JSON `null` is SQL NULL, anything
/// else is its text.
pub fn as_text(member: &str) -> Option<String> {
    let t = member.trim();
    if t.starts_with('"') {
        unescape_string(t)
    } else if t == "null" {
        None
    } else {
        Some(t.to_owned())
    }
}

/// Whether `text` is one JSON value (with surrounding whitespace), as far as navigation needs.
pub fn is_valid(text: &str) -> bool {
    let mut c = Cursor { s: text, at: 0 };
    if c.value(0).is_none() {
        return false;
    }
    c.ws();
    c.at == text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_and_index_lookups_return_member_text() {
        let doc = r#"{"a": {"b": [10, "x\"y", null]}, "c": "\u00e9"}"#;
        let a = get(doc, &JsonKey::Field("a".into())).unwrap();
        let b = get(a, &JsonKey::Field("b".into())).unwrap();
        assert_eq!(
            get(b, &JsonKey::Index(1)).and_then(as_text).as_deref(),
            Some("x\"y")
        );
        assert_eq!(get(b, &JsonKey::Index(2)).and_then(as_text), None);
        assert_eq!(get(b, &JsonKey::Index(3)), None);
        assert_eq!(get(b, &JsonKey::Index(-3)), Some("10"));
        assert_eq!(
            get(doc, &JsonKey::Field("c".into()))
                .and_then(as_text)
                .as_deref(),
            Some("é")
        );
        assert_eq!(get(doc, &JsonKey::Index(0)), None);
        assert_eq!(get("[1]", &JsonKey::Field("0".into())), None);
    }

    #[test]
    fn duplicate_keys_last_wins() {
        assert_eq!(
            get(r#"{"a":1,"a":2}"#, &JsonKey::Field("a".into())),
            Some("2")
        );
    }

    #[test]
    fn decodes_surrogate_pairs() {
        assert_eq!(unescape_string(r#""\ud83d\ude00""#).as_deref(), Some("😀"));
        assert_eq!(unescape_string(r#""\ud83d""#), None);
    }
}
