//! The initial snapshot of a shape: `snapshot.log`, rows in chunks `0_0`, `0_1`, …, the
//! `snapshot-end` control message at the end of the last chunk, and a completion record.
//!
//! Rows are streamed from Postgres straight into the file; only chunk positions stay in
//! memory.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use super::record::{self, RecordKind, RecordScanner};
use crate::storage::shape_dir::ShapeDir;

/// Chunk start positions of a complete snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunks {
    /// Start position of each chunk.
    pub starts: Vec<u64>,
    /// End of the last chunk (where the completion record begins).
    pub end: u64,
    /// Rows in the snapshot.
    pub rows: u64,
}

impl SnapshotChunks {
    /// `[start, end)` of chunk `k`.
    pub fn range(&self, k: usize) -> Option<(u64, u64)> {
        let start = *self.starts.get(k)?;
        let end = self.starts.get(k + 1).copied().unwrap_or(self.end);
        Some((start, end))
    }

    pub fn count(&self) -> usize {
        self.starts.len()
    }
}

/// Writes a snapshot file row by row.
pub struct SnapshotWriter {
    file: BufWriter<File>,
    chunk_bytes: u64,
    pos: u64,
    chunk: u64,
    starts: Vec<u64>,
    rows_in_chunk: u64,
    /// Payload bytes of the rows in the current chunk: what a client receives, so a chunk is
    /// as large as `chunk_bytes` asks whatever the size of the records' headers.
    chunk_payload: u64,
    rows: u64,
    record: Vec<u8>,
}

impl SnapshotWriter {
    pub fn create(dir: &ShapeDir, chunk_bytes: u64) -> io::Result<Self> {
        let file = File::create(dir.snapshot_log())?;
        Ok(Self {
            file: BufWriter::with_capacity(256 * 1024, file),
            chunk_bytes: chunk_bytes.max(1),
            pos: 0,
            chunk: 0,
            starts: vec![0],
            rows_in_chunk: 0,
            chunk_payload: 0,
            rows: 0,
            record: Vec::with_capacity(1024),
        })
    }

    /// Appends one row message.
    pub fn push_row(&mut self, message: &[u8]) -> io::Result<()> {
        if self.rows_in_chunk > 0 && self.chunk_payload >= self.chunk_bytes {
            self.chunk += 1;
            self.starts.push(self.pos);
            self.rows_in_chunk = 0;
            self.chunk_payload = 0;
        }
        self.write(RecordKind::Entry, message)?;
        self.rows_in_chunk += 1;
        self.rows += 1;
        self.chunk_payload += message.len() as u64;
        Ok(())
    }

    /// Appends the `snapshot-end` message and the completion record, and fsyncs.
    pub fn finish(self, snapshot_end: &[u8]) -> io::Result<SnapshotChunks> {
        let (chunks, file) = self.finish_unsynced(snapshot_end)?;
        file.sync_data()?;
        Ok(chunks)
    }

    /// [`finish`](Self::finish) without the fsync: the file is handed back for the caller to
    /// make durable (with other files) before anything says the snapshot is complete.
    pub fn finish_unsynced(mut self, snapshot_end: &[u8]) -> io::Result<(SnapshotChunks, File)> {
        self.write(RecordKind::Entry, snapshot_end)?;
        let end = self.pos;
        self.write(RecordKind::SnapshotComplete, b"")?;
        self.file.flush()?;
        let chunks = SnapshotChunks {
            starts: self.starts,
            end,
            rows: self.rows,
        };
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        Ok((chunks, file))
    }

    /// Rows written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn write(&mut self, kind: RecordKind, payload: &[u8]) -> io::Result<()> {
        self.record.clear();
        record::encode(&mut self.record, kind, 0, self.chunk, payload);
        self.file.write_all(&self.record)?;
        self.pos += self.record.len() as u64;
        Ok(())
    }
}

/// Reads the chunk layout of a snapshot file; `None` if it never completed (or is damaged).
pub fn load(dir: &ShapeDir) -> io::Result<Option<SnapshotChunks>> {
    let file = match File::open(dir.snapshot_log()) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut scanner = RecordScanner::new(io::BufReader::with_capacity(256 * 1024, file));
    let mut starts: Vec<u64> = Vec::new();
    let mut pos = 0;
    let mut entries: u64 = 0;
    while let Some((header, _)) = scanner.next_record()? {
        match header.kind {
            RecordKind::Entry => {
                if usize::try_from(header.op).ok() == Some(starts.len()) {
                    starts.push(pos);
                }
                entries += 1;
            }
            RecordKind::SnapshotComplete => {
                // Every entry is a row but the last, the `snapshot-end` message.
                let rows = entries.saturating_sub(1);
                return Ok((!starts.is_empty()).then_some(SnapshotChunks {
                    starts,
                    end: pos,
                    rows,
                }));
            }
            RecordKind::Commit => return Ok(None),
        }
        pos += header.total_len();
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fill_chunks_and_the_layout_survives_a_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ShapeDir::at(tmp.path());
        let mut writer = SnapshotWriter::create(&dir, 100).unwrap();
        for i in 0..10 {
            writer
                .push_row(format!("{{\"row\":{i:040}}}").as_bytes())
                .unwrap();
        }
        let chunks = writer.finish(b"{\"end\":1}").unwrap();
        // 48-byte rows: a chunk is full with its third (144 payload bytes ≥ 100).
        assert_eq!(chunks.count(), 4, "{chunks:?}");
        let record = 25 + 48;
        assert_eq!(chunks.starts, [0, 3 * record, 6 * record, 9 * record]);
        assert_eq!(chunks.rows, 10, "the snapshot-end message is no row");
        assert_eq!(load(&dir).unwrap(), Some(chunks));
    }

    #[test]
    fn an_unfinished_snapshot_does_not_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ShapeDir::at(tmp.path());
        let mut writer = SnapshotWriter::create(&dir, 100).unwrap();
        writer.push_row(b"{}").unwrap();
        writer.file.flush().unwrap();
        drop(writer);
        assert_eq!(load(&dir).unwrap(), None);
    }
}
