//! The HTTP API. [`router`] builds it from the shared state, apart from any socket, so tests
//! can drive it directly.

mod credentials;
mod ecosystems;
pub mod error;
mod health;
pub mod listener;
pub(crate) mod lsn;
mod metrics;
mod mutations;
mod preflight;
pub mod shape;
mod state;
pub mod status;

use std::convert::Infallible;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;

use error::ApiError;
pub use state::AppState;

/// Headers the Electric client reads from responses.
const EXPOSED_HEADERS: &str = "electric-cursor,electric-handle,electric-has-data,electric-offset,\
electric-schema,electric-up-to-date,electric-snapshot,retry-after";

/// Every route of the proxy.
pub fn router(state: AppState) -> Router {
    let max_body = state.writes.config().max_body_bytes;
    let max_url = state.auth.max_url_bytes;
    Router::new()
        .route("/v1/health", get(health::get_health))
        .route("/v1/lsn", get(lsn::get_lsn))
        .route("/metrics", get(metrics::get_metrics))
        .route(
            "/v1/shape",
            get(shape::get_shape)
                .post(shape::post_shape)
                .delete(shape::delete_shape)
                .options(preflight::preflight)
                .layer(middleware::from_fn(count_shape_request)),
        )
        .route(
            "/v1/mutations",
            post(mutations::post_mutations)
                .options(preflight::preflight)
                .layer::<_, Infallible>(DefaultBodyLimit::max(max_body))
                .layer::<_, Infallible>(RequestDecompressionLayer::new()),
        )
        .merge(ecosystems::routes(max_body))
        .merge(status::routes(state.clone()))
        .with_state(state)
        // gzip when the client accepts it; never for SSE (the default predicate skips
        // text/event-stream) or tiny bodies. The fastest level: shape chunks are megabytes,
        // and at the default level compressing them costs more than sending them.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            limit_url(max_url, request, next)
        }))
        .layer(middleware::from_fn(cors))
}

/// Counts every request to `/v1/shape` once it is answered, whatever the answer
/// (`shapesync_http_requests_total`).
async fn count_shape_request(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    ::metrics::counter!(crate::observability::prometheus::HTTP_REQUESTS).increment(1);
    response
}

/// 414 for a URL longer than `--max-url-bytes`, before any work is done for it.
async fn limit_url(max_bytes: usize, request: Request, next: Next) -> Response {
    let len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if len > max_bytes {
        return ApiError::UriTooLong(format!(
            "the URL is {len} bytes, longer than the {max_bytes} allowed (--max-url-bytes)"
        ))
        .into_response();
    }
    next.run(request).await
}

/// CORS on every response: the request's Origin (or `*`), and the headers clients read.
async fn cors(request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    h.append(header::VARY, HeaderValue::from_static("origin"));
    response
}
