//! Long-polling: wait for the shape's next entries, the long-poll timeout, or its removal.
//! Every live response (long-poll and SSE) also ends by its token's `exp`: what is committed
//! after it is not sent on the strength of that token, and the client comes back with a fresh
//! one (the expired one is refused).

use std::sync::Arc;
use std::time::SystemTime;

use shapes::offset::Offset;
use tokio::time::Instant;

use super::batch::{self, Batch};
use super::framing::Framing;
use super::up_to_date_batch;
use crate::auth::Access;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::storage::shape_store::{Shape, ShapeState};

/// When a live response made with `access` must have ended: its token's `exp`, as an instant
/// of the runtime's clock (`None`: no token, or an `exp` too far away to matter).
pub(crate) fn token_deadline(access: &Access) -> Option<Instant> {
    let exp = access.expires_at()?;
    let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now().checked_add(left)
}

/// Waits up to the long-poll timeout (and no later than `token_deadline`) for entries after
/// `after`. On timeout: an up-to-date at the same offset (`electric-has-data: false`).
pub(super) async fn wait(
    state: &AppState,
    shape: &Arc<Shape>,
    after: Offset,
    token_deadline: Option<Instant>,
) -> Result<Batch, ApiError> {
    let _live = crate::observability::prometheus::LiveConnection::open();
    let _active = state.shapes.demand().live();
    let _client = shape.live_client();
    let timeout = Instant::now() + state.settings.long_poll_timeout;
    let deadline = token_deadline.map_or(timeout, |ends| ends.min(timeout));
    let mut news = shape.log.subscribe();
    let mut lifecycle = shape.watch_state();
    loop {
        news.mark_seen();
        let last_seen = state.shapes.last_seen();
        let found = batch::read_after(
            shape,
            after,
            Framing::JsonArray { first: true },
            last_seen,
            true,
        )
        .await
        .map_err(|e| ApiError::Internal(format!("reading shape {}: {e}", shape.handle)))?;
        if let Some(batch) = found {
            return Ok(batch);
        }
        tokio::select! {
            changed = news.changed() => {
                if changed.is_err() {
                    return Err(refetch(state, shape));
                }
            }
            changed = lifecycle.changed() => {
                if changed.is_err() || *lifecycle.borrow() == ShapeState::Gone {
                    return Err(refetch(state, shape));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Ok(up_to_date_batch(after, state.shapes.last_seen()));
            }
            () = state.shutdown.cancelled() => {
                return Ok(up_to_date_batch(after, state.shapes.last_seen()));
            }
        }
    }
}

/// The shape went away under a waiting client: 409, pointing at its successor if one exists
/// (else the client starts again from `offset=-1`, as from Electric).
pub(super) fn refetch(state: &AppState, shape: &Shape) -> ApiError {
    match state.shapes.successor(shape) {
        Some(successor) => ApiError::MustRefetch(successor.handle.clone()),
        None => ApiError::MustRefetchFromScratch,
    }
}
