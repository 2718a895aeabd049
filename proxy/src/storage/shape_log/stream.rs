//! Reading a range of a log file to a socket in pieces, so a response never holds a whole
//! chunk (megabytes) in memory: about [`PIECE`] bytes are read at a time, each message laid
//! out by the reader's framing function straight into the piece, and handed over a small
//! channel, which the socket drains.
//!
//! Each piece is one short call on the blocking pool ([`blocking_pieces`]); between pieces the
//! reader waits for the socket as an async task, holding no thread. A client that stops
//! reading therefore costs a little memory, never a blocking-pool thread: a thousand slow
//! clients cannot crowd out the group fsync, which needs one.

use std::fs::File;
use std::io::{self, BufReader, Read, Take};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use shapes::offset::Offset;
use tokio::sync::mpsc;

use super::positional::FileReader;
use super::record::RecordScanner;

/// The file a range is read from: opened by the first piece, or the descriptor of the log
/// generation the read was planned on.
#[derive(Debug)]
pub enum Source {
    Path(PathBuf),
    Open(Arc<File>),
}

/// Bytes per piece.
const PIECE: usize = 256 * 1024;
/// The read buffer under the record scanner (pieces are framed from it).
const READ_BUFFER: usize = 64 * 1024;
/// Pieces buffered ahead of the socket: one, read while the socket sends the previous one.
const AHEAD: usize = 1;

/// Streams the payloads of the entries in `[start, end)` of `source` (those after `after`,
/// when given), each laid out by `frame(piece, payload)`.
pub fn stream_range<F>(
    source: Source,
    start: u64,
    end: u64,
    after: Option<Offset>,
    frame: F,
) -> mpsc::Receiver<io::Result<Bytes>>
where
    F: FnMut(&mut Vec<u8>, &[u8]) + Send + 'static,
{
    let mut range = RangeReader {
        source,
        start,
        scanner: None,
        len: end.saturating_sub(start),
        after,
        frame,
        done: false,
    };
    blocking_pieces(move || range.next_piece())
}

/// The pieces `next_piece` returns (`Ok(None)` ends them), each produced by one call on the
/// blocking pool; the calls run one after the other, each once the socket has taken all but
/// [`AHEAD`] of the pieces before it. Stops calling when the receiver is dropped (the client
/// went away) and after an error (sent on as the last item).
pub fn blocking_pieces<F>(next_piece: F) -> mpsc::Receiver<io::Result<Bytes>>
where
    F: FnMut() -> io::Result<Option<Bytes>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(AHEAD);
    tokio::spawn(async move {
        // Handed to each blocking call and back; lost only if the call panicked.
        let mut source = Some(next_piece);
        loop {
            // Wait for room first: a client that stopped reading holds no thread.
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            let Some(mut next_piece) = source.take() else {
                return;
            };
            let read = tokio::task::spawn_blocking(move || {
                let piece = next_piece();
                (next_piece, piece)
            })
            .await;
            let piece = match read {
                Ok((next_piece, piece)) => {
                    source = Some(next_piece);
                    piece
                }
                Err(join) => Err(io::Error::other(join)),
            };
            match piece {
                Ok(Some(piece)) => permit.send(Ok(piece)),
                Ok(None) => return,
                Err(err) => {
                    permit.send(Err(err));
                    return;
                }
            }
        }
    });
    rx
}

/// A range of a log file being read piece by piece.
struct RangeReader<F> {
    source: Source,
    start: u64,
    /// Opened by the first piece, on the blocking pool.
    scanner: Option<RecordScanner<BufReader<Take<FileReader>>>>,
    len: u64,
    after: Option<Offset>,
    frame: F,
    done: bool,
}

/// The records of `len` bytes of `source` from `start` on.
fn open_range(
    source: &Source,
    start: u64,
    len: u64,
) -> io::Result<RecordScanner<BufReader<Take<FileReader>>>> {
    let file = match source {
        Source::Path(path) => Arc::new(File::open(path)?),
        Source::Open(file) => file.clone(),
    };
    Ok(RecordScanner::new(BufReader::with_capacity(
        READ_BUFFER,
        FileReader::new(file, start).take(len),
    )))
}

impl<F: FnMut(&mut Vec<u8>, &[u8])> RangeReader<F> {
    /// The next [`PIECE`] bytes or so of framed payloads; `None` after the last.
    fn next_piece(&mut self) -> io::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        if self.scanner.is_none() {
            self.scanner = Some(open_range(&self.source, self.start, self.len)?);
        }
        let Some(scanner) = self.scanner.as_mut() else {
            return Ok(None);
        };
        let mut piece = Vec::with_capacity(PIECE + 4096);
        while piece.len() < PIECE {
            let Some((_, payload)) = scanner.next_entry_after(self.after)? else {
                self.done = true;
                if scanner.valid_len() < self.len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "shape log damaged inside its visible part",
                    ));
                }
                break;
            };
            (self.frame)(&mut piece, payload);
        }
        Ok((!piece.is_empty()).then(|| Bytes::from(piece)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(mut rx: mpsc::Receiver<io::Result<Bytes>>) -> Vec<io::Result<Bytes>> {
        let mut all = Vec::new();
        while let Some(piece) = rx.recv().await {
            all.push(piece);
        }
        all
    }

    #[tokio::test]
    async fn pieces_come_in_order_and_end() {
        let mut n = 0;
        let rx = blocking_pieces(move || {
            n += 1;
            Ok((n <= 3).then(|| Bytes::from(vec![n as u8])))
        });
        let pieces: Vec<Bytes> = collect(rx).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(pieces, [vec![1u8], vec![2], vec![3]]);
    }

    #[tokio::test]
    async fn an_error_is_the_last_piece() {
        let mut n = 0;
        let rx = blocking_pieces(move || {
            n += 1;
            match n {
                1 => Ok(Some(Bytes::from_static(b"a"))),
                2 => Err(io::Error::other("disk")),
                _ => panic!("called after an error"),
            }
        });
        let all = collect(rx).await;
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].as_ref().unwrap_err().to_string(), "disk");
    }

    /// A reader nobody drains stops after filling the channel, and holds no blocking thread
    /// meanwhile: with a pool of one thread, another blocking task still runs.
    #[test]
    fn an_undrained_reader_holds_no_blocking_thread() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counted = calls.clone();
            let _undrained = blocking_pieces(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(Some(Bytes::from_static(b"piece")))
            });
            let other = tokio::task::spawn_blocking(|| "ran");
            let ran = tokio::time::timeout(std::time::Duration::from_secs(30), other).await;
            assert_eq!(ran.expect("the blocking pool is free").unwrap(), "ran");
            // It reads a piece only when there is room for it.
            assert!(calls.load(std::sync::atomic::Ordering::SeqCst) <= AHEAD);
        });
    }
}
