//! Auth for `/v1/shape`: who the request is, and the shape narrowed to what it may read.

use std::borrow::Cow;

use axum::http::HeaderMap;
use shapes::schema::TableSchema;

use super::params::ShapeParams;
use super::subset::{SubsetParts, SubsetRequest};
use crate::auth::Access;
use crate::auth::read::ReadScope;
use crate::http::AppState;
use crate::http::credentials::RequestCredentials;
use crate::http::error::ApiError;
use crate::read_path::ShapeError;

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
    RequestCredentials::of(headers, query).authenticate(&state.auth)
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
        Access::Token(token) => {
            let shapes = &state.shapes;
            token
                .scope_shape(&mut params.shape, |name| async move {
                    let table = shapes.table(&name).await;
                    table.map_err(|e| ApiError::from(ShapeError::from(e)))
                })
                .await?
        }
    };
    Ok(Authorized { access, scope })
}

/// The columns a subset snapshot of a shape of `table` may use: all of them with full
/// access; with a token, its readable ones (403 when the subset's `where` or `order_by` uses
/// others).
pub(crate) fn subset_columns<'a>(
    access: &Access,
    table: &'a TableSchema,
    request: &SubsetRequest,
    parts: &SubsetParts,
) -> Result<Cow<'a, TableSchema>, ApiError> {
    match access {
        Access::Open | Access::Secret => Ok(Cow::Borrowed(table)),
        Access::Token(token) => token
            .scope_subset(
                table,
                request.where_text(),
                &parts.params,
                &parts.order_by_columns(),
            )
            .map(Cow::Owned)
            .map_err(ApiError::from),
    }
}
