//! `GET /metrics`: Prometheus text format (see [`crate::monitoring`]).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::http::AppState;
use crate::monitoring;

pub(super) async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    metrics::gauge!(monitoring::SHAPES).set(state.engine.store.len() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        monitoring::handle().render(),
    )
}
