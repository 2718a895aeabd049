//! `POST /v1/mutations`: a batch of writes (PROTOCOL.md Part 2). The body may be gzipped
//! (`Content-Encoding: gzip`); its size limit applies after decompression.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::mutations::wire::{self, InvalidRequest};
use crate::server::AppState;

pub(super) async fn post_mutations(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return too_large(state.writes.config().max_body_bytes);
        }
        Err(rejection) => {
            return invalid(&InvalidRequest {
                field: "body".to_owned(),
                message: format!("cannot read the body: {}", rejection.body_text()),
            });
        }
    };
    let request = match wire::parse_request(&body) {
        Ok(request) => request,
        Err(err) => return invalid(&err),
    };
    // The batch runs to its end even if the client goes away, so that a retry finds it
    // recorded instead of half done.
    let writes = state.writes.clone();
    let outcome = tokio::spawn(async move { writes.apply(request).await }).await;
    match outcome {
        Ok(Ok(response)) => no_store((StatusCode::OK, Json(response)).into_response()),
        Ok(Err(err)) if err.is_transient() => {
            tracing::warn!(error = %err, "write failed: database unavailable");
            let mut response = no_store(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"code": "database_unavailable",
                                "message": "the database is unavailable or overloaded; retry"})),
                )
                    .into_response(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Ok(Err(err)) => internal(&err),
        Err(join) => internal(&join),
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 400 in the shape of the shape API's validation errors.
fn invalid(err: &InvalidRequest) -> Response {
    no_store(
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "Invalid request", "errors": {err.field.clone(): [err.message.clone()]}})),
        )
            .into_response(),
    )
}

fn too_large(limit: usize) -> Response {
    no_store(
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"message": "Request body too large",
                        "errors": {"body": [format!(
                            "larger than {limit} bytes (after decompression); send smaller \
                             batches or raise --max-body-bytes")]}})),
        )
            .into_response(),
    )
}

fn internal(err: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %err, "write failed");
    no_store(
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "Internal server error"})),
        )
            .into_response(),
    )
}
