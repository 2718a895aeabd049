//! Auth for `/v1/shape`: who the request is, and the shape narrowed to what it may read.

use axum::http::HeaderMap;

use super::params::{self, ShapeParams};
use crate::auth::read::ReadScope;
use crate::auth::{Access, Credentials};
use crate::http::error::ApiError;
use crate::server::AppState;

/// A request's access, and how its shape was narrowed.
pub(crate) struct Authorized {
    pub access: Access,
    pub scope: ReadScope,
}

/// Authenticates a shape request (401) before its parameters are judged, so a caller without
/// credentials learns nothing from validation errors.
pub(crate) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &str,
) -> Result<Access, ApiError> {
    let found = params::credentials(query);
    state.auth.access(Credentials::of(
        headers,
        found.secret.as_deref(),
        found.token.as_deref(),
    ))
}

/// Narrows `params.shape` to what `access` may read (403 for tables, columns and `where`s the
/// rules do not allow); every later step works on the narrowed request.
pub(crate) async fn authorize(
    state: &AppState,
    access: Access,
    params: &mut ShapeParams,
) -> Result<Authorized, ApiError> {
    let scope = match &access {
        Access::Open | Access::Secret => ReadScope::default(),
        Access::Token(token) => token.scope_shape(&state.engine, &mut params.shape).await?,
    };
    Ok(Authorized { access, scope })
}
