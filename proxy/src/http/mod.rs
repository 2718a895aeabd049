//! The HTTP API. [`router`] builds it from the shared state, apart from any socket, so tests
//! can drive it directly.

mod health;
mod mutations;

use std::convert::Infallible;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::decompression::RequestDecompressionLayer;

use crate::server::AppState;

/// Every route of the proxy.
pub fn router(state: AppState) -> Router {
    let max_body = state.writes.config().max_body_bytes;
    Router::new()
        .route("/v1/health", get(health::get_health))
        .route(
            "/v1/mutations",
            post(mutations::post_mutations)
                .layer::<_, Infallible>(DefaultBodyLimit::max(max_body))
                .layer::<_, Infallible>(RequestDecompressionLayer::new()),
        )
        .with_state(state)
}
