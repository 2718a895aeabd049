//! The record format of shape log files (format version 1).
//!
//! ```text
//! record := payload_len: u32 LE | kind: u8 | tx: u64 LE | op: u64 LE | crc32: u32 LE | payload
//! ```
//! The CRC covers kind, tx, op and payload, so a torn write at the tail of a file (a crash in
//! the middle of an append) is recognised and cut off when the log is opened again.
//!
//! Kinds: an *entry* is one pre-encoded JSON message at offset `tx_op`; a *commit* closes a
//! Postgres transaction (`tx` = commit LSN, `op` = its end LSN) and is what makes the entries
//! before it visible; *snapshot-complete* closes the initial snapshot file.
//!
//! A commit written by compaction carries a [`CommitMark`] as its payload (ordinary commits
//! have none; a reader that does not know marks skips commit payloads, so a compacted log is
//! still a valid log for it, only chunked differently). Compaction also writes
//! [`Retraction`]s, conditional deletes, as commit records with a payload of their own: a
//! build that does not know them reads an ordinary commit inside a compacted range, which
//! changes nothing there (no new record kind, which it would take for damage and cut off).

use std::io::{self, Read};

use shapes::offset::Offset;

pub const HEADER_LEN: usize = 25;

/// Largest payload accepted when reading (a corrupt length must not allocate gigabytes).
pub const MAX_PAYLOAD: u32 = 1 << 30;

/// Payloads up to this length are read into a buffer of their announced length at once.
const SMALL_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Entry = 1,
    Commit = 2,
    SnapshotComplete = 3,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Entry),
            2 => Some(Self::Commit),
            3 => Some(Self::SnapshotComplete),
            _ => None,
        }
    }
}

/// What a commit written by compaction says about the log around it (see
/// `shape_log::compaction`):
///
/// ```text
/// mark := version: u8 (1) | flags: u8 | rows: i64 LE
/// ```
/// - `CHUNK_END`: a chunk ends after this record, whatever its size;
/// - `RANGE_START`: a compacted range begins; inside it chunks end only at marks (a response
///   never ends between two entries of one merge window);
/// - `RANGE_END`: the compacted range ends here; `rows` is what the whole range adds to the
///   shape (inserts minus deletes of the history it replaced: a merged range no longer shows
///   them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitMark {
    pub flags: u8,
    pub rows: i64,
}

impl CommitMark {
    pub const CHUNK_END: u8 = 1;
    pub const RANGE_START: u8 = 2;
    pub const RANGE_END: u8 = 4;
    /// On a `RANGE_START`: in this range, a merged insert of a key means the key had no row
    /// before the insert's window (a row deleted and inserted again in one window is written
    /// as its delete and then its insert). Ranges written before retractions existed lack it.
    pub const FRESH_INSERTS: u8 = 8;
    const VERSION: u8 = 1;
    const LEN: usize = 10;

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0] = Self::VERSION;
        out[1] = self.flags;
        out[2..].copy_from_slice(&self.rows.to_le_bytes());
        out
    }

    /// The mark a commit's payload holds; `None` for an ordinary commit (empty payload) and
    /// for a mark of a version this build does not know (read as an ordinary commit).
    pub fn decode(payload: &[u8]) -> Option<Self> {
        if payload.len() != Self::LEN || payload[0] != Self::VERSION {
            return None;
        }
        let mut rows = [0u8; 8];
        rows.copy_from_slice(&payload[2..]);
        Some(Self {
            flags: payload[1],
            rows: i64::from_le_bytes(rows),
        })
    }
}

/// A delete that compaction wrote in place of a row's insert … delete within one merge window
/// (see `compaction::merge`): served only to a reader that may hold the row, one resuming at
/// or after `held_from` (and, like any entry, before the record's own offset); every other
/// reader skips it, so a device starting from `-1` never hears of the row.
///
/// ```text
/// retraction := tag: u8 (b'R') | version: u8 (1) | held_from.tx: u64 LE | held_from.op: u64 LE | message
/// ```
/// stored as the payload of a commit record whose `tx`, `op` are the delete's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retraction<'a> {
    pub held_from: Offset,
    /// The delete message, as a reader frames it.
    pub message: &'a [u8],
}

impl<'a> Retraction<'a> {
    const TAG: [u8; 2] = [b'R', 1];
    /// Bytes before the message.
    pub const PREFIX: usize = 18;

    /// Appends the payload of a retraction of `message` to `out`.
    pub fn encode(out: &mut Vec<u8>, held_from: Offset, message: &[u8]) {
        let (tx, op) = match held_from {
            Offset::At { tx, op } => (tx, op),
            // Every reader of the log.
            Offset::BeforeAll => (0, 0),
        };
        out.extend_from_slice(&Self::TAG);
        out.extend_from_slice(&tx.to_le_bytes());
        out.extend_from_slice(&op.to_le_bytes());
        out.extend_from_slice(message);
    }

    /// The retraction a commit record's payload holds, if it is one.
    pub fn decode(payload: &'a [u8]) -> Option<Self> {
        if payload.len() < Self::PREFIX || payload[..2] != Self::TAG {
            return None;
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&payload[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Some(Self {
            held_from: Offset::At {
                tx: u64_at(2),
                op: u64_at(10),
            },
            message: &payload[Self::PREFIX..],
        })
    }

    /// Whether a reader resuming after `after` gets it (`None`: a snapshot, which has none).
    pub fn serves(&self, after: Option<Offset>) -> bool {
        after.is_some_and(|after| self.held_from <= after)
    }
}

/// A record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub tx: u64,
    pub op: u64,
    pub payload_len: u32,
    pub crc: u32,
}

impl RecordHeader {
    pub fn total_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    /// The log offset of an entry (or a retraction) this header heads.
    pub fn offset(&self) -> Offset {
        Offset::At {
            tx: self.tx,
            op: self.op,
        }
    }
}

/// Appends a record to `out`.
pub fn encode(out: &mut Vec<u8>, kind: RecordKind, tx: u64, op: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let covered = covered_header(kind, tx, op);
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&covered);
    out.extend_from_slice(&crc(&covered, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The header fields the CRC covers, as they are laid out: kind, tx, op.
fn covered_header(kind: RecordKind, tx: u64, op: u64) -> [u8; 17] {
    let mut covered = [0u8; 17];
    covered[0] = kind as u8;
    covered[1..9].copy_from_slice(&tx.to_le_bytes());
    covered[9..].copy_from_slice(&op.to_le_bytes());
    covered
}

/// A record's CRC: of the header fields it covers, then of the payload.
fn crc(covered: &[u8; 17], payload: &[u8]) -> u32 {
    // Made once: `Hasher::new` looks up the CPU's features each time.
    static FRESH: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut hasher = FRESH.get_or_init(crc32fast::Hasher::new).clone();
    hasher.update(covered);
    hasher.update(payload);
    hasher.finalize()
}

/// Parses a header; `None` if the bytes cannot be one (unknown kind, absurd length).
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Option<RecordHeader> {
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let u32_at = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[i..i + 4]);
        u32::from_le_bytes(b)
    };
    let payload_len = u32_at(0);
    if payload_len > MAX_PAYLOAD {
        return None;
    }
    Some(RecordHeader {
        kind: RecordKind::from_byte(bytes[4])?,
        tx: u64_at(5),
        op: u64_at(13),
        crc: u32_at(21),
        payload_len,
    })
}

/// Whether `payload` belongs to `header`.
pub fn verify(header: &RecordHeader, payload: &[u8]) -> bool {
    crc(&covered_header(header.kind, header.tx, header.op), payload) == header.crc
}

/// Reads records one by one, checking each; stops at the end of the input or at the first
/// record that is torn or corrupt ([`RecordScanner::valid_len`] then says where the good part
/// ends).
pub struct RecordScanner<R> {
    input: R,
    valid_len: u64,
    payload: Vec<u8>,
    passed: Option<Offset>,
}

impl<R: Read> RecordScanner<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            valid_len: 0,
            payload: Vec::new(),
            passed: None,
        }
    }

    /// Bytes of whole, valid records read so far.
    pub fn valid_len(&self) -> u64 {
        self.valid_len
    }

    /// The next valid record (header and payload), or `None` at the end or at damage.
    pub fn next_record(&mut self) -> io::Result<Option<(RecordHeader, &[u8])>> {
        let mut header = [0u8; HEADER_LEN];
        if !read_full(&mut self.input, &mut header)? {
            return Ok(None);
        }
        let Some(parsed) = decode_header(&header) else {
            return Ok(None);
        };
        let len = parsed.payload_len as usize;
        let whole = if len <= SMALL_PAYLOAD {
            // Most payloads are a message of a few hundred bytes: read into a buffer of their
            // length (`read_to_end`'s growth and end probing cost more than the copy).
            self.payload.resize(len, 0);
            read_full(&mut self.input, &mut self.payload)?
        } else {
            // Read what the input holds instead of allocating the announced length first: a
            // damaged length can announce up to MAX_PAYLOAD bytes at the end of a short file.
            self.payload.clear();
            let read = (&mut self.input)
                .take(len as u64)
                .read_to_end(&mut self.payload)?;
            read == len
        };
        if !whole || !verify(&parsed, &self.payload) {
            return Ok(None);
        }
        self.valid_len += parsed.total_len();
        Ok(Some((parsed, &self.payload)))
    }

    /// The next message a reader resuming after `after` gets (other records, earlier
    /// entries and [`Retraction`]s not meant for it skipped): its offset and payload, or
    /// `None` at the end or at damage.
    pub fn next_entry_after(
        &mut self,
        after: Option<Offset>,
    ) -> io::Result<Option<(Offset, &[u8])>> {
        while let Some((header, payload)) = self.next_record()? {
            let served = match header.kind {
                RecordKind::Entry => Some(0),
                RecordKind::Commit => match Retraction::decode(payload) {
                    Some(retraction) => retraction.serves(after).then_some(Retraction::PREFIX),
                    None => continue,
                },
                RecordKind::SnapshotComplete => continue,
            };
            let offset = header.offset();
            if after.is_some_and(|a| offset <= a) {
                continue;
            }
            self.passed = Some(offset);
            if let Some(start) = served {
                return Ok(Some((offset, &self.payload[start..])));
            }
        }
        Ok(None)
    }

    /// The offset of the last entry or retraction after `after` that
    /// [`RecordScanner::next_entry_after`] went past, served or skipped: where a reader that
    /// read this far stands.
    pub fn passed(&self) -> Option<Offset> {
        self.passed
    }
}

/// Fills `buf` completely; `false` if the input ended first.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut_off() {
        let mut bytes = Vec::new();
        encode(&mut bytes, RecordKind::Entry, 10, 0, br#"{"a":1}"#);
        encode(&mut bytes, RecordKind::Commit, 10, 20, b"");
        let good = bytes.len() as u64;
        encode(&mut bytes, RecordKind::Entry, 30, 2, b"partial");
        bytes.truncate(bytes.len() - 3);

        let mut scanner = RecordScanner::new(&bytes[..]);
        let (h, p) = scanner.next_record().unwrap().unwrap();
        assert_eq!(
            (h.kind, h.tx, h.op, p),
            (RecordKind::Entry, 10, 0, &br#"{"a":1}"#[..])
        );
        let (h, _) = scanner.next_record().unwrap().unwrap();
        assert_eq!((h.kind, h.tx, h.op), (RecordKind::Commit, 10, 20));
        assert!(scanner.next_record().unwrap().is_none());
        assert_eq!(scanner.valid_len(), good);
    }

    #[test]
    fn commit_marks_round_trip_and_ordinary_commits_have_none() {
        let mark = CommitMark {
            flags: CommitMark::CHUNK_END | CommitMark::RANGE_END,
            rows: -3,
        };
        assert_eq!(CommitMark::decode(&mark.encode()), Some(mark));
        assert!(mark.has(CommitMark::RANGE_END) && !mark.has(CommitMark::RANGE_START));
        assert_eq!(CommitMark::decode(b""), None);
        let mut future = mark.encode();
        future[0] = 2;
        assert_eq!(CommitMark::decode(&future), None, "unknown version");
    }

    #[test]
    fn retractions_round_trip_and_serve_only_readers_past_their_start() {
        let held_from = Offset::At { tx: 7, op: 3 };
        let mut payload = Vec::new();
        Retraction::encode(&mut payload, held_from, br#"{"key":"k"}"#);
        let retraction = Retraction::decode(&payload).unwrap();
        assert_eq!(retraction.held_from, held_from);
        assert_eq!(retraction.message, br#"{"key":"k"}"#);
        assert!(!retraction.serves(None), "a snapshot read");
        assert!(!retraction.serves(Some(Offset::At { tx: 7, op: 2 })));
        assert!(retraction.serves(Some(held_from)));
        assert_eq!(CommitMark::decode(&payload), None, "not a mark");
        let mark = CommitMark {
            flags: CommitMark::CHUNK_END,
            rows: 0,
        };
        assert_eq!(Retraction::decode(&mark.encode()), None);
        assert_eq!(Retraction::decode(b""), None, "an ordinary commit");
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut bytes = Vec::new();
        encode(&mut bytes, RecordKind::Entry, 1, 2, b"payload");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut scanner = RecordScanner::new(&bytes[..]);
        assert!(scanner.next_record().unwrap().is_none());
        assert_eq!(scanner.valid_len(), 0);
    }

    /// A damaged length near the end of a file made the scanner allocate and zero the announced
    /// size, up to 1 GiB, before finding the file shorter, on every open of the damaged log
    /// (found writing the `shape_log` fuzz target in tests/fuzz).
    #[test]
    fn a_damaged_length_allocates_only_what_the_file_holds() {
        let mut bytes = Vec::new();
        encode(&mut bytes, RecordKind::Entry, 1, 2, b"payload");
        bytes[0..4].copy_from_slice(&MAX_PAYLOAD.to_le_bytes());
        let mut scanner = RecordScanner::new(&bytes[..]);
        assert!(scanner.next_record().unwrap().is_none());
        assert_eq!(scanner.valid_len(), 0);
        assert!(
            scanner.payload.capacity() < 1 << 20,
            "{} bytes allocated for a file of {} bytes",
            scanner.payload.capacity(),
            bytes.len()
        );
    }

    #[test]
    fn garbage_headers_are_rejected_without_allocating() {
        let mut header = [0xffu8; HEADER_LEN];
        assert!(decode_header(&header).is_none());
        header[0..4].copy_from_slice(&5u32.to_le_bytes());
        header[4] = 9;
        assert!(decode_header(&header).is_none());
    }
}
