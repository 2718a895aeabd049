//! `GET /metrics`: Prometheus text format (see [`crate::observability::prometheus`]).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::http::AppState;
use crate::observability::prometheus;

pub(super) async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    metrics::gauge!(prometheus::SHAPES).set(state.shapes.count() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus::handle().render(),
    )
}
