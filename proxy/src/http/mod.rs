//! The HTTP API. [`router`] builds it from the shared state, apart from any socket, so tests
//! can drive it directly.

mod health;

use axum::Router;
use axum::routing::get;

use crate::server::AppState;

/// Every route of the proxy.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health::get_health))
        .with_state(state)
}
