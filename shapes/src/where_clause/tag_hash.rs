//! The value hashes in Electric's subquery tags ([`super::tags`]).
//!
//! A row's tag slot for `x IN (SELECT …)` and a move pattern for a value entering or leaving
//! that subquery must be byte-identical when they talk about the same value, because the
//! client matches them as strings. Both are the lowercase hex MD5 of the shape's salt followed
//! by the compared value(s):
//!
//! - one compared value: `salt ‖ v:<value>`, or `salt ‖ NULL` for NULL;
//! - a row value `(a, b) IN (SELECT …)`: `salt ‖ a:<part> ‖ b:<part> …`, each `<part>` as
//!   above (`v:<value>` or `NULL`), named by the *outer* column (no separator between pairs).
//!
//! A value is written as its [`ValueKey`](super::ValueKey) part, the canonical text in the
//! comparison type, so the outer row's int4 `7` and the inner row's int8 `7` (or numeric `1.0`
//! and `1`) hash alike. The `v:` prefix keeps a text value `NULL` apart from a NULL.

use md5::{Digest, Md5};

/// The MD5 of one compared value (or row value), salted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValueHash([u8; 16]);

/// Lowercase hex digits, by nibble.
const HEX: &[u8; 16] = b"0123456789abcdef";

impl ValueHash {
    /// Characters of [`ValueHash::push_hex`]'s output.
    pub const HEX_LEN: usize = 32;

    /// The hash of `parts` (canonical texts, `None` for NULL), compared with the outer
    /// columns `names` (one name per part; a single part is hashed without its name).
    pub fn of<'v>(
        salt: &str,
        names: &[Box<str>],
        parts: impl IntoIterator<Item = Option<&'v str>>,
    ) -> ValueHash {
        let mut md5 = Md5::new();
        md5.update(salt.as_bytes());
        let named = names.len() > 1;
        for (name, part) in names.iter().zip(parts) {
            if named {
                md5.update(name.as_bytes());
                md5.update(b":");
            }
            match part {
                Some(value) => {
                    md5.update(b"v:");
                    md5.update(value.as_bytes());
                }
                None => md5.update(b"NULL"),
            }
        }
        ValueHash(md5.finalize().into())
    }

    /// Appends the hash as 32 lowercase hex digits.
    pub fn push_hex(&self, out: &mut String) {
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }

    /// The hash as 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        let mut out = String::with_capacity(Self::HEX_LEN);
        self.push_hex(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "single_stack95364187-1724230000000";

    fn names(names: &[&str]) -> Vec<Box<str>> {
        names.iter().map(|n| Box::from(*n)).collect()
    }

    #[test]
    fn a_single_value_hashes_as_electric_hashes_it() {
        let hash = ValueHash::of(SALT, &names(&["parent_id"]), [Some("7")]);
        assert_eq!(hash.to_hex(), "2829038ff0f68a27e557b496cdb23bf3");
    }

    #[test]
    fn a_null_is_written_without_the_value_prefix() {
        // md5 of `sNULL`
        let null = ValueHash::of("s", &names(&["x"]), [None]);
        assert_eq!(null.to_hex(), "0be8c9a24ce195d55bc465b8b2ace6d6");
        assert_ne!(null, ValueHash::of("s", &names(&["x"]), [Some("NULL")]));
    }

    #[test]
    fn a_row_value_names_each_part_by_its_outer_column() {
        let hash = ValueHash::of("s", &names(&["a", "b"]), [Some("1"), None]);
        // md5 of `sa:v:1b:NULL`
        assert_eq!(hash.to_hex(), "e94f4a44eee3013c8986ea1b9b4c68fd");
    }
}
