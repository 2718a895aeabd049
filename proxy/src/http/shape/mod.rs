//! `/v1/shape`: the Electric HTTP Shape API v1 (proxy/PROTOCOL.md, "Shapes").

mod authorize;
mod batch;
mod framing;
pub mod headers;
pub(crate) mod live;
pub mod params;
mod sse;
mod subset;

use std::sync::Arc;

use futures_util::StreamExt as _;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shapes::lsn::Lsn;
use shapes::offset::Offset;
use shapes::wire;

use crate::http::AppState;
use crate::http::credentials::RequestCredentials;
use crate::http::error::ApiError;
use crate::storage::shape_store::Shape;
use batch::Batch;
use framing::Framing;
use headers::CacheKind;
use params::{RequestOffset, ShapeParams};

/// The shape a request names, checked against the handle it holds (409 when they differ).
/// Authenticates the request, narrows it to what its credentials may read, and finds (or
/// makes) the shape it names, checked against the handle it holds (409 when they differ).
async fn requested_shape(
    state: &AppState,
    request_headers: &HeaderMap,
    query: &str,
) -> Result<(ShapeParams, authorize::Authorized, Arc<Shape>), ApiError> {
    let access = authorize::authenticate(state, request_headers, query)?;
    let mut params = params::parse(query)?;
    let authorized = authorize::authorize(state, access, &mut params).await?;
    let shape = state
        .shapes
        .shape_for_admitting(&params.shape, || {
            state
                .auth
                .admit_new_shape(&authorized.access)
                .map_err(ApiError::from)
        })
        .await?;
    if let Some(handle) = &params.handle
        && !params.is_initial()
        && *handle != shape.handle
    {
        return Err(ApiError::MustRefetch(shape.handle.clone()));
    }
    Ok((params, authorized, shape))
}

/// GET (and HEAD) `/v1/shape`.
pub(super) async fn get_shape(
    State(state): State<AppState>,
    request_headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.as_deref().unwrap_or("");
    let (params, authorized, shape) = requested_shape(&state, &request_headers, query).await?;
    if !params.subset.is_empty() {
        let request = subset::SubsetRequest::from_query(&params.subset)?;
        return subset_response(&state, &shape, &params, &authorized, &request).await;
    }
    let after = match params.offset {
        RequestOffset::Now => return Ok(now_response(&state, &shape)),
        RequestOffset::At(offset) => offset,
    };
    check_in_bounds(&state, after, params.live).await?;
    let token_deadline = live::token_deadline(&authorized.access);
    if params.live && token_deadline.is_some_and(|ends| ends <= tokio::time::Instant::now()) {
        // It expired while the request waited for its offset: nothing more on this token.
        return Err(ApiError::Unauthorized("the token has expired".into()));
    }
    let private = authorized.scope.private;
    // Held until the response is done (for SSE, until the stream ends).
    let live_connection = if params.live {
        state.auth.live_connection(&authorized.access)?
    } else {
        None
    };
    if params.sse {
        let stream = sse::Stream {
            cursor: params.cursor,
            private,
            live_connection,
            token_deadline,
            behind_proxy: sse::Stream::is_behind_proxy(&request_headers),
        };
        return Ok(sse::respond(state, shape, after, stream));
    }
    let last_seen = state.shapes.last_seen();
    let batch = batch::read_after(
        &shape,
        after,
        Framing::JsonArray { first: true },
        last_seen,
        true,
    )
    .await
    .map_err(|e| ApiError::Internal(format!("reading shape {}: {e}", shape.handle)))?;
    let batch = match (batch, params.live) {
        (Some(batch), _) => batch,
        (None, false) => up_to_date_batch(after, state.shapes.last_seen()),
        (None, true) => live::wait(&state, &shape, after, token_deadline).await?,
    };
    drop(live_connection);
    Ok(respond(
        &params,
        &shape,
        after,
        batch,
        &request_headers,
        private,
        headers::CatchupAges::of(&state.settings),
    ))
}

/// An offset past everything the proxy has processed may become valid soon: wait like a live
/// request; if it is still beyond afterwards, it is out of bounds. Once it passed, every
/// up-to-date this request sends carries a `global_last_seen_lsn` at or past the offset, so a
/// client continuing from `<global_last_seen_lsn>_0` (SSE) never goes back.
async fn check_in_bounds(state: &AppState, after: Offset, live: bool) -> Result<(), ApiError> {
    let Some(lsn) = after.lsn() else {
        return Ok(());
    };
    if lsn <= state.shapes.last_seen() {
        return Ok(());
    }
    let mut seen = state.shapes.watch_last_seen();
    let timeout = state.settings.long_poll_timeout;
    let reached = tokio::time::timeout(timeout, seen.wait_for(|l| *l >= lsn)).await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        _ if live => Err(ApiError::invalid("offset", "out of bounds for this shape")),
        _ => Err(ApiError::invalid("offset", "out of bounds for this shape")),
    }
}

fn up_to_date_batch(after: Offset, last_seen: Lsn) -> Batch {
    Batch {
        pieces: None,
        body: wire::up_to_date(last_seen).into_bytes(),
        offset: after,
        up_to_date: true,
    }
}

fn now_response(state: &AppState, shape: &Arc<Shape>) -> Response {
    let offset = batch::latest_offset(shape);
    let body = format!("[{}]", wire::up_to_date(state.shapes.last_seen()));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    shape_headers(h, shape, offset);
    insert(h, "electric-schema", shape.schema_header());
    insert(h, "electric-up-to-date", "");
    insert(h, "electric-has-data", "true");
    insert(h, header::CACHE_CONTROL.as_str(), "no-cache");
    response
}

/// A JSON array response for a batch, with every header the client relies on.
fn respond(
    params: &ShapeParams,
    shape: &Shape,
    after: Offset,
    batch: Batch,
    request_headers: &HeaderMap,
    private: bool,
    catchup_ages: headers::CatchupAges,
) -> Response {
    let etag = headers::etag(&shape.handle, &after.to_string(), batch.offset);
    let kind = if params.live {
        CacheKind::LongPoll
    } else if after == Offset::BeforeAll {
        CacheKind::Initial
    } else {
        CacheKind::Catchup(catchup_ages)
    };
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let has_data = !(params.live && batch.offset == after && batch.up_to_date);
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, json_array_body(batch.pieces, batch.body)).into_response()
    };
    let h = response.headers_mut();
    shape_headers(h, shape, batch.offset);
    insert(
        h,
        header::CONTENT_TYPE.as_str(),
        "application/json; charset=utf-8",
    );
    insert(h, header::ETAG.as_str(), &etag);
    insert(
        h,
        header::CACHE_CONTROL.as_str(),
        &headers::cache_control(kind, private),
    );
    if private {
        headers::vary_on_credentials(h);
    }
    insert(
        h,
        "electric-has-data",
        if has_data { "true" } else { "false" },
    );
    if batch.up_to_date {
        insert(h, "electric-up-to-date", "");
    }
    if params.live {
        insert(
            h,
            "electric-cursor",
            &headers::next_cursor(params.cursor, batch.offset != after).to_string(),
        );
    } else {
        insert(h, "electric-schema", shape.schema_header());
    }
    response
}

/// `[` + the pieces (if streamed) + `rest` + `]`, without copying the messages.
fn json_array_body(pieces: Option<batch::Pieces>, rest: Vec<u8>) -> Body {
    let open = futures_util::stream::once(async { Ok(Bytes::from_static(b"[")) });
    let close = futures_util::stream::iter([Ok(Bytes::from(rest)), Ok(Bytes::from_static(b"]"))]);
    let middle = futures_util::stream::unfold(pieces, |pieces| async move {
        let mut pieces = pieces?;
        let piece = pieces.recv().await?;
        Some((piece, Some(pieces)))
    });
    Body::from_stream(open.chain(middle).chain(close))
}

fn shape_headers(h: &mut HeaderMap, shape: &Shape, offset: Offset) {
    insert(h, "electric-handle", shape.handle.as_str());
    insert(h, "electric-offset", &offset.to_string());
}

fn insert(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        h.insert(name, value);
    }
}

/// POST `/v1/shape`: a subset snapshot with its parameters in a JSON body.
pub(super) async fn post_shape(
    State(state): State<AppState>,
    request_headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let query = query.as_deref().unwrap_or("");
    let (params, authorized, shape) = requested_shape(&state, &request_headers, query).await?;
    let request: subset::SubsetRequest = if body.is_empty() {
        subset::SubsetRequest::from_query(&params.subset)?
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid("subset", format!("the body must be a JSON object: {e}"))
        })?
    };
    subset_response(&state, &shape, &params, &authorized, &request).await
}

async fn subset_response(
    state: &AppState,
    shape: &Arc<Shape>,
    params: &ShapeParams,
    authorized: &authorize::Authorized,
    request: &subset::SubsetRequest,
) -> Result<Response, ApiError> {
    let parts = request.parts()?;
    let columns = authorize::subset_columns(&authorized.access, &shape.table, request, &parts)?;
    let body = subset::run(state, shape, request, &parts, &columns).await?;
    let offset = match params.offset {
        RequestOffset::At(offset) => offset,
        RequestOffset::Now => batch::latest_offset(shape),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    shape_headers(h, shape, offset);
    insert(
        h,
        header::CONTENT_TYPE.as_str(),
        "application/json; charset=utf-8",
    );
    insert(h, "electric-schema", shape.schema_header());
    insert(h, "electric-snapshot", "true");
    let private = authorized.scope.private;
    insert(
        h,
        header::CACHE_CONTROL.as_str(),
        headers::subset_cache_control(private),
    );
    if private {
        headers::vary_on_credentials(h);
    }
    Ok(response)
}

/// DELETE `/v1/shape`: by handle, or by definition (table, where, …). 202 `[]`, or 404.
/// With auth on, only the secret may delete.
pub(super) async fn delete_shape(
    State(state): State<AppState>,
    request_headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    RequestCredentials::of(&request_headers, &query)
        .require_full_access(&state.auth, "deleting shapes")?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let by_handle = match get("handle") {
        Some(text) => Some(
            text.parse()
                .map_err(|_| ApiError::invalid("handle", "is not a valid shape handle"))?,
        ),
        None => None,
    };
    let target = match (by_handle, get("table")) {
        (Some(handle), _) => state.shapes.by_handle(&handle),
        (None, Some(_)) => {
            let mut with_offset = query.clone();
            with_offset.push_str("&offset=-1");
            let params = params::parse(&with_offset)?;
            state.shapes.existing(&params.shape).await?
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "handle",
                "give a handle, or the shape's table (and where, columns, …)",
            ));
        }
    };
    let Some(shape) = target else {
        return Err(ApiError::NotFound("no such shape".into()));
    };
    state.shapes.remove(&shape.handle).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        "[]",
    )
        .into_response())
}
