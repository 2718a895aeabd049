//! Reading a range of a log file to a socket in pieces, so a response never holds a whole
//! chunk (megabytes) in memory: a blocking task reads and frames about [`PIECE`] bytes at a
//! time and hands them over a small channel, which the socket drains.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use shapes::offset::Offset;
use tokio::sync::mpsc;

use super::Framing;
use super::record::RecordScanner;

/// Bytes per piece.
const PIECE: usize = 256 * 1024;
/// Pieces buffered ahead of the socket.
const AHEAD: usize = 4;

/// Streams the framed payloads of the entries in `[start, end)` of `path` (those after
/// `after`, when given).
pub fn stream_range(
    path: PathBuf,
    start: u64,
    end: u64,
    after: Option<Offset>,
    framing: Framing,
) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || {
        if let Err(err) = pump(&path, start, end, after, framing, &tx) {
            let _ = tx.blocking_send(Err(err));
        }
    });
    rx
}

fn pump(
    path: &PathBuf,
    start: u64,
    end: u64,
    after: Option<Offset>,
    mut framing: Framing,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let len = end.saturating_sub(start);
    let mut scanner = RecordScanner::new(BufReader::with_capacity(PIECE, file.take(len)));
    let mut piece = Vec::with_capacity(PIECE + 4096);
    while let Some((_, payload)) = scanner.next_entry_after(after)? {
        framing.push(&mut piece, payload);
        if piece.len() >= PIECE {
            let full = std::mem::replace(&mut piece, Vec::with_capacity(PIECE + 4096));
            if tx.blocking_send(Ok(Bytes::from(full))).is_err() {
                // The client went away.
                return Ok(());
            }
        }
    }
    if scanner.valid_len() < len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "shape log damaged inside its visible part",
        ));
    }
    if !piece.is_empty() {
        let _ = tx.blocking_send(Ok(Bytes::from(piece)));
    }
    Ok(())
}
