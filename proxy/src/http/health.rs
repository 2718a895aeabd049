//! `GET /v1/health`: 200 `{"status":"active"}` once the proxy serves shapes, 202
//! `{"status":"starting"}` or `{"status":"waiting"}` (database unreachable) before.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::AppState;
use crate::read_path::Health;

pub(super) async fn get_health(State(state): State<AppState>) -> Response {
    let health = *state.health.borrow();
    let status = match health {
        Health::Active => StatusCode::OK,
        Health::Starting | Health::Waiting => StatusCode::ACCEPTED,
    };
    let mut response = (status, Json(json!({ "status": health.as_str() }))).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    response
}
