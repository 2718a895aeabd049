//! Offsets into a shape log, as the Electric protocol writes them.
//!
//! `-1` is before everything; `0_k` is initial-snapshot chunk `k` and `0_inf` the end of the
//! snapshot; `<lsn>_<op>` is operation `op` of the transaction that committed at `lsn` (the
//! decimal commit LSN), and `<lsn>_inf` is the end of that transaction. An offset means "I have
//! everything up to here"; they are totally ordered.

use std::fmt;
use std::str::FromStr;

use crate::lsn::Lsn;

/// A position in a shape log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Offset {
    /// `-1`: before the first snapshot row.
    BeforeAll,
    /// `<tx>_<op>`; `op == u64::MAX` is written `inf`. `tx == 0` is the snapshot.
    At { tx: u64, op: u64 },
}

impl Offset {
    pub const INF: u64 = u64::MAX;
    /// `0_inf`: the end of the initial snapshot.
    pub const SNAPSHOT_END: Offset = Offset::At {
        tx: 0,
        op: u64::MAX,
    };

    /// `0_<chunk>`.
    pub fn snapshot_chunk(chunk: u64) -> Offset {
        Offset::At { tx: 0, op: chunk }
    }

    /// `<lsn>_<op>`.
    pub fn log(lsn: Lsn, op: u64) -> Offset {
        Offset::At {
            tx: lsn.as_u64(),
            op,
        }
    }

    /// The commit LSN of a log offset (`None` for `-1` and snapshot offsets).
    pub fn lsn(self) -> Option<Lsn> {
        match self {
            Offset::At { tx, .. } if tx > 0 => Some(Lsn(tx)),
            _ => None,
        }
    }

    pub fn is_snapshot(self) -> bool {
        matches!(self, Offset::BeforeAll | Offset::At { tx: 0, .. })
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Offset::BeforeAll => f.write_str("-1"),
            Offset::At {
                tx,
                op: Offset::INF,
            } => write!(f, "{tx}_inf"),
            Offset::At { tx, op } => write!(f, "{tx}_{op}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("has invalid format")]
pub struct ParseOffsetError;

impl FromStr for Offset {
    type Err = ParseOffsetError;

    /// Accepts `-1`, `<u64>_<u64>` and `<u64>_inf` (nothing else: no signs, no spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "-1" {
            return Ok(Offset::BeforeAll);
        }
        let (tx, op) = s.split_once('_').ok_or(ParseOffsetError)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(tx) {
            return Err(ParseOffsetError);
        }
        let tx = tx.parse().map_err(|_| ParseOffsetError)?;
        let op = match op {
            "inf" => Offset::INF,
            op if digits(op) => op.parse().map_err(|_| ParseOffsetError)?,
            _ => return Err(ParseOffsetError),
        };
        Ok(Offset::At { tx, op })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn parses_and_prints_every_form(
        #[values(
            "-1",
            "0_0",
            "0_7",
            "0_inf",
            "24155000_0",
            "24155000_12",
            "24155000_inf"
        )]
        text: &str,
    ) {
        assert_eq!(text.parse::<Offset>().unwrap().to_string(), text);
    }

    #[rstest]
    fn refuses_every_malformed_form(
        #[values(
            "", "-2", "1", "_1", "1_", "a_1", "1_a", "+1_0", "1_-1", " 1_0", "1_0_0"
        )]
        bad: &str,
    ) {
        assert!(bad.parse::<Offset>().is_err(), "{bad:?} accepted");
    }

    #[test]
    fn orders_snapshot_before_log_and_inf_last_within_a_transaction() {
        let order: Vec<Offset> = [
            "-1", "0_0", "0_3", "0_inf", "10_0", "10_4", "10_inf", "11_0",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }
}
