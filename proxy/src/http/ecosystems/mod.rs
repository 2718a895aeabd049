//! Sync protocols of other client databases, served from the same shapes and write path as
//! the Electric API: RxDB's replication protocol (`rxdb`) and WatermelonDB's `synchronize()`
//! (`watermelon`). See proxy/PROTOCOL.md, "RxDB" and "WatermelonDB".
//!
//! Reads come from the caller's shape of each table (`caller`), paged entry by entry and folded
//! into the last state of each row (`changes`); values are typed by column (`values`). Writes
//! go through `POST /v1/mutations`' path with a precondition on the locked rows (`writes`).

mod caller;
mod changes;
mod query;
mod rxdb;
mod stream_body;
mod values;
mod watermelon;
mod writes;

use std::convert::Infallible;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use tower_http::decompression::RequestDecompressionLayer;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::preflight::preflight;

/// The routes of both protocols.
pub fn routes(max_body: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/rxdb/{table}/pull", get(rxdb::pull).options(preflight))
        .route(
            "/v1/rxdb/{table}/pullStream",
            get(rxdb::pull_stream).options(preflight),
        )
        .route(
            "/v1/rxdb/{table}/push",
            post(rxdb::push)
                .options(preflight)
                .layer::<_, Infallible>(DefaultBodyLimit::max(max_body))
                .layer::<_, Infallible>(RequestDecompressionLayer::new()),
        )
        .route(
            "/v1/watermelon/pull",
            get(watermelon::pull).options(preflight),
        )
        .route(
            "/v1/watermelon/push",
            post(watermelon::push)
                .options(preflight)
                .layer::<_, Infallible>(DefaultBodyLimit::max(max_body))
                .layer::<_, Infallible>(RequestDecompressionLayer::new()),
        )
}

/// A JSON body written by hand (the pulls' answers).
fn json_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON body, strictly: a 400 names the field that is wrong (`[2].newDocumentState`).
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let field = match path.as_str() {
            "." | "" => "body".to_owned(),
            path => path.to_owned(),
        };
        ApiError::invalid(field, err.into_inner().to_string())
    })
}
