//! Shape handles: `<definition hash>-<unix microseconds>`.
//!
//! A handle names one incarnation of a shape. The same definition keeps its handle until the
//! shape is rotated or deleted; a new incarnation gets a new creation time, so handles are
//! never reused, across restarts too.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(String);

impl Handle {
    /// ```
    /// use shapes::handle::Handle;
    /// assert_eq!(Handle::new(0xabc, 1_700_000_000_000_000).to_string(), "0000000000000abc-1700000000000000");
    /// ```
    pub fn new(definition_hash: u64, created_micros: u64) -> Self {
        Self(format!("{definition_hash:016x}-{created_micros}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The creation time part, when the handle has our form.
    pub fn created_micros(&self) -> Option<u64> {
        self.0.rsplit_once('-')?.1.parse().ok()
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not a valid shape handle")]
pub struct ParseHandleError;

impl FromStr for Handle {
    type Err = ParseHandleError;

    /// Any non-empty printable ASCII string of at most 128 bytes (servers other than ours may
    /// shape handles differently; we only compare them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(s.to_owned())).ok_or(ParseHandleError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_parse_leniently_and_expose_their_creation_time() {
        let h: Handle = "0000000000000abc-17".parse().unwrap();
        assert_eq!(h.created_micros(), Some(17));
        assert!("".parse::<Handle>().is_err());
        assert!("a b".parse::<Handle>().is_err());
        assert!("x".repeat(129).parse::<Handle>().is_err());
    }
}
