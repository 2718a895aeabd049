//! The operator's status page: `GET /` serves one HTML file (`page.html`: inline CSS and
//! JavaScript, no build step, no external assets), which follows the report of
//! `GET /v1/status/stream` (server-sent events, one report a second) with an `EventSource` and
//! renders it; `GET /v1/status` answers the same report once, as JSON ([`report`] says what
//! each figure is, [`gather`] where it comes from).
//!
//! The page shows every shape's `where`, so with `--secret` all three need `?secret=` (the
//! page hands it on to its stream) and answer 401 without it; with JWT auth but no secret
//! they answer 403 (a token speaks for one user, the page shows everyone's shapes). With
//! `--no-status-page` they answer 404.

mod gather;
pub mod report;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::{Access, Credentials};
use crate::http::AppState;
use crate::http::credentials::RequestCredentials;
use crate::http::error::ApiError;
use gather::StatusSource;

/// The page, served as it is.
const PAGE: &str = include_str!("page.html");

/// How often the stream sends a report.
const STREAM_EVERY: Duration = Duration::from_secs(1);

/// Only inline styles and scripts, and requests to this origin (the stream).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; connect-src 'self'; img-src data:";

pub(crate) const OFF: &str = "the status page is off (--no-status-page, or \
SHAPESYNC_NO_STATUS_PAGE): start the proxy without it to serve GET /, /v1/status and \
/v1/status/stream";
pub(crate) const NO_SECRET: &str = "the status page shows every shape's `where`, so it needs \
the proxy's secret, and this proxy has none (a token speaks for one user only): start it with \
--secret (or SHAPESYNC_SECRET) and open /?secret=…";
pub(crate) const MISSING_SECRET: &str = "the status page shows every shape's `where`, so it \
needs the proxy's secret: add ?secret=… (the value of --secret) to the URL";
pub(crate) const WRONG_SECRET: &str =
    "the secret is wrong: ?secret= must be the value of the proxy's --secret";

#[derive(Clone)]
struct StatusState {
    app: AppState,
    source: Arc<StatusSource>,
}

/// `GET /`, `GET /v1/status` and `GET /v1/status/stream`.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    let state = StatusState {
        app: state,
        source: Arc::new(StatusSource::new()),
    };
    Router::new()
        .route("/", get(page))
        .route("/v1/status", get(status))
        .route("/v1/status/stream", get(stream))
        .with_state(state)
}

/// Whether the request may see the status page (see the module docs).
fn admit(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    if !state.settings.status_page {
        return Err(ApiError::NotFound(OFF.into()));
    }
    if !state.auth.is_on() {
        return Ok(());
    }
    if !state.auth.has_secret() {
        return Err(ApiError::Forbidden(NO_SECRET.into()));
    }
    let credentials = RequestCredentials::of(headers, query.unwrap_or(""));
    let Some(secret) = credentials.secret.as_deref() else {
        return Err(ApiError::Unauthorized(MISSING_SECRET.into()));
    };
    let access = state.auth.access(Credentials {
        secret: Some(secret),
        ..Credentials::default()
    });
    match access {
        Ok(Access::Secret | Access::Open) => Ok(()),
        Ok(Access::Token(_)) | Err(_) => Err(ApiError::Unauthorized(WRONG_SECRET.into())),
    }
}

fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The query may hold the secret: do not hand it to other sites.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

async fn page(
    State(status): State<StatusState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    admit(&status.app, &headers, query.as_deref())?;
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        PAGE,
    )
        .into_response();
    no_store(&mut response);
    Ok(response)
}

async fn status(
    State(status): State<StatusState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    admit(&status.app, &headers, query.as_deref())?;
    let json = status.source.json(&status.app).await;
    let mut response = (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response();
    no_store(&mut response);
    Ok(response)
}

async fn stream(
    State(status): State<StatusState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    admit(&status.app, &headers, query.as_deref())?;
    let events = futures_util::stream::unfold((status, true), |(status, first)| async move {
        if !first {
            tokio::select! {
                () = tokio::time::sleep(STREAM_EVERY) => {}
                () = status.app.shutdown.cancelled() => return None,
            }
        }
        let json = status.source.json(&status.app).await;
        let event = Event::default().data(&*json);
        Some((Ok::<Event, Infallible>(event), (status, false)))
    });
    let mut response = Sse::new(events).into_response();
    no_store(&mut response);
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
