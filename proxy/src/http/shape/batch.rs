//! What one response carries for "everything after offset X" of a shape.
//!
//! - `-1` → snapshot chunk 0 (offset `0_0`); `0_k` → chunk `k+1` while there is one. Snapshot
//!   responses never end with up-to-date.
//! - after the snapshot → the log entries after X, up to the end of X's chunk, and an
//!   up-to-date when they reach the end of the log.

use std::sync::Arc;

use shapes::lsn::Lsn;
use shapes::offset::Offset;
use shapes::wire;

use super::framing::Framing;
use crate::storage::shape_store::Shape;

/// Reads larger than this run on the blocking pool.
const BLOCKING_READ: u64 = 256 * 1024;

/// A large read, streamed from the file while the socket drains.
pub type Pieces = tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>;

/// Messages for one response.
#[derive(Debug)]
pub struct Batch {
    /// Large reads: the messages as pieces (framed, without brackets); `body` then holds
    /// only what follows them (`,{up-to-date}`).
    pub pieces: Option<Pieces>,
    /// The messages, framed as asked (without the array brackets).
    pub body: Vec<u8>,
    /// `electric-offset`: the last offset covered.
    pub offset: Offset,
    /// The batch reaches the end of the shape log.
    pub up_to_date: bool,
}

/// The snapshot chunk to serve after `after`, if the client is still in the snapshot.
fn snapshot_chunk_after(shape: &Shape, after: Offset) -> Option<usize> {
    let chunks = shape.log.snapshot()?.count();
    match after {
        Offset::BeforeAll => Some(0),
        Offset::At { tx: 0, op } if op != Offset::INF => {
            let next = usize::try_from(op).ok()?.checked_add(1)?;
            (next < chunks).then_some(next)
        }
        Offset::At { .. } => None,
    }
}

/// The messages after `after`, or `None` when there are none yet (the caller answers
/// up-to-date, or waits). `last_seen` must be read before calling: every transaction at or
/// below it is already visible, so an up-to-date carrying it tells no lie.
///
/// With `stream_large` (JSON responses), reads of more than [`BLOCKING_READ`] bytes come back
/// as [`Pieces`] instead of one buffer.
pub async fn read_after(
    shape: &Arc<Shape>,
    after: Offset,
    framing: Framing,
    last_seen: Lsn,
    stream_large: bool,
) -> std::io::Result<Option<Batch>> {
    if let Some(chunk) = snapshot_chunk_after(shape, after) {
        let large = shape
            .log
            .snapshot()
            .and_then(|s| s.range(chunk))
            .is_some_and(|(start, end)| end - start > BLOCKING_READ);
        if stream_large && large {
            return Ok(Some(Batch {
                pieces: shape.log.stream_snapshot_chunk(chunk, framing.into_fn()),
                body: Vec::new(),
                offset: Offset::snapshot_chunk(chunk as u64),
                up_to_date: false,
            }));
        }
        let mut body = Vec::new();
        shape
            .log
            .read_snapshot_chunk(chunk, &mut body, framing.into_fn())?;
        return Ok(Some(Batch {
            pieces: None,
            body,
            offset: Offset::snapshot_chunk(chunk as u64),
            up_to_date: false,
        }));
    }
    let log_after = after.max(Offset::SNAPSHOT_END);
    let Some(plan) = shape.log.plan_read(log_after)? else {
        return Ok(None);
    };
    if stream_large && plan.end - plan.start > BLOCKING_READ {
        let mut body = Vec::new();
        if plan.to_visible_end {
            let global = last_seen.max(plan.last.lsn().unwrap_or(Lsn::ZERO));
            // After the pieces: never the first element.
            let framing = match framing {
                Framing::JsonArray { .. } => Framing::JsonArray { first: false },
                sse => sse,
            };
            push_message(&mut body, framing, wire::up_to_date(global).as_bytes());
        }
        return Ok(Some(Batch {
            pieces: Some(shape.log.stream(&plan, framing.into_fn())),
            body,
            offset: plan.last,
            up_to_date: plan.to_visible_end,
        }));
    }
    let large_read = plan.end - plan.start > BLOCKING_READ;
    let read = {
        let shape = shape.clone();
        move || {
            let mut body = Vec::new();
            shape
                .log
                .read(&plan, &mut body, framing.into_fn())
                .map(|o| (o, body))
        }
    };
    let (outcome, mut body) = if large_read {
        tokio::task::spawn_blocking(read)
            .await
            .map_err(std::io::Error::other)??
    } else {
        read()?
    };
    let Some(offset) = outcome.last_offset else {
        return Ok(None);
    };
    if outcome.at_end {
        let global = last_seen.max(offset.lsn().unwrap_or(Lsn::ZERO));
        push_message(&mut body, framing, wire::up_to_date(global).as_bytes());
    }
    Ok(Some(Batch {
        pieces: None,
        body,
        offset,
        up_to_date: outcome.at_end,
    }))
}

/// Appends one more message in the batch's framing.
pub fn push_message(body: &mut Vec<u8>, framing: Framing, message: &[u8]) {
    framing.after(body).push(body, message);
}

/// The offset a client at the end of the shape has: the last log entry's, or the end of the
/// snapshot.
pub fn latest_offset(shape: &Shape) -> Offset {
    shape.log.last_offset().unwrap_or_else(|| {
        let chunks = shape.log.snapshot().map_or(1, |s| s.count()) as u64;
        Offset::snapshot_chunk(chunks.saturating_sub(1))
    })
}
