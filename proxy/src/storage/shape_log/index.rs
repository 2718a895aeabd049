//! In-memory index of a shape's change log: chunk boundaries and a sparse offset → file
//! position map, so a request for "everything after offset X" reads only the bytes it serves.
//!
//! A chunk ends after the entry whose payload brings it to `chunk_bytes` (the bytes a client
//! receives, so every response but the last is within one message of `chunk_bytes`), also in
//! the middle of a transaction: a client applies a transaction at up-to-date, which only the
//! response reaching the end of the log carries, so a cut inside one is safe, and a
//! transaction of a million rows is not one response. Boundaries depend only on the entries'
//! sizes, in order: a log reopened after a crash puts them where they were, and every client
//! walking the log asks for the same (handle, offset) pairs, which makes responses cacheable.
//!
//! A compacted range is chunked by its merge windows instead ([`LogIndex::end_chunk`],
//! [`LogIndex::suspend_size_cuts`], told by the marks of its commit records): a response
//! inside it ends only where a window ends, the one place a client's rows equal the history's.

use shapes::lsn::Lsn;
use shapes::offset::Offset;

/// A sparse-index point every this many bytes.
const SPARSE_EVERY: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub start_pos: u64,
    pub first_offset: Option<Offset>,
    pub last_offset: Option<Offset>,
}

/// The part of the index that entries change, as of the last commit: what a transaction that
/// never committed is rolled back to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Committed {
    chunks: usize,
    last_chunk: Chunk,
    sparse: usize,
    chunk_full: bool,
    chunk_payload: u64,
    size_cuts_suspended: bool,
}

/// What a reader needs to know to serve entries after an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogIndex {
    chunk_bytes: u64,
    chunks: Vec<Chunk>,
    sparse: Vec<(Offset, u64)>,
    /// File length covered by committed transactions (what readers may see).
    visible_len: u64,
    last_offset: Option<Offset>,
    last_commit: Lsn,
    /// A new chunk starts at the next entry.
    chunk_full: bool,
    /// Payload bytes of the entries in the last chunk.
    chunk_payload: u64,
    /// Inside a compacted range: chunks end only where [`LogIndex::end_chunk`] says.
    size_cuts_suspended: bool,
    committed: Committed,
}

/// Where to read: `[start, end)` of the file, skipping entries at or before `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub start: u64,
    pub end: u64,
    pub after: Offset,
    /// The range ends at the visible end of the log (no entry after it yet).
    pub to_visible_end: bool,
    /// Offset of the last entry in the range (known before reading it, so a response's
    /// headers can go out before its body is read).
    pub last: Offset,
}

impl LogIndex {
    pub fn new(chunk_bytes: u64) -> Self {
        let first = Chunk {
            start_pos: 0,
            first_offset: None,
            last_offset: None,
        };
        Self {
            chunk_bytes: chunk_bytes.max(1),
            chunks: vec![first.clone()],
            sparse: Vec::new(),
            visible_len: 0,
            last_offset: None,
            last_commit: Lsn::ZERO,
            chunk_full: false,
            chunk_payload: 0,
            size_cuts_suspended: false,
            committed: Committed {
                chunks: 1,
                last_chunk: first,
                sparse: 0,
                chunk_full: false,
                chunk_payload: 0,
                size_cuts_suspended: false,
            },
        }
    }

    /// The last visible entry's offset.
    pub fn last_offset(&self) -> Option<Offset> {
        self.last_offset
    }

    /// Commit LSN of the last transaction in the log.
    pub fn last_commit(&self) -> Lsn {
        self.last_commit
    }

    pub fn visible_len(&self) -> u64 {
        self.visible_len
    }

    /// The chunk size this index cuts at.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Records an entry of `payload_len` bytes written at `pos` (not yet visible).
    pub fn note_entry(&mut self, offset: Offset, pos: u64, payload_len: u64) {
        if self.chunk_full {
            self.chunks.push(Chunk {
                start_pos: pos,
                first_offset: None,
                last_offset: None,
            });
            self.chunk_full = false;
            self.chunk_payload = 0;
        }
        let chunk = self.chunks.last_mut().expect("at least one chunk");
        if chunk.first_offset.is_none() {
            chunk.first_offset = Some(offset);
        }
        chunk.last_offset = Some(offset);
        self.chunk_payload += payload_len;
        if self.chunk_payload >= self.chunk_bytes && !self.size_cuts_suspended {
            self.chunk_full = true;
        }
        let last_sparse = self.sparse.last().map_or(0, |(_, p)| *p);
        if pos >= last_sparse + SPARSE_EVERY {
            self.sparse.push((offset, pos));
        }
    }

    /// Makes everything up to `end_pos` visible: a transaction committed there.
    pub fn note_commit(&mut self, commit_lsn: Lsn, end_pos: u64) {
        self.visible_len = end_pos;
        self.last_commit = commit_lsn;
        let chunk = self.chunks.last().expect("at least one chunk");
        self.last_offset = chunk.last_offset.or(self.last_offset);
        self.committed = Committed {
            chunks: self.chunks.len(),
            last_chunk: chunk.clone(),
            sparse: self.sparse.len(),
            chunk_full: self.chunk_full,
            chunk_payload: self.chunk_payload,
            size_cuts_suspended: self.size_cuts_suspended,
        };
    }

    /// Ends the last chunk after the entries noted so far (the next entry starts a new one),
    /// unless it has none.
    pub fn end_chunk(&mut self) {
        if self.chunks.last().is_some_and(|c| c.first_offset.is_some()) {
            self.chunk_full = true;
        }
    }

    /// Stops (or resumes) ending chunks by size: inside a compacted range only its marks end
    /// them.
    pub fn suspend_size_cuts(&mut self, suspended: bool) {
        self.size_cuts_suspended = suspended;
    }

    /// Forgets entries noted after the last commit (a transaction abandoned mid-way).
    pub fn rollback_to_visible(&mut self) {
        let committed = &self.committed;
        self.chunks.truncate(committed.chunks);
        if let Some(last) = self.chunks.last_mut() {
            *last = committed.last_chunk.clone();
        }
        self.sparse.truncate(committed.sparse);
        self.chunk_full = committed.chunk_full;
        self.chunk_payload = committed.chunk_payload;
        self.size_cuts_suspended = committed.size_cuts_suspended;
    }

    /// Where to read for "entries after `after`": within one chunk, never across.
    pub fn plan_read(&self, after: Offset) -> Option<ReadPlan> {
        let last = self.last_offset?;
        if after >= last {
            return None;
        }
        // The chunk holding the first entry after `after`.
        let mut c = self
            .chunks
            .iter()
            .rposition(|ch| ch.first_offset.is_some_and(|f| f <= after))
            .unwrap_or(0);
        if self.chunks[c].last_offset.is_some_and(|l| l <= after) {
            c += 1;
        }
        let chunk = self.chunks.get(c)?;
        let chunk_end = self.chunks.get(c + 1).map_or(self.visible_len, |next| {
            next.start_pos.min(self.visible_len)
        });
        let start = self
            .sparse
            .iter()
            .rev()
            .find(|(o, p)| *o <= after && *p >= chunk.start_pos && *p < chunk_end)
            .map_or(chunk.start_pos, |(_, p)| *p);
        let to_visible_end = chunk_end == self.visible_len;
        let last = if to_visible_end {
            last
        } else {
            chunk.last_offset?
        };
        Some(ReadPlan {
            start,
            end: chunk_end,
            after,
            to_visible_end,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(tx: u64, op: u64) -> Offset {
        Offset::At { tx, op }
    }

    /// Notes transactions of `entries` entries of `size` payload bytes each, as the log file
    /// lays them out (a 25-byte header per record, a commit record after each transaction).
    fn build_into(index: &mut LogIndex, mut pos: u64, txns: &[(u64, u64)], size: u64) -> u64 {
        for &(lsn, entries) in txns {
            for op in 0..entries {
                index.note_entry(off(lsn, op * 2), pos, size);
                pos += 25 + size;
            }
            pos += 25;
            index.note_commit(Lsn(lsn), pos);
        }
        pos
    }

    fn build(chunk_bytes: u64, txns: &[(u64, u64)], size: u64) -> LogIndex {
        let mut index = LogIndex::new(chunk_bytes);
        build_into(&mut index, 0, txns, size);
        index
    }

    /// Every response a client walking the log from the snapshot's end gets: (last entry,
    /// reaches the end).
    fn walk(index: &LogIndex) -> Vec<(Offset, bool)> {
        let mut after = Offset::SNAPSHOT_END;
        let mut out = Vec::new();
        while let Some(plan) = index.plan_read(after) {
            out.push((plan.last, plan.to_visible_end));
            after = plan.last;
        }
        out
    }

    #[test]
    fn an_empty_log_has_nothing_to_read() {
        let index = LogIndex::new(100);
        assert_eq!(index.plan_read(Offset::BeforeAll), None);
    }

    #[test]
    fn a_chunk_ends_where_its_payload_reaches_chunk_bytes_even_inside_a_transaction() {
        // 35 entries of 1000 bytes in one transaction, chunks of 10 000: 10, 10, 10, 5.
        let index = build(10_000, &[(10, 35)], 1000);
        assert_eq!(
            walk(&index),
            [
                (off(10, 18), false),
                (off(10, 38), false),
                (off(10, 58), false),
                (off(10, 68), true),
            ]
        );
        // From inside a chunk: to the same end.
        let mid = index.plan_read(off(10, 26)).unwrap();
        assert_eq!((mid.last, mid.to_visible_end), (off(10, 38), false));
        assert_eq!(mid.start, 10 * 1025);
        assert_eq!(mid.end, 20 * 1025);
        // The last chunk holds the commit record and ends at the visible end.
        let last = index.plan_read(off(10, 58)).unwrap();
        assert_eq!(last.end, 35 * 1025 + 25);
    }

    #[test]
    fn small_transactions_share_a_chunk_until_it_is_full() {
        // 3 × 40 bytes per transaction; chunks of 200 end after the 5th entry.
        let index = build(200, &[(10, 3), (20, 3), (30, 3), (40, 3)], 40);
        assert_eq!(index.chunk_count(), 3);
        assert_eq!(
            walk(&index),
            [(off(20, 2), false), (off(40, 0), false), (off(40, 4), true),]
        );
        assert_eq!(index.plan_read(off(40, 4)), None);
        assert_eq!(index.plan_read(off(50, 0)), None);
    }

    #[test]
    fn a_chunk_filled_by_the_last_transaction_ends_at_the_visible_end_until_more_comes() {
        let mut index = LogIndex::new(100);
        let pos = build_into(&mut index, 0, &[(10, 2)], 50);
        let plan = index.plan_read(Offset::SNAPSHOT_END).unwrap();
        assert_eq!(
            (plan.last, plan.to_visible_end, plan.end),
            (off(10, 2), true, pos)
        );
        build_into(&mut index, pos, &[(20, 1)], 50);
        let plan = index.plan_read(Offset::SNAPSHOT_END).unwrap();
        assert_eq!(
            (plan.last, plan.to_visible_end, plan.end),
            (off(10, 2), false, pos)
        );
        let next = index.plan_read(off(10, 2)).unwrap();
        assert_eq!(
            (next.start, next.last, next.to_visible_end),
            (pos, off(20, 0), true)
        );
    }

    #[test]
    fn uncommitted_entries_are_invisible_and_a_rollback_restores_the_chunk_layout() {
        let mut index = LogIndex::new(1000);
        let pos = build_into(&mut index, 0, &[(10, 8)], 100);
        // A transaction crossing two chunk boundaries, never committed.
        for op in 0..25 {
            index.note_entry(off(20, op * 2), pos + op * 125, 100);
        }
        assert_eq!(index.last_offset(), Some(off(10, 14)));
        assert_eq!(index.plan_read(off(10, 14)), None);
        index.rollback_to_visible();
        // What Postgres sends again lands exactly where it would have without the crash.
        build_into(&mut index, pos, &[(30, 25)], 100);
        let fresh = build(1000, &[(10, 8), (30, 25)], 100);
        assert_eq!(index.chunks, fresh.chunks);
        assert_eq!(index.sparse, fresh.sparse);
        assert_eq!(walk(&index), walk(&fresh));
        assert_eq!(index.last_commit(), Lsn(30));
    }

    #[test]
    fn inside_a_compacted_range_chunks_end_only_where_told() {
        let mut index = LogIndex::new(100);
        index.suspend_size_cuts(true);
        // A window of 5 entries of 50 bytes (250 > 100): one chunk.
        let pos = build_into(&mut index, 0, &[(10, 5)], 50);
        index.end_chunk();
        let pos = build_into(&mut index, pos, &[(20, 1)], 50);
        index.end_chunk();
        index.suspend_size_cuts(false);
        // After the range: by size again.
        build_into(&mut index, pos, &[(30, 4)], 50);
        assert_eq!(
            walk(&index),
            [
                (off(10, 8), false),
                (off(20, 0), false),
                (off(30, 2), false),
                (off(30, 6), true),
            ]
        );
    }

    #[test]
    fn sparse_points_let_reads_start_near_the_offset() {
        let index = build(1 << 40, &[(10, 5000)], 100);
        let plan = index.plan_read(off(10, 8000)).unwrap();
        assert!(plan.start > 0 && plan.start <= 4000 * 125, "{plan:?}");
        assert_eq!(plan.end, 5000 * 125 + 25);
    }
}
