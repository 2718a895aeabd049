//! `pullStream`: one server-sent event per transaction of the caller's rows.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use shapes::offset::Offset;
use shapes::schema::Column;

use super::{Checkpoint, Read, page};
use crate::http::AppState;
use crate::http::ecosystems::caller::read_entries;
use crate::http::ecosystems::changes::Fold;
use crate::http::error::ApiError;
use crate::storage::shape_log::cursor::{Entry, Position};
use crate::storage::shape_store::{Shape, ShapeState};

/// Entries one server-sent event may carry (a larger transaction comes as several events).
const STREAM_BATCH: usize = 10_000;

/// GET `/v1/rxdb/{table}/pullStream[?checkpoint=<json>]`: one event per transaction of the
/// caller's rows, from the checkpoint or from now; `"RESYNC"` when the shape rotates (the
/// client then pulls from its last checkpoint, which starts over on the new shape).
pub(in crate::http::ecosystems) async fn pull_stream(
    State(state): State<AppState>,
    Path(table): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.as_deref().unwrap_or("");
    let read = Read::open(&state, &table, &headers, query, &["checkpoint"]).await?;
    let from = match read.position()? {
        Some(position) => position,
        None => Some(Position::After(
            read.shape.log.last_offset().unwrap_or(Offset::SNAPSHOT_END),
        )),
    };
    let columns = read.fields();
    let deadline = crate::http::shape::live::token_deadline(&read.caller.access);
    let live = state.auth.live_connection(&read.caller.access)?;
    let shape = read.shape;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    let client = shape.live_client();
    tokio::spawn(async move {
        let _live = (live, client);
        let Some(from) = from else {
            let _ = tx.send(Event::default().data("\"RESYNC\"")).await;
            return;
        };
        let stream = StreamTask {
            state,
            shape,
            columns,
            tx,
            deadline,
        };
        if let Err(err) = stream.run(from).await {
            tracing::warn!(error = ?err, "an RxDB pull stream ended");
        }
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct StreamTask {
    state: AppState,
    shape: Arc<Shape>,
    columns: Vec<Column>,
    tx: tokio::sync::mpsc::Sender<Event>,
    deadline: Option<tokio::time::Instant>,
}

impl StreamTask {
    async fn run(self, mut at: Position) -> Result<(), ApiError> {
        let mut news = self.shape.log.subscribe();
        let mut shape_state = self.shape.watch_state();
        loop {
            news.mark_seen();
            let read = read_entries(&self.shape, at, STREAM_BATCH, "checkpoint").await?;
            for event in self.events(read.entries)? {
                if self.tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
            at = read.next;
            if !read.at_end {
                continue;
            }
            let expired = async {
                match self.deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let gone = async {
                // The `Ref` it gives is not `Send`: dropped here.
                let _ = shape_state
                    .wait_for(|s| *s == ShapeState::Gone)
                    .await
                    .is_ok();
            };
            tokio::select! {
                changed = news.changed() => if changed.is_err() { return self.resync().await },
                () = gone => return self.resync().await,
                () = self.tx.closed() => return Ok(()),
                () = self.state.shutdown.cancelled() => return Ok(()),
                () = expired => return Ok(()),
            }
        }
    }

    async fn resync(&self) -> Result<(), ApiError> {
        let _ = self.tx.send(Event::default().data("\"RESYNC\"")).await;
        Ok(())
    }

    /// One event per transaction of `entries` (snapshot entries never reach a stream).
    fn events(&self, entries: Vec<Entry>) -> Result<Vec<Event>, ApiError> {
        let unreadable = |e| ApiError::Internal(format!("shape {}: {e}", self.shape.handle));
        let mut events = Vec::new();
        let mut entries = entries.into_iter().peekable();
        while let Some(first) = entries.next() {
            let tx = first.offset.map(|o| o.lsn());
            let mut next = first.next;
            let mut fold = Fold::default();
            fold.push(first.payload).map_err(unreadable)?;
            while let Some(entry) = entries.next_if(|e| e.offset.map(|o| o.lsn()) == tx) {
                next = entry.next;
                fold.push(entry.payload).map_err(unreadable)?;
            }
            if !fold.is_empty() {
                let checkpoint = Checkpoint::at(&self.shape, next);
                let data = page(&self.columns, fold, &checkpoint).map_err(unreadable)?;
                // JSON written from UTF-8 texts: always UTF-8.
                let data = String::from_utf8(data)
                    .map_err(|e| ApiError::Internal(format!("an event: {e}")))?;
                events.push(Event::default().data(data));
            }
        }
        Ok(events)
    }
}
