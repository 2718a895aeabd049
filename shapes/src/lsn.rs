//! Log sequence numbers and transaction ids.

use std::fmt;
use std::str::FromStr;

/// A WAL position. Shown the Postgres way (`16/B374D848`); the wire protocol writes it as a
/// decimal `u64` ([`Lsn::as_u64`]). Parses both forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected `X/Y` (hex) or a decimal number")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_owned());
        match s.split_once('/') {
            Some((hi, lo)) => {
                let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
                let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
                Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
            }
            None => s.parse().map(Lsn).map_err(|_| err()),
        }
    }
}

/// A transaction id widened to 64 bits (epoch and xid), as `pg_current_snapshot()` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Xid(pub u64);

impl Xid {
    /// Widens a 32-bit xid (as pgoutput sends it) against a nearby 64-bit one (a snapshot's
    /// `xmax`): `reference + (i32)(xid − reference)`, correct within 2³¹ of the reference.
    ///
    /// ```
    /// use shapes::lsn::{Xid, Xid32};
    /// let xmax = Xid((1 << 32) + 5);
    /// assert_eq!(Xid::widen(Xid32(3), xmax), Xid((1 << 32) + 3));
    /// assert_eq!(Xid::widen(Xid32(u32::MAX), xmax), Xid((1 << 32) - 1));
    /// ```
    pub fn widen(xid: Xid32, reference: Xid) -> Xid {
        let low = reference.0 as u32;
        let delta = xid.0.wrapping_sub(low) as i32;
        Xid(reference.0.wrapping_add_signed(i64::from(delta)))
    }
}

/// A transaction id as 32 bits: what pgoutput's Begin carries and `txid_current() % 2³²` gives,
/// the low half of an [`Xid`]. It wraps around, so it is compared only with ids near in time,
/// or widened ([`Xid::widen`]) against a nearby 64-bit one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Xid32(pub u32);

impl fmt::Display for Xid32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_both_forms() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.as_u64(), 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("24155000".parse::<Lsn>().unwrap(), Lsn(24_155_000));
        assert!("1/zz".parse::<Lsn>().is_err());
        assert!("".parse::<Lsn>().is_err());
    }

    #[test]
    fn xid_widening_handles_wraparound_both_ways() {
        assert_eq!(Xid::widen(Xid32(756), Xid(757)), Xid(756));
        assert_eq!(Xid::widen(Xid32(760), Xid(757)), Xid(760));
        let near_wrap = Xid((3 << 32) + 2);
        assert_eq!(
            Xid::widen(Xid32(0xffff_fff0), near_wrap),
            Xid((3 << 32) - 16)
        );
        assert_eq!(
            Xid::widen(Xid32(10), Xid((2 << 32) - 5)),
            Xid((2 << 32) + 10)
        );
    }
}
