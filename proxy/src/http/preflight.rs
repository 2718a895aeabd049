//! CORS preflight (`OPTIONS`) for every route a browser calls. A browser asks before a
//! cross-origin request that carries a JSON body or an `Authorization` header, which RxDB and
//! WatermelonDB apps, writes and token-authenticated shape reads all do.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// 204 allowing every method of the API and the headers the browser asks for. They are
/// echoed rather than answered with `*`, which the Fetch standard does not let cover
/// `Authorization` (Chromium still lets it).
pub(super) async fn preflight(request: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, HEAD, DELETE, OPTIONS"),
    );
    let asked = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}
