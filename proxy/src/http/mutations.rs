//! `POST /v1/mutations`: a batch of writes (proxy/PROTOCOL.md, "Writes"). The body may be gzipped
//! (`Content-Encoding: gzip`); its size limit applies after decompression.
//!
//! With auth on, the request authenticates first (401); the secret writes what `--writable`
//! allows, a token what the rules allow too (per mutation: `forbidden`), and the rows in its
//! results show only the columns it may read.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shapes::table_name::parse_table_name;

use crate::auth::{Access, TokenAccess};
use crate::http::AppState;
use crate::http::credentials::RequestCredentials;
use crate::http::error::ApiError;
use crate::mutations::guard::WriteGuard;
use crate::mutations::wire::{self, InvalidRequest, MutationResponse, Outcome};

pub(super) async fn post_mutations(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let credentials = RequestCredentials::of(&headers, query.as_deref().unwrap_or(""));
    let access = match credentials.authenticate(&state.auth) {
        Ok(access) => access,
        Err(err) => return err.into_response(),
    };
    // Closed for idleness: open it, so the answer carries the commit LSN.
    if let Err(err) = state.shapes.stream_open().await {
        return ApiError::from(err).into_response();
    }
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
    let mut request = match wire::parse_request(&body) {
        Ok(request) => request,
        Err(err) => return invalid(&err),
    };
    let token = match access {
        Access::Token(token) => Some(token),
        Access::Open | Access::Secret => None,
    };
    if let Some(subject) = token.as_ref().and_then(|t| t.subject()) {
        // Idempotency records are per client id: keep one user's from answering another's
        // retries (a token refresh keeps the subject, so retries still find theirs).
        request.client_id = format!("{subject}\u{1f}{}", request.client_id);
    }
    let tables: Vec<String> = request.mutations.iter().map(|m| m.table.clone()).collect();
    // The batch runs to its end even if the client goes away, so that a retry finds it
    // recorded instead of half done.
    let writes = state.writes.clone();
    let guard = token.clone();
    let outcome = tokio::spawn(async move {
        let guard = guard.as_deref().map(|t| t as &dyn WriteGuard);
        writes.apply_guarded(request, guard).await
    })
    .await;
    match outcome {
        Ok(Ok(mut response)) => {
            if let Some(token) = &token {
                hide_unreadable_columns(token, &tables, &mut response);
            }
            no_store((StatusCode::OK, Json(response)).into_response())
        }
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

/// The rows in results show only what the token may read of their table.
fn hide_unreadable_columns(
    token: &TokenAccess,
    tables: &[String],
    response: &mut MutationResponse,
) {
    for (result, table) in response.results.iter_mut().zip(tables) {
        let row = match &mut result.outcome {
            Outcome::Applied { row, .. } | Outcome::Conflict { row, .. } => row,
            _ => continue,
        };
        let Some(values) = row.as_mut() else {
            continue;
        };
        match parse_table_name(table) {
            Ok(name) => values.retain(|column, _| token.can_read_column(&name, column)),
            Err(_) => *row = None,
        }
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
