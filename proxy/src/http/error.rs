//! The one error type of the HTTP API: every failure becomes the exact status and body of
//! the Electric protocol, and internal details stay in the log.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shapes::handle::Handle;

use crate::auth::AuthError;
use crate::read_path::ShapeError;

#[derive(Debug)]
pub enum ApiError {
    /// 400 `{"message":"Invalid request","errors":{"<param>":["…"]}}`.
    Invalid(BTreeMap<String, Vec<String>>),
    /// 400 `{"message":"Invalid request","errors":{"subset":{"<field>":["…"]}}}`.
    InvalidSubset(BTreeMap<String, Vec<String>>),
    /// 401 `{"message":"…"}`.
    Unauthorized(String),
    /// 403 `{"message":"…"}`.
    Forbidden(String),
    /// 404 `{"message":"…"}`.
    NotFound(String),
    /// 409 `[must-refetch]` with the handle to use instead.
    MustRefetch(Handle),
    /// 409 `[must-refetch]` without a handle: the shape is gone and none replaces it yet (the
    /// client starts again from `offset=-1`, which makes one).
    MustRefetchFromScratch,
    /// 414 `{"message":"…"}`.
    UriTooLong(String),
    /// 429 `{"message":"…"}` + `retry-after`: a per-token limit.
    TooManyRequests { message: String, retry_after: u64 },
    /// 503 `{"code":…,"message":…}` + `retry-after`.
    Unavailable {
        code: &'static str,
        message: String,
        retry_after: u64,
    },
    /// 500; the details go to the log only.
    Internal(String),
}

impl ApiError {
    /// A 400 naming one parameter.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = BTreeMap::new();
        errors.insert(param.into(), vec![message.into()]);
        Self::Invalid(errors)
    }
}

impl From<ShapeError> for ApiError {
    fn from(err: ShapeError) -> Self {
        match err {
            ShapeError::Invalid { param, message } => Self::invalid(param, message),
            ShapeError::Unavailable {
                message,
                retry_after,
            } => Self::Unavailable {
                code: "unavailable",
                message,
                retry_after,
            },
            ShapeError::LimitReached {
                message,
                retry_after,
            } => Self::Unavailable {
                code: "concurrent_request_limit_exceeded",
                message,
                retry_after,
            },
            ShapeError::MissingPrivilege(message) => Self::Forbidden(message),
            ShapeError::Gone => Self::Unavailable {
                code: "shape_rotated",
                message: "the shape was removed while the request waited; retry".into(),
                retry_after: 1,
            },
            ShapeError::Standby(message) => Self::Unavailable {
                code: "standby",
                message,
                retry_after: 1,
            },
            ShapeError::Internal(message) => Self::Internal(message),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Unauthorized(message) => Self::Unauthorized(message),
            AuthError::Forbidden(message) => Self::Forbidden(message),
            AuthError::TooManyRequests {
                message,
                retry_after,
            } => Self::TooManyRequests {
                message,
                retry_after,
            },
            AuthError::Invalid { param, message } => Self::invalid(param, message),
            AuthError::Internal(message) => Self::Internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match self {
            ApiError::Invalid(errors) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": "Invalid request", "errors": errors})),
            )
                .into_response(),
            ApiError::InvalidSubset(errors) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": "Invalid request", "errors": {"subset": errors}})),
            )
                .into_response(),
            ApiError::Unauthorized(message) => (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "message": message })),
            )
                .into_response(),
            ApiError::Forbidden(message) => {
                (StatusCode::FORBIDDEN, Json(json!({ "message": message }))).into_response()
            }
            ApiError::NotFound(message) => {
                (StatusCode::NOT_FOUND, Json(json!({ "message": message }))).into_response()
            }
            ApiError::UriTooLong(message) => (
                StatusCode::URI_TOO_LONG,
                Json(json!({ "message": message })),
            )
                .into_response(),
            ApiError::TooManyRequests {
                message,
                retry_after,
            } => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({ "message": message })),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                response
            }
            ApiError::MustRefetchFromScratch => (
                StatusCode::CONFLICT,
                Json(json!([{"headers": {"control": "must-refetch"}}])),
            )
                .into_response(),
            ApiError::MustRefetch(handle) => {
                let mut response = (
                    StatusCode::CONFLICT,
                    Json(json!([{"headers": {"control": "must-refetch"}}])),
                )
                    .into_response();
                if let Ok(value) = HeaderValue::from_str(handle.as_str()) {
                    response.headers_mut().insert("electric-handle", value);
                }
                response
            }
            ApiError::Unavailable {
                code,
                message,
                retry_after,
            } => {
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "code": code, "message": message })),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                response
            }
            ApiError::Internal(details) => {
                tracing::error!(details, "internal error answering a request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "Internal server error"})),
                )
                    .into_response()
            }
        };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
