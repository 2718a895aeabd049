//! Server-sent events (`live_sse=true`): one long response that carries every new batch as
//! `data:` events, each batch ending with up-to-date; a `: keep-alive` comment after 21 s
//! without news (and when it opens, behind an HTTP proxy: see [`Stream::behind_proxy`]); closed after the SSE timeout (the client reconnects from where it is), and at
//! the token's `exp` at the latest, even in the middle of a batch (see [`super::live`]).
//! A client asks for SSE once it is up to date, so a stream with nothing new after its offset
//! sends nothing but keep-alives until a change comes, as Electric does: an up-to-date of its
//! own would be one more than a client counting them expects.
//! Never compressed, and `X-Accel-Buffering: no` keeps nginx from holding events back.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt as _, stream};
use shapes::offset::Offset;
use shapes::wire;
use tokio::time::Instant;

use super::batch;
use super::framing::Framing;
use super::headers::{self, CacheKind};
use crate::auth::limits::LiveGuard;
use crate::http::AppState;
use crate::storage::shape_store::{LiveClient, Shape, ShapeState};
use crate::storage::watched::Watcher;

const KEEP_ALIVE: Duration = Duration::from_secs(21);
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// What an SSE response carries besides the shape.
pub(super) struct Stream {
    /// The request's `cursor`.
    pub cursor: Option<u64>,
    /// The shape depends on the caller's claims (`cache-control: private`).
    pub private: bool,
    /// The caller's live-connection slot, freed when the stream ends.
    pub live_connection: Option<LiveGuard>,
    /// The caller's token expires then: the stream ends.
    pub token_deadline: Option<Instant>,
    /// The request came through an HTTP proxy (it says `X-Forwarded-For`, `Forwarded` or
    /// `Via`): the stream opens with a keep-alive comment, because an edge that speaks
    /// HTTP/2 to the client (nginx) holds the response head until the first body byte, which
    /// for a stream with nothing new would come after 21 s. Direct clients get what Electric
    /// sends: nothing until news or the first keep-alive (a client parsing every event as
    /// `data:`, as Electric's own client tests do, would choke on an opening comment).
    pub behind_proxy: bool,
}

impl Stream {
    /// Whether `headers` say the request came through an HTTP proxy.
    pub fn is_behind_proxy(headers: &axum::http::HeaderMap) -> bool {
        ["x-forwarded-for", "forwarded", "via"]
            .iter()
            .any(|name| headers.contains_key(*name))
    }
}

struct Session {
    state: AppState,
    _live_connection: Option<LiveGuard>,
    shape: Arc<Shape>,
    offset: Offset,
    /// The SSE timeout, or the token's expiry if that is sooner.
    closes_at: Instant,
    /// The token's expiry: nothing is sent from then on.
    token_deadline: Option<Instant>,
    last_sent: Instant,
    news: Watcher<Option<Offset>>,
    lifecycle: Watcher<ShapeState>,
    announced_up_to_date: bool,
    finished: bool,
    /// A large batch being sent: its remaining pieces, then what follows them.
    draining: Option<(batch::Pieces, Vec<u8>)>,
    _live: crate::observability::prometheus::LiveConnection,
    /// Keeps the replication stream open while the stream is.
    _active: crate::read_path::idle::LiveRequest,
    _client: LiveClient,
}

pub(super) fn respond(
    state: AppState,
    shape: Arc<Shape>,
    after: Offset,
    stream: Stream,
) -> Response {
    let now = Instant::now();
    let Stream {
        cursor,
        private,
        live_connection,
        token_deadline,
        behind_proxy,
    } = stream;
    let timeout = now + state.settings.sse_timeout;
    let active = state.shapes.demand().live();
    let session = Session {
        _live_connection: live_connection,
        closes_at: token_deadline.map_or(timeout, |ends| ends.min(timeout)),
        token_deadline,
        last_sent: now,
        news: shape.log.subscribe(),
        lifecycle: shape.watch_state(),
        state,
        shape: shape.clone(),
        offset: after,
        // The client holds `after` and is up to date there: nothing to announce until the log
        // moves past it.
        announced_up_to_date: true,
        finished: false,
        draining: None,
        _live: crate::observability::prometheus::LiveConnection::open(),
        _active: active,
        _client: shape.live_client(),
    };
    let opened = stream::iter(behind_proxy.then_some(Ok::<Bytes, std::io::Error>(
        Bytes::from_static(KEEP_ALIVE_COMMENT),
    )));
    let events = opened.chain(stream::unfold(session, |mut session| async move {
        let chunk = session.next_chunk().await?;
        Some((Ok::<Bytes, std::io::Error>(chunk), session))
    }));
    let mut response = (StatusCode::OK, Body::from_stream(events)).into_response();
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(h, header::CONTENT_TYPE.as_str(), "text/event-stream");
    set(
        h,
        header::CACHE_CONTROL.as_str(),
        &headers::cache_control(CacheKind::Sse, private),
    );
    if private {
        headers::vary_on_credentials(h);
    }
    set(h, "x-accel-buffering", "no");
    set(h, "electric-handle", shape.handle.as_str());
    set(h, "electric-offset", &after.to_string());
    set(
        h,
        "electric-cursor",
        &headers::next_cursor(cursor, false).to_string(),
    );
    response
}

impl Session {
    /// The next piece of the stream, or `None` to close it.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self
                .token_deadline
                .is_some_and(|ends| Instant::now() >= ends)
            {
                return None;
            }
            // A large batch goes out in pieces as they are read, then what follows them.
            if let Some((pieces, rest)) = self.draining.as_mut() {
                match pieces.recv().await {
                    Some(Ok(piece)) => return Some(piece),
                    Some(Err(err)) => {
                        tracing::error!(handle = %self.shape.handle, error = %err, "reading a shape log for SSE");
                        return None;
                    }
                    None => {
                        let rest = std::mem::take(rest);
                        self.draining = None;
                        if !rest.is_empty() {
                            return Some(Bytes::from(rest));
                        }
                    }
                }
            }
            if self.finished || Instant::now() >= self.closes_at {
                return None;
            }
            self.news.mark_seen();
            let last_seen = self.state.shapes.last_seen();
            match batch::read_after(&self.shape, self.offset, Framing::Sse, last_seen, true).await {
                Ok(Some(found)) => {
                    self.offset = found.offset;
                    self.last_sent = Instant::now();
                    self.announced_up_to_date = found.up_to_date;
                    match found.pieces {
                        Some(pieces) => {
                            self.draining = Some((pieces, found.body));
                            continue;
                        }
                        None => return Some(Bytes::from(found.body)),
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(handle = %self.shape.handle, error = %err, "reading a shape log for SSE");
                    return None;
                }
            }
            if !self.announced_up_to_date {
                self.announced_up_to_date = true;
                self.last_sent = Instant::now();
                return Some(event(&wire::up_to_date(self.state.shapes.last_seen())));
            }
            if let Some(chunk) = self.wait().await {
                return Some(chunk);
            }
        }
    }

    /// Waits for news; returns a chunk to send meanwhile (keep-alive, must-refetch) if any.
    async fn wait(&mut self) -> Option<Bytes> {
        let keep_alive_at = self.last_sent + KEEP_ALIVE;
        tokio::select! {
            changed = self.news.changed() => {
                if changed.is_err() {
                    return Some(self.must_refetch());
                }
                self.announced_up_to_date = false;
                None
            }
            changed = self.lifecycle.changed() => {
                if changed.is_err() || *self.lifecycle.borrow() == ShapeState::Gone {
                    return Some(self.must_refetch());
                }
                None
            }
            () = tokio::time::sleep_until(keep_alive_at) => {
                self.last_sent = Instant::now();
                Some(Bytes::from_static(KEEP_ALIVE_COMMENT))
            }
            () = tokio::time::sleep_until(self.closes_at) => None,
            () = self.state.shutdown.cancelled() => {
                self.finished = true;
                None
            }
        }
    }

    fn must_refetch(&mut self) -> Bytes {
        self.finished = true;
        event(wire::MUST_REFETCH)
    }
}

fn event(message: &str) -> Bytes {
    Bytes::from(format!("data: {message}\n\n"))
}
