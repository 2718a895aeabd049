//! `GET /v1/lsn`: the database position a "sync now" must reach (proxy/PROTOCOL.md,
//! "Sync now").
//!
//! The answer is the LSN of a *fence* (`read_path::fence`) written when the request arrives.
//! The answer waits until the proxy has processed it, so a shape request made after it
//! answers with an up-to-date whose `global_last_seen_lsn` is at or past the fence: the client
//! compares, and knows its mirror includes every earlier commit. It costs one tiny transaction
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
use crate::read_path::fence::FenceError;

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
    state.shapes.stream_open().await?;
    let fence = state.shapes.emit_fence().await.map_err(|err| {
        // The details go to the log only.
        tracing::warn!(error = %err, "sync-now fence failed");
        let message = match err {
            FenceError::Unreachable(_) => err.to_string(),
            _ => "the database refused the sync-now fence (the proxy's log says why)".to_owned(),
        };
        ApiError::Unavailable {
            code: "database_unavailable",
            message,
            retry_after: 1,
        }
    })?;
    let timeout = state.settings.long_poll_timeout;
    if !state
        .shapes
        .processed(fence, timeout, &state.shutdown)
        .await
    {
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
