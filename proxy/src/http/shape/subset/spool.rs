//! Where a subset snapshot's body waits between Postgres and the socket.
//!
//! The rows are read from Postgres as fast as it sends them, so the snapshot transaction and
//! its `--max-concurrent-snapshots` slot are held only as long as the query runs, however
//! slowly the client reads. Small bodies stay in memory; past [`IN_MEMORY`] bytes they go to
//! an unnamed temporary file under the storage directory (gone when the response is, or when
//! the process dies) and are streamed from there in pieces, so memory stays flat whatever the
//! number of rows; each piece is one short blocking read, so a slow client holds no thread.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use axum::body::Body;
use bytes::Bytes;

use crate::storage::shape_log::blocking_pieces;

/// Bodies up to this size are kept in memory.
const IN_MEMORY: usize = 1024 * 1024;
/// Bytes per piece read back from the file.
const PIECE: usize = 256 * 1024;

pub(super) struct Spool {
    dir: PathBuf,
    memory: Vec<u8>,
    file: Option<BufWriter<File>>,
}

impl Spool {
    /// A spool that spills into `dir` (created if missing).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            memory: Vec::new(),
            file: None,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(file) = &mut self.file {
            return file.write_all(bytes);
        }
        self.memory.extend_from_slice(bytes);
        if self.memory.len() > IN_MEMORY {
            std::fs::create_dir_all(&self.dir)?;
            let mut file = BufWriter::with_capacity(PIECE, tempfile::tempfile_in(&self.dir)?);
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        Ok(())
    }

    /// Whether the body went to a file.
    #[cfg(test)]
    fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// The whole body, for the response.
    pub fn into_body(self) -> io::Result<Body> {
        let Some(file) = self.file else {
            return Ok(Body::from(self.memory));
        };
        let mut file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.seek(SeekFrom::Start(0))?;
        let mut rx = blocking_pieces(move || read_piece(&mut file));
        // (A closed channel keeps answering `None`: safe to poll after the end.)
        let pieces = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Body::from_stream(pieces))
    }
}

/// The next piece of the file; `None` at its end.
fn read_piece(file: &mut File) -> io::Result<Option<Bytes>> {
    let mut piece = vec![0; PIECE];
    loop {
        match file.read(&mut piece) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                piece.truncate(n);
                return Ok(Some(Bytes::from(piece)));
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(body: Body) -> Vec<u8> {
        axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn a_small_body_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(dir.path());
        spool.write(b"[1,").unwrap();
        spool.write(b"2]").unwrap();
        assert!(!spool.spilled());
        assert_eq!(collect(spool.into_body().unwrap()).await, b"[1,2]");
    }

    #[tokio::test]
    async fn a_large_body_spills_to_an_unnamed_file_and_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(&dir.path().join("tmp"));
        let mut expected = Vec::new();
        for i in 0..200_000u32 {
            let line = format!("{i},");
            spool.write(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        assert!(spool.spilled());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "the file has no name"
        );
        assert_eq!(collect(spool.into_body().unwrap()).await, expected);
    }
}
