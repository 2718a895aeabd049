//! A request's credentials, wherever it carries them: `?secret=` (or Electric's older name
//! `?api_secret=`), `?token=`, and `Authorization: Bearer`. One reader for every endpoint
//! (`/v1/shape` in all its methods, `/v1/mutations`), run before anything else about the
//! request is judged, so a caller without credentials learns nothing from validation errors.

use axum::http::{HeaderMap, header};

use crate::auth::{Access, Auth, Credentials};
use crate::http::error::ApiError;

/// The credentials found in a request, owned (the query string is parsed once here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCredentials {
    /// `secret` (or `api_secret`).
    pub secret: Option<String>,
    /// `token`: a JWT, for clients that cannot set an Authorization header.
    pub token: Option<String>,
    /// `Authorization: Bearer …`; `Err` for another scheme or a header that is not text.
    pub bearer: Option<Result<String, ()>>,
}

impl RequestCredentials {
    /// Reads only `secret`, `api_secret` and `token` from the query, and the Authorization
    /// header.
    pub fn of(headers: &HeaderMap, query: &str) -> Self {
        let mut found = Self::default();
        let mut api_secret = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "secret" => found.secret = Some(value.into_owned()),
                "api_secret" => api_secret = Some(value.into_owned()),
                "token" => found.token = Some(value.into_owned()),
                _ => {}
            }
        }
        found.secret = found.secret.or(api_secret);
        found.bearer = headers.get(header::AUTHORIZATION).map(|value| {
            let text = value.to_str().map_err(|_| ())?.trim();
            match text.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Ok(token.trim().to_owned())
                }
                _ => Err(()),
            }
        });
        found
    }

    /// The credentials as auth judges them.
    pub fn as_credentials(&self) -> Credentials<'_> {
        Credentials {
            secret: self.secret.as_deref(),
            bearer: self
                .bearer
                .as_ref()
                .map(|b| b.as_ref().map(String::as_str).map_err(|_| ())),
            query_token: self.token.as_deref(),
        }
    }

    /// Who the request is: 401 when auth is on and the credentials are missing or wrong.
    pub fn authenticate(&self, auth: &Auth) -> Result<Access, ApiError> {
        Ok(auth.access(self.as_credentials())?)
    }

    /// Full access only (the secret, or auth off): 401 without credentials, 403 with a token.
    pub fn require_full_access(&self, auth: &Auth, what: &str) -> Result<(), ApiError> {
        Ok(auth.require_full_access(self.as_credentials(), what)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn authorization_must_be_a_bearer_token() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert_eq!(RequestCredentials::of(&headers, "").bearer, Some(Err(())));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(
            RequestCredentials::of(&headers, "").bearer,
            Some(Ok("abc".to_owned()))
        );
    }

    #[test]
    fn the_query_carries_the_secret_under_either_name_and_the_token() {
        let none = HeaderMap::new();
        let found = RequestCredentials::of(&none, "table=t&api_secret=old&token=j");
        assert_eq!(found.secret.as_deref(), Some("old"));
        assert_eq!(found.token.as_deref(), Some("j"));
        let found = RequestCredentials::of(&none, "api_secret=old&secret=new");
        assert_eq!(found.secret.as_deref(), Some("new"), "`secret` wins");
        assert_eq!(
            RequestCredentials::of(&none, "secret"),
            RequestCredentials {
                secret: Some(String::new()),
                ..RequestCredentials::default()
            }
        );
    }
}
