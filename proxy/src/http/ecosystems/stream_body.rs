//! Big JSON answers (a WatermelonDB first pull is tens of megabytes) written on a blocking
//! thread and sent as they are written: the async threads never spend hundreds of
//! milliseconds on one answer, and compression and the network start on the first chunk.

use std::io;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;

use super::changes::UnreadableMessage;

/// About how many bytes go out at a time.
const CHUNK: usize = 256 * 1024;

/// The client went away: there is no one to write to.
#[derive(Debug)]
pub struct Closed;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the client went away")]
    Closed,
    #[error(transparent)]
    Unreadable(#[from] UnreadableMessage),
}

impl From<Closed> for WriteError {
    fn from(_: Closed) -> Self {
        WriteError::Closed
    }
}

/// Sends what `out` holds once it is a chunk's worth.
pub type Flush<'a> = dyn FnMut(&mut Vec<u8>) -> Result<(), Closed> + 'a;

/// A JSON response whose body `write` writes into `out` on a blocking thread, calling
/// `flush(out)` as it goes. The status is already sent when `write` runs, so it must only fail
/// on a damaged log: the body then ends early and the client sees a broken answer, never a
/// wrong one.
pub fn streamed_json(
    write: impl FnOnce(&mut Vec<u8>, &mut Flush<'_>) -> Result<(), WriteError> + Send + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 4);
        let mut flush = |out: &mut Vec<u8>| {
            if out.len() < CHUNK {
                return Ok(());
            }
            let chunk = std::mem::replace(out, Vec::with_capacity(CHUNK + CHUNK / 4));
            tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| Closed)
        };
        match write(&mut out, &mut flush) {
            Ok(()) => {
                let _ = tx.blocking_send(Ok(Bytes::from(out)));
            }
            Err(WriteError::Closed) => {}
            Err(WriteError::Unreadable(e)) => {
                tracing::error!(error = %e, "a shape log is damaged: the answer ends early");
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    let mut rx = rx;
    // May be polled again after its end (unlike `unfold`).
    let chunks = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = Response::new(Body::from_stream(chunks));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
