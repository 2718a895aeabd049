//! In-memory index of a shape's change log: chunk boundaries and a sparse offset → file
//! position map, so a request for "everything after offset X" reads only the bytes it serves.
//!
//! Chunks end only at transaction boundaries: after a commit, if the current chunk holds at
//! least `chunk_bytes`, the next entry starts a new chunk. Every client walking the log thus
//! asks for the same (handle, offset) pairs, which makes responses cacheable.

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

/// What a reader needs to know to serve entries after an offset.
#[derive(Debug, Clone)]
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
        Self {
            chunk_bytes: chunk_bytes.max(1),
            chunks: vec![Chunk {
                start_pos: 0,
                first_offset: None,
                last_offset: None,
            }],
            sparse: Vec::new(),
            visible_len: 0,
            last_offset: None,
            last_commit: Lsn::ZERO,
            chunk_full: false,
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

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Records an entry written at `pos` (not yet visible).
    pub fn note_entry(&mut self, offset: Offset, pos: u64) {
        if self.chunk_full {
            self.chunks.push(Chunk {
                start_pos: pos,
                first_offset: None,
                last_offset: None,
            });
            self.chunk_full = false;
        }
        let chunk = self.chunks.last_mut().expect("at least one chunk");
        if chunk.first_offset.is_none() {
            chunk.first_offset = Some(offset);
        }
        chunk.last_offset = Some(offset);
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
        if end_pos - chunk.start_pos >= self.chunk_bytes && chunk.first_offset.is_some() {
            self.chunk_full = true;
        }
    }

    /// Forgets entries noted after the last commit (a transaction abandoned mid-way).
    pub fn rollback_to_visible(&mut self) {
        let visible = self.visible_len;
        self.sparse.retain(|(_, pos)| *pos < visible);
        while self.chunks.len() > 1 && self.chunks.last().is_some_and(|c| c.start_pos >= visible) {
            self.chunks.pop();
        }
        let last_visible = self.last_offset;
        if let Some(chunk) = self.chunks.last_mut() {
            if chunk.first_offset.is_some_and(|f| Some(f) > last_visible) {
                chunk.first_offset = None;
            }
            if chunk.first_offset.is_none() {
                chunk.last_offset = None;
            } else {
                chunk.last_offset = last_visible;
            }
        }
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

    /// Writes transactions of `entries` entries of `size` bytes each (+ a 10-byte commit).
    fn build(chunk_bytes: u64, txns: &[(u64, u64)], size: u64) -> LogIndex {
        let mut index = LogIndex::new(chunk_bytes);
        let mut pos = 0;
        for &(lsn, entries) in txns {
            for op in 0..entries {
                index.note_entry(off(lsn, op * 2), pos);
                pos += size;
            }
            pos += 10;
            index.note_commit(Lsn(lsn), pos);
        }
        index
    }

    #[test]
    fn an_empty_log_has_nothing_to_read() {
        let index = LogIndex::new(100);
        assert_eq!(index.plan_read(Offset::BeforeAll), None);
    }

    #[test]
    fn reads_stop_at_chunk_boundaries_which_fall_between_transactions() {
        // Each txn: 3 × 40 + 10 = 130 bytes; chunk_bytes 200 → two txns per chunk.
        let index = build(200, &[(10, 3), (20, 3), (30, 3), (40, 3)], 40);
        assert_eq!(index.chunk_count(), 2);
        let first = index.plan_read(Offset::SNAPSHOT_END).unwrap();
        assert_eq!(
            (first.start, first.end, first.to_visible_end),
            (0, 260, false)
        );
        let mid = index.plan_read(off(10, 2)).unwrap();
        assert_eq!((mid.start, mid.end), (0, 260));
        let second = index.plan_read(off(20, 4)).unwrap();
        assert_eq!(
            (second.start, second.end, second.to_visible_end),
            (260, 520, true)
        );
        assert_eq!(index.plan_read(off(40, 4)), None);
        assert_eq!(index.plan_read(off(50, 0)), None);
    }

    #[test]
    fn uncommitted_entries_are_invisible_and_can_be_rolled_back() {
        let mut index = build(1000, &[(10, 2)], 40);
        index.note_entry(off(20, 0), 90);
        assert_eq!(index.last_offset(), Some(off(10, 2)));
        assert_eq!(index.plan_read(off(10, 2)), None);
        index.rollback_to_visible();
        index.note_entry(off(30, 0), 90);
        index.note_commit(Lsn(30), 140);
        let plan = index.plan_read(off(10, 2)).unwrap();
        assert_eq!((plan.start, plan.end), (0, 140));
        assert_eq!(index.last_commit(), Lsn(30));
    }

    #[test]
    fn sparse_points_let_reads_start_near_the_offset() {
        let index = build(1 << 40, &[(10, 5000)], 100);
        let plan = index.plan_read(off(10, 8000)).unwrap();
        assert!(plan.start > 0 && plan.start <= 4000 * 100, "{plan:?}");
        assert_eq!(plan.end, 500_010);
    }
}
