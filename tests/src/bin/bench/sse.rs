//! A shape client as light as the bench needs: fetch a shape's snapshot, then follow it live
//! over Server-Sent Events, handing each message over with the time its bytes were read.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::http_wire::{self, Response};

/// Where a client stands in a shape after its snapshot.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub query: String,
    pub handle: String,
    pub offset: String,
}

/// What a message is, told by its first bytes (no JSON parse per message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Change,
    UpToDate,
    MustRefetch,
    Other,
}

pub fn kind(message: &[u8]) -> Kind {
    if message.starts_with(br#"{"key":"#) {
        Kind::Change
    } else if http_wire::find(message, b"\"up-to-date\"").is_some() {
        Kind::UpToDate
    } else if http_wire::find(message, b"must-refetch").is_some() {
        Kind::MustRefetch
    } else {
        Kind::Other
    }
}

/// The integer primary key of a change message to a one-column-key table:
/// `{"key":"\"public\".\"t\"/\"123\"",…` → 123.
pub fn key_id(message: &[u8]) -> Option<i64> {
    let start = http_wire::find(message, br#"/\""#)? + 3;
    let digits = message[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'-')
        .count();
    std::str::from_utf8(&message[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

/// Fetches the shape `query` (e.g. `table=t&where=…`) from offset -1 to its first
/// up-to-date, handing every body byte to `body` (JSON arrays, one per response).
pub async fn fetch(
    addr: SocketAddr,
    query: &str,
    mut body: impl FnMut(&[u8]),
) -> anyhow::Result<Subscription> {
    let mut offset = "-1".to_owned();
    let mut handle: Option<String> = None;
    loop {
        let mut path = format!("/v1/shape?{query}&offset={offset}");
        if let Some(h) = &handle {
            path.push_str(&format!("&handle={h}"));
        }
        let mut response = http_wire::get(addr, &path, false).await?;
        if response.head.status != 200 {
            let mut text = Vec::new();
            while response.read_body(|b, _| text.extend_from_slice(b)).await? {}
            bail!(
                "GET {path}: status {}: {}",
                response.head.status,
                String::from_utf8_lossy(&text)
            );
        }
        let head = response.head.clone();
        while response.read_body(|b, _| body(b)).await? {}
        handle = Some(
            head.header("electric-handle")
                .context("no electric-handle")?
                .to_owned(),
        );
        offset = head
            .header("electric-offset")
            .context("no electric-offset")?
            .to_owned();
        if head.header("electric-up-to-date").is_some() {
            return Ok(Subscription {
                query: query.to_owned(),
                handle: handle.unwrap_or_default(),
                offset,
            });
        }
    }
}

/// A live SSE response of one shape.
pub struct Live {
    response: Response,
    events: EventSplitter,
}

impl Live {
    /// Opens the live stream after `subscription`. The subscription is up to date at its
    /// offset, so the stream sends nothing until a change comes; the proxy reads the log after
    /// that offset once the stream starts, so no change written from now on is missed.
    pub async fn open(addr: SocketAddr, subscription: &Subscription) -> anyhow::Result<Self> {
        let path = format!(
            "/v1/shape?{}&handle={}&offset={}&live=true&live_sse=true",
            subscription.query, subscription.handle, subscription.offset
        );
        let response = http_wire::get(addr, &path, true).await?;
        if response.head.status != 200
            || response.head.header("content-type") != Some("text/event-stream")
        {
            bail!(
                "GET {path}: status {}, content-type {:?}",
                response.head.status,
                response.head.header("content-type")
            );
        }
        Ok(Self {
            response,
            events: EventSplitter::default(),
        })
    }

    /// Reads once from the socket; hands each complete `data:` message to `on_message` with
    /// the time the read returned. `false` once the stream has ended.
    pub async fn next(
        &mut self,
        mut on_message: impl FnMut(&[u8], Instant),
    ) -> anyhow::Result<bool> {
        let events = &mut self.events;
        self.response
            .read_body(|bytes, at| events.feed(bytes, |m| on_message(m, at)))
            .await
    }
}

/// Splits an SSE body into the payloads of its `data:` events (one line each, as the proxy
/// sends them); comments (`: keep-alive`) are dropped.
#[derive(Debug, Default)]
struct EventSplitter {
    buf: Vec<u8>,
}

impl EventSplitter {
    fn feed(&mut self, bytes: &[u8], mut on_message: impl FnMut(&[u8])) {
        // Most reads end on an event boundary: split in place without copying.
        let pending = !self.buf.is_empty();
        if pending {
            self.buf.extend_from_slice(bytes);
        }
        let data: &[u8] = if pending { &self.buf } else { bytes };
        let mut start = 0;
        while let Some(end) = find_event_end(&data[start..]) {
            let event = &data[start..start + end];
            if let Some(payload) = event.strip_prefix(b"data: ") {
                on_message(payload);
            }
            start += end + 2;
        }
        let rest = data[start..].to_vec();
        self.buf = rest;
    }
}

/// The index of the `\n\n` that ends the first event.
fn find_event_end(data: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = data[from..].iter().position(|b| *b == b'\n') {
        let at = from + i;
        if data.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// When a change with this primary key reached a client.
pub type Arrival = (i64, Instant);

/// Follows `live` on a task of its own, sending the key and arrival time of every change.
pub fn forward_arrivals(
    mut live: Live,
    arrivals: tokio::sync::mpsc::UnboundedSender<Arrival>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let open = live
                .next(|message, at| {
                    if kind(message) == Kind::Change
                        && let Some(id) = key_id(message)
                    {
                        let _ = arrivals.send((id, at));
                    }
                })
                .await;
            if !matches!(open, Ok(true)) {
                return;
            }
        }
    })
}

/// Reads `stream` until `rows` change messages have arrived; the time the last one was read.
pub fn count_changes(
    mut stream: Live,
    rows: u64,
) -> tokio::task::JoinHandle<anyhow::Result<Option<Instant>>> {
    tokio::spawn(async move {
        let (mut count, mut last) = (0u64, None);
        while count < rows {
            let open = stream
                .next(|message, at| {
                    if kind(message) == Kind::Change {
                        count += 1;
                        last = Some(at);
                    }
                })
                .await?;
            if !open {
                anyhow::bail!("the SSE stream ended after {count} rows");
            }
        }
        Ok(last)
    })
}

/// Subscribes to each query and opens its live stream, `concurrency` at a time.
pub async fn open_many(
    addr: SocketAddr,
    queries: Vec<String>,
    concurrency: usize,
) -> anyhow::Result<Vec<Live>> {
    use futures_util::StreamExt;
    futures_util::stream::iter(queries)
        .map(|query| async move {
            let subscription = fetch(addr, &query, |_| {}).await?;
            Live::open(addr, &subscription).await
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}
