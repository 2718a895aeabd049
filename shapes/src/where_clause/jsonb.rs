//! `jsonb` operators as Postgres defines them: `=`/`<>`, containment (`@>`, `<@`) and key
//! existence (`?`, `?|`, `?&`).
//!
//! Values are read into a tree first: `jsonb` keeps the last of duplicate keys, compares
//! numbers as `numeric` (`1.0` equals `1`), and distinguishes a top-level scalar (a "raw
//! scalar", which an array may contain but which contains no array) from an array.

use std::collections::BTreeMap;

use super::json::unescape_string;
use super::numeric::Numeric;

/// Deepest nesting read (Postgres' own limit is its stack).
const MAX_DEPTH: usize = 1000;

/// A `jsonb` value.
#[derive(Debug, Clone, PartialEq)]
pub enum Jsonb {
    Null,
    Bool(bool),
    Number(Numeric),
    String(String),
    Array(Vec<Jsonb>),
    Object(BTreeMap<String, Jsonb>),
}

struct Reader<'a> {
    s: &'a [u8],
    text: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn string(&mut self) -> Option<String> {
        let start = self.at;
        if self.s.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        loop {
            match self.s.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return unescape_string(&self.text[start..self.at]);
                }
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<Jsonb> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        let v = match self.s.get(self.at)? {
            b'{' => {
                self.at += 1;
                let mut members = BTreeMap::new();
                self.ws();
                if self.s.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Some(Jsonb::Object(members));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    if self.s.get(self.at) != Some(&b':') {
                        return None;
                    }
                    self.at += 1;
                    // the last of duplicate keys wins, as in jsonb
                    members.insert(key, self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.at)? {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            break Jsonb::Object(members);
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Some(Jsonb::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.at)? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            break Jsonb::Array(items);
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => Jsonb::String(self.string()?),
            b't' | b'f' | b'n' => {
                let rest = &self.text[self.at..];
                let (word, v) = [
                    ("true", Jsonb::Bool(true)),
                    ("false", Jsonb::Bool(false)),
                    ("null", Jsonb::Null),
                ]
                .into_iter()
                .find(|(w, _)| rest.starts_with(w))?;
                self.at += word.len();
                v
            }
            _ => {
                let start = self.at;
                while matches!(
                    self.s.get(self.at),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.at += 1;
                }
                Jsonb::Number(self.text[start..self.at].parse().ok()?)
            }
        };
        Some(v)
    }
}

impl Jsonb {
    /// Reads JSON text; `None` when it is not valid JSON.
    ///
    /// ```
    /// use shapes::where_clause::jsonb::{equal, Jsonb};
    /// let a = Jsonb::parse(r#"{"a": 1.0, "a": [2]}"#).unwrap();
    /// assert!(equal(&a, &Jsonb::parse(r#"{"a":[2.00]}"#).unwrap()));
    /// assert_eq!(Jsonb::parse("[1,"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Jsonb> {
        let mut r = Reader {
            s: text.as_bytes(),
            text,
            at: 0,
        };
        let v = r.value(0)?;
        r.ws();
        (r.at == text.len()).then_some(v)
    }

    /// `self @> other`, as Postgres' `JsonbDeepContains` decides it.
    ///
    /// ```
    /// use shapes::where_clause::jsonb::Jsonb;
    /// let doc = Jsonb::parse(r#"{"a": [1, 2, {"b": 3}], "c": "x"}"#).unwrap();
    /// assert!(doc.contains(&Jsonb::parse(r#"{"a": [{"b": 3}, 1]}"#).unwrap()));
    /// assert!(!doc.contains(&Jsonb::parse(r#"{"a": 1}"#).unwrap()));
    /// assert!(Jsonb::parse("[1, 2]").unwrap().contains(&Jsonb::parse("2").unwrap()));
    /// assert!(!Jsonb::parse("2").unwrap().contains(&Jsonb::parse("[2]").unwrap()));
    /// ```
    pub fn contains(&self, other: &Jsonb) -> bool {
        // a raw scalar on the right is a one-element array that an array may contain
        let as_array = |v: &Jsonb| match v {
            Jsonb::Array(items) => (items.clone(), false),
            scalar => (vec![scalar.clone()], true),
        };
        match (self, other) {
            (Jsonb::Object(_), Jsonb::Object(_)) => deep_contains(self, other),
            (Jsonb::Object(_), _) | (_, Jsonb::Object(_)) => false,
            _ => {
                let ((lhs, lhs_raw), (rhs, rhs_raw)) = (as_array(self), as_array(other));
                if lhs_raw && !rhs_raw {
                    return false;
                }
                array_contains(&lhs, &rhs)
            }
        }
    }

    /// `self ? key`: an object's key, or a string element of an array (or a top-level
    /// string).
    pub fn has_key(&self, key: &str) -> bool {
        match self {
            Jsonb::Object(m) => m.contains_key(key),
            Jsonb::Array(items) => items
                .iter()
                .any(|i| matches!(i, Jsonb::String(s) if s == key)),
            Jsonb::String(s) => s == key,
            _ => false,
        }
    }
}

/// Containment of two values of the same kind below the top level.
fn deep_contains(lhs: &Jsonb, rhs: &Jsonb) -> bool {
    match (lhs, rhs) {
        (Jsonb::Object(l), Jsonb::Object(r)) => r.iter().all(|(k, rv)| match l.get(k) {
            None => false,
            Some(lv) => match (lv, rv) {
                (Jsonb::Object(_), Jsonb::Object(_)) | (Jsonb::Array(_), Jsonb::Array(_)) => {
                    deep_contains(lv, rv)
                }
                (Jsonb::Object(_) | Jsonb::Array(_), _)
                | (_, Jsonb::Object(_) | Jsonb::Array(_)) => false,
                _ => scalar_equal(lv, rv),
            },
        }),
        (Jsonb::Array(l), Jsonb::Array(r)) => array_contains(l, r),
        _ => false,
    }
}

/// Every element of `rhs` is in `lhs`: a scalar equal to one of `lhs`'s scalars, a
/// container contained in one of `lhs`'s containers of the same kind.
fn array_contains(lhs: &[Jsonb], rhs: &[Jsonb]) -> bool {
    rhs.iter().all(|r| match r {
        Jsonb::Object(_) | Jsonb::Array(_) => lhs.iter().any(|l| deep_contains(l, r)),
        scalar => lhs.iter().any(|l| scalar_equal(l, scalar)),
    })
}

fn scalar_equal(a: &Jsonb, b: &Jsonb) -> bool {
    match (a, b) {
        (Jsonb::Number(x), Jsonb::Number(y)) => x.cmp(y).is_eq(),
        (Jsonb::Object(_) | Jsonb::Array(_), _) | (_, Jsonb::Object(_) | Jsonb::Array(_)) => false,
        (x, y) => x == y,
    }
}

/// `a = b` for jsonb: the same structure, numbers equal as numeric, keys in any order.
pub fn equal(a: &Jsonb, b: &Jsonb) -> bool {
    match (a, b) {
        (Jsonb::Object(x), Jsonb::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        (Jsonb::Array(x), Jsonb::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| equal(v, w))
        }
        (x, y) => scalar_equal(x, y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Jsonb {
        Jsonb::parse(s).unwrap()
    }

    #[test]
    fn containment_follows_postgres() {
        assert!(j(r#"{"a":1,"b":2}"#).contains(&j(r#"{"a":1}"#)));
        assert!(j(r#"{"a":1}"#).contains(&j("{}")));
        assert!(!j("[1]").contains(&j("{}")));
        assert!(j("[1,[2,3]]").contains(&j("[[3]]")));
        assert!(!j("[1,[2,3]]").contains(&j("[3]")));
        assert!(j("[1]").contains(&j("[1,1]")));
        assert!(j(r#""a""#).contains(&j(r#""a""#)));
        assert!(j("1.0").contains(&j("1")));
        assert!(!j(r#"{"a":[1]}"#).contains(&j(r#"{"a":1}"#)));
        assert!(j("[]").contains(&j("[]")));
    }

    #[test]
    fn existence_and_equality() {
        assert!(j(r#"{"a":null}"#).has_key("a"));
        assert!(j(r#"["a", 1]"#).has_key("a"));
        assert!(!j(r#"["a", 1]"#).has_key("1"));
        assert!(j(r#""a""#).has_key("a"));
        assert!(!j(r#"{"b":{"a":1}}"#).has_key("a"));
        assert!(equal(
            &j(r#"{"a":1,"b":[1e2]}"#),
            &j(r#"{"b":[100],"a":1.00}"#)
        ));
        assert!(!equal(&j("[1]"), &j("1")));
    }
}
