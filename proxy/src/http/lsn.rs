//! `GET /v1/lsn`: the database position a "sync now" must reach (proxy/PROTOCOL.md,
//! "Sync now").
//!
//! The answer is the LSN of a *fence*: an empty transactional logical message
//! (`pg_logical_emit_message(true, 'shapesync.fence', '')`) written when the request arrives.
//! Every transaction committed before the request has its commit record before the fence, and
//! the replication stream delivers transactions in commit order, so once the proxy has processed
//! the fence's transaction every shape log holds all of them. The answer waits for that, so a
//! shape request made after it answers with an up-to-date whose `global_last_seen_lsn` is at or
//! past the fence: the client compares, and knows its mirror includes every earlier commit.
//!
//! Why a fence rather than `pg_current_wal_lsn()`: the proxy advances `global_last_seen_lsn` to
//! the commit LSN of the transactions it processes, and the WAL position is usually past the
//! last of them (its commit record's end, checkpoints, hint bits), so a client waiting for it
//! would wait until some unrelated write came along. The fence is a transaction the proxy is
//! sure to see at once (its commit is flushed like any other). It costs one tiny transaction
//! per call, and nothing for live clients, who never ask.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shapes::lsn::Lsn;

use crate::http::AppState;
use crate::http::credentials::RequestCredentials;
use crate::http::error::ApiError;

/// The prefix of the fence messages (the consumer ignores logical messages).
pub const FENCE_PREFIX: &str = "shapesync.fence";

/// GET `/v1/lsn`: `{"lsn":"<decimal>"}` once everything committed before the request is in
/// the shape logs. Credentials as for `/v1/shape` (any valid ones: the answer is a position,
/// not data).
pub(super) async fn get_lsn(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    RequestCredentials::of(&headers, query.as_deref().unwrap_or("")).authenticate(&state.auth)?;
    let fence = reach_fence(&state).await?;
    let mut response = Json(json!({ "lsn": fence.as_u64().to_string() })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Writes a fence and waits until the proxy has processed it: every transaction committed
/// before the call is then in the shape logs. 503 when the stream does not get there in time.
pub(crate) async fn reach_fence(state: &AppState) -> Result<Lsn, ApiError> {
    let fence = emit_fence(state).await?;
    let mut seen = state.shapes.watch_last_seen();
    let timeout = state.settings.long_poll_timeout;
    let reached = tokio::select! {
        r = tokio::time::timeout(timeout, seen.wait_for(|l| *l >= fence)) => matches!(r, Ok(Ok(_))),
        () = state.shutdown.cancelled() => false,
    };
    if !reached {
        return Err(ApiError::Unavailable {
            code: "replication_behind",
            message: format!(
                "the replication stream has not reached {fence} within {timeout:?}; retry"
            ),
            retry_after: 1,
        });
    }
    Ok(fence)
}

async fn emit_fence(state: &AppState) -> Result<Lsn, ApiError> {
    let unavailable = |message: String| ApiError::Unavailable {
        code: "database_unavailable",
        message,
        retry_after: 1,
    };
    let client = state
        .shapes
        .metadata()
        .get()
        .await
        .map_err(|e| unavailable(format!("cannot reach the database: {e}")))?;
    let row = client
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, '')::text",
            &[&FENCE_PREFIX],
        )
        .await
        .map_err(|e| {
            // A standby (recovery), a role without the right, a lost connection: the details
            // go to the log only.
            tracing::warn!(error = %crate::postgres::describe(&e), "sync-now fence refused");
            unavailable("the database refused the sync-now fence (the proxy's log says why)".into())
        })?;
    let text: String = row
        .try_get(0)
        .map_err(|e| ApiError::Internal(format!("reading the fence LSN: {e}")))?;
    text.parse()
        .map_err(|e| ApiError::Internal(format!("the fence LSN: {e}")))
}
