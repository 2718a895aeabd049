//! Reading big-endian integers and NUL-terminated strings off a message, with bounds checks
//! that turn malformed input into [`DecodeError`]s instead of panics.

use shapes::lsn::Lsn;

use super::DecodeError;

/// A read position in one pgoutput message.
#[derive(Debug, Clone)]
pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The message being read, for error messages.
    message: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8], message: &'static str) -> Self {
        Self {
            bytes,
            pos: 0,
            message,
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(DecodeError::Truncated {
                message: self.message,
                offset: self.pos,
                needed: n,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        self.array().map(i16::from_be_bytes)
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_be_bytes)
    }

    /// An `Int32` that Postgres documents as an oid or xid (unsigned on its side).
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    pub fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        self.array().map(u64::from_be_bytes).map(Lsn)
    }

    /// A non-negative `Int16` count.
    pub fn count16(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| DecodeError::NegativeLength {
            message: self.message,
            offset: at,
            length: i64::from(n),
        })
    }

    /// A non-negative `Int32` count or length.
    pub fn count32(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| DecodeError::NegativeLength {
            message: self.message,
            offset: at,
            length: i64::from(n),
        })
    }

    /// A NUL-terminated UTF-8 string (identifiers, prefixes).
    pub fn cstr(&mut self) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        let rest = self.remaining();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString {
                message: self.message,
                offset: start,
            })?;
        let text = std::str::from_utf8(&rest[..len]).map_err(|_| DecodeError::InvalidUtf8 {
            message: self.message,
            offset: start,
        })?;
        self.pos = start + len + 1;
        Ok(text)
    }

    /// Fails unless every byte was read: protocol version 1 messages have a fixed layout, so
    /// leftovers mean we decoded something wrongly.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                message: self.message,
                count: self.bytes.len() - self.pos,
            })
        }
    }
}
