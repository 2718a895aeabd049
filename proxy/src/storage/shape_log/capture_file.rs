//! `capture.log`: the transactions routed to a shape while its snapshot is being taken, in
//! commit order, each closed by a commit record that carries its xid (the records of
//! [`super::record`]). Which of them move to the shape's log once the snapshot is done is
//! the router's decision (`read_path/router/capture.rs`); this file only keeps them.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;

use shapes::lsn::{Lsn, Xid32};
use shapes::offset::Offset;

use super::record::{self, RecordKind, RecordScanner};
use crate::storage::shape_dir::ShapeDir;

/// The capture file of one shape, open for appending. The file is made at the first entry
/// captured: most snapshots capture nothing, and a burst of new shapes then makes and deletes
/// no file for it.
#[derive(Debug)]
pub struct CaptureFile {
    path: PathBuf,
    /// Opened (created, replacing an earlier one) at the first write.
    file: Option<BufWriter<File>>,
    /// Length of the file up to the last complete transaction.
    committed_len: u64,
    written: u64,
    record: Vec<u8>,
}

/// One captured transaction, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapturedTxn<'a> {
    /// The low 32 bits of its xid, as pgoutput sends it.
    pub xid: Xid32,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    /// Its entries in order: log offset and message.
    pub entries: &'a [(Offset, Vec<u8>)],
}

impl CaptureFile {
    /// A new, empty capture file in `dir` (an earlier one is replaced at the first write).
    pub fn create(dir: &ShapeDir) -> io::Result<Self> {
        Ok(Self {
            path: dir.capture_log(),
            file: None,
            committed_len: 0,
            written: 0,
            record: Vec::new(),
        })
    }

    pub fn append(&mut self, offset: Offset, message: &[u8]) -> io::Result<()> {
        let Offset::At { tx, op } = offset else {
            return Err(io::Error::other("captured entries need a log offset"));
        };
        self.write(RecordKind::Entry, tx, op, message)
    }

    /// Closes a captured transaction; the commit record carries its xid.
    pub fn commit(&mut self, xid: Xid32, commit_lsn: Lsn, end_lsn: Lsn) -> io::Result<()> {
        self.write(
            RecordKind::Commit,
            commit_lsn.as_u64(),
            end_lsn.as_u64(),
            &xid.0.to_le_bytes(),
        )?;
        self.open()?.flush()?;
        self.committed_len = self.written;
        Ok(())
    }

    /// Drops the open transaction's entries.
    pub fn abandon(&mut self) -> io::Result<()> {
        let committed_len = self.committed_len;
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.flush()?;
        file.get_ref().set_len(committed_len)?;
        // The next record goes where the cut was: written at the old end, it would leave a
        // hole of zeros that ends every read of the file there.
        file.seek(SeekFrom::Start(committed_len))?;
        self.written = self.committed_len;
        Ok(())
    }

    fn write(&mut self, kind: RecordKind, tx: u64, op: u64, payload: &[u8]) -> io::Result<()> {
        self.record.clear();
        record::encode(&mut self.record, kind, tx, op, payload);
        let record = std::mem::take(&mut self.record);
        let written = self.open()?.write_all(&record);
        self.record = record;
        written?;
        self.written += self.record.len() as u64;
        Ok(())
    }

    /// The file, made at the first call.
    fn open(&mut self) -> io::Result<&mut BufWriter<File>> {
        if self.file.is_none() {
            let file = File::create(&self.path)?;
            self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    /// Hands every committed transaction, in order, to `each`, then deletes the file.
    pub fn drain(
        mut self,
        mut each: impl FnMut(CapturedTxn<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(written) = self.file.as_mut() else {
            // Nothing was captured.
            return Ok(());
        };
        written.flush()?;
        let file = File::open(&self.path)?;
        let mut scanner = RecordScanner::new(BufReader::with_capacity(256 * 1024, file));
        let mut entries: Vec<(Offset, Vec<u8>)> = Vec::new();
        let mut read = 0;
        while let Some((header, payload)) = scanner.next_record()? {
            read += header.total_len();
            if read > self.committed_len {
                break;
            }
            match header.kind {
                RecordKind::Entry => entries.push((
                    Offset::At {
                        tx: header.tx,
                        op: header.op,
                    },
                    payload.to_vec(),
                )),
                RecordKind::Commit => {
                    let xid = payload
                        .try_into()
                        .map(|bytes| Xid32(u32::from_le_bytes(bytes)))
                        .map_err(|_| io::Error::other("capture commit without xid"))?;
                    each(CapturedTxn {
                        xid,
                        commit_lsn: Lsn(header.tx),
                        end_lsn: Lsn(header.op),
                        entries: &entries,
                    })?;
                    entries.clear();
                }
                RecordKind::SnapshotComplete => {}
            }
        }
        drop(self.file);
        std::fs::remove_file(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_captured_makes_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ShapeDir::at(tmp.path());
        let mut capture = CaptureFile::create(&dir).unwrap();
        capture.abandon().unwrap();
        assert!(!dir.capture_log().exists());
        assert!(read_back(capture).is_empty());
        assert!(!dir.capture_log().exists());
    }

    #[test]
    fn committed_transactions_come_back_in_order_and_the_file_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ShapeDir::at(tmp.path());
        let mut capture = CaptureFile::create(&dir).unwrap();
        capture.append(Offset::log(Lsn(10), 0), b"a").unwrap();
        capture.append(Offset::log(Lsn(10), 2), b"b").unwrap();
        capture.commit(Xid32(7), Lsn(10), Lsn(11)).unwrap();
        capture.append(Offset::log(Lsn(30), 0), b"c").unwrap();
        capture.commit(Xid32(u32::MAX), Lsn(30), Lsn(31)).unwrap();
        capture.append(Offset::log(Lsn(40), 0), b"open").unwrap();
        assert!(dir.capture_log().exists());

        assert_eq!(
            read_back(capture),
            [
                (
                    7,
                    Lsn(10),
                    Lsn(11),
                    vec![
                        (Offset::log(Lsn(10), 0), "a".to_owned()),
                        (Offset::log(Lsn(10), 2), "b".to_owned())
                    ]
                ),
                (
                    u32::MAX,
                    Lsn(30),
                    Lsn(31),
                    vec![(Offset::log(Lsn(30), 0), "c".to_owned())]
                ),
            ]
        );
        assert!(!dir.capture_log().exists());
    }

    /// The stream broke mid-transaction while the snapshot ran (`Router::abort`):
    /// what is captured after it must not be lost behind the dropped entries.
    #[test]
    fn transactions_captured_after_an_abandoned_one_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let mut capture = CaptureFile::create(&ShapeDir::at(tmp.path())).unwrap();
        capture.append(Offset::log(Lsn(10), 0), b"a").unwrap();
        capture.commit(Xid32(7), Lsn(10), Lsn(11)).unwrap();
        capture
            .append(Offset::log(Lsn(20), 0), b"abandoned")
            .unwrap();
        capture.abandon().unwrap();
        capture.append(Offset::log(Lsn(20), 0), b"again").unwrap();
        capture.commit(Xid32(8), Lsn(20), Lsn(21)).unwrap();
        assert_eq!(
            read_back(capture),
            [
                (
                    7,
                    Lsn(10),
                    Lsn(11),
                    vec![(Offset::log(Lsn(10), 0), "a".into())]
                ),
                (
                    8,
                    Lsn(20),
                    Lsn(21),
                    vec![(Offset::log(Lsn(20), 0), "again".into())]
                ),
            ]
        );
    }

    type Txn = (u32, Lsn, Lsn, Vec<(Offset, String)>);

    /// Every committed transaction of `capture`, drained.
    fn read_back(capture: CaptureFile) -> Vec<Txn> {
        let mut seen = Vec::new();
        capture
            .drain(|txn| {
                let messages = txn
                    .entries
                    .iter()
                    .map(|(offset, m)| (*offset, String::from_utf8(m.clone()).unwrap()))
                    .collect();
                seen.push((txn.xid.0, txn.commit_lsn, txn.end_lsn, messages));
                Ok(())
            })
            .unwrap();
        seen
    }

    #[test]
    fn entries_need_a_log_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let mut capture = CaptureFile::create(&ShapeDir::at(tmp.path())).unwrap();
        assert!(capture.append(Offset::BeforeAll, b"x").is_err());
    }
}
