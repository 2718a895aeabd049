//! Live updates over Server-Sent Events: one `data:` event per message, each batch ending
//! with up-to-date. Events carry no offset header, so the position is the newest change's
//! `<lsn>_<op>` or `<global_last_seen_lsn>_0`, whichever is later (proxy/PROTOCOL.md,
//! "Offsets": re-sent suffixes are harmless because changes apply as upserts, and a move event
//! applied twice in a row does what it did once).

use futures_util::StreamExt as _;
use reqwest::Response;
use shapes::handle::Handle;
use shapes::offset::Offset;

use super::message::{self, Message};
use super::request;
use super::sse_events::EventSplitter;
use super::{ShapeSync, SyncError};
use crate::error::ClientError;
use crate::store::Incoming;

impl ShapeSync {
    pub(super) async fn read_sse(
        &mut self,
        response: Response,
        handle: Handle,
    ) -> Result<(), SyncError> {
        let is_sse = request::header(response.headers(), "content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !is_sse {
            return Err(SyncError::SseUnsupported);
        }
        let schema = self
            .schema
            .clone()
            .ok_or_else(|| ClientError::Protocol("no electric-schema yet".into()))?;
        let mut position: Option<Offset> = self.offset.parse().ok();
        let mut body = response.bytes_stream();
        let mut events = EventSplitter::with_limit(self.ctx.options.max_message_bytes);
        let idle = self.ctx.options.idle_timeout;
        loop {
            let Some(data) = events.next_event() else {
                let read = tokio::time::timeout(idle, body.next())
                    .await
                    .map_err(|_| ClientError::Network("the event stream went silent".into()))?;
                match read {
                    Some(bytes) => {
                        events.feed(&bytes.map_err(|e| ClientError::Network(e.to_string()))?)?;
                        continue;
                    }
                    None => break,
                }
            };
            if data.is_empty() {
                continue;
            }
            let decoded = message::decode(&data, &schema)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            match decoded {
                Message::Change(change, offset) => {
                    position = position.max(offset);
                    self.pending.push(Incoming::Change(change));
                    if self.pending.len() >= self.ctx.options.chunk_rows {
                        self.flush().await?;
                    }
                }
                Message::Move(event, offset) => {
                    position = position.max(offset);
                    self.pending.push(Incoming::Move(event));
                }
                Message::UpToDate {
                    global_last_seen_lsn,
                } => {
                    let seen = global_last_seen_lsn.map(|lsn| Offset::At {
                        tx: lsn.as_u64(),
                        op: 0,
                    });
                    position = position.max(seen);
                    let offset = position.map(|o| o.to_string()).unwrap_or_default();
                    self.commit(handle.clone(), offset, global_last_seen_lsn)
                        .await?;
                }
                Message::MustRefetch => return Err(SyncError::MustRefetch),
                Message::Other => {}
            }
        }
        // The server closed the stream (its SSE timeout), maybe inside a batch: a big
        // transaction comes in many chunks and may take longer than one stream lasts. Keep what
        // came, still uncommitted, and continue from the last change received; rolling back
        // would start every stream from the same place again and never get through it.
        if let Some(position) = position
            && (self.batch_open || !self.pending.is_empty())
        {
            self.flush().await?;
            self.handle = Some(handle);
            self.offset = position.to_string();
        }
        Ok(())
    }
}
