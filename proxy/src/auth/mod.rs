//! Who may read and write what (proxy/ARCHITECTURE.md, "Auth").
//!
//! Auth is on once `--secret`, or a JWT key with `--rules`, is configured. Every request then
//! proves who it is:
//! - `?secret=` (Electric's server-to-server secret): full access, as without auth (writes
//!   still need `--writable`); the only way to `DELETE /v1/shape`.
//! - a JWT (`Authorization: Bearer`, or `?token=` for clients that cannot set headers, e.g.
//!   an `EventSource`), verified by [`token`]; its claims feed the [`rules`]: a table without
//!   rules is invisible, a rule's row filter (claims bound as parameters, [`claims`]) is ANDed
//!   into the shape's `where` on the server ([`read`]), and writes are checked per mutation,
//!   against the old and the new row, inside the write transaction ([`write`]).
//!
//! Nothing a client sends can widen a filter: the client's `where` is parsed on its own and
//! conjoined with the filter's tree, and the filter (with its claim values) is part of the
//! shape's identity, so two users never share a filtered shape. Per-token [`limits`] keep one
//! token from crowding out the others.

pub mod claims;
pub mod config;
pub mod error;
pub mod limits;
pub mod read;
pub mod rules;
pub mod token;
pub mod write;

use std::sync::Arc;

use shapes::definition::fnv1a_64;
use shapes::schema::QualifiedName;
use tokio_postgres::Client;

use claims::Claims;
use config::AuthConfig;
pub use error::AuthError;
use limits::{Limited, Limits, LiveGuard};
use rules::{Rules, RulesError};
use token::{KeyError, TokenVerifier};

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("{0}")]
    Flags(String),
    #[error("the rules do not fit the database:\n  {}", .0.join("\n  "))]
    Mismatch(Vec<String>),
    #[error("checking the rules against the database: {0}")]
    Catalog(#[from] crate::postgres::catalog::CatalogError),
}

/// The proxy's authentication and authorization, shared by every request.
#[derive(Debug)]
pub struct Auth {
    secret: Option<String>,
    verifier: Option<TokenVerifier>,
    rules: Arc<Rules>,
    limits: Limits,
    /// Longest request URL (path and query) accepted, in bytes.
    pub max_url_bytes: usize,
}

/// A request's credentials, as found by the HTTP layer (`http::credentials`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// `?secret=` (or Electric's old name `?api_secret=`).
    pub secret: Option<&'a str>,
    /// `Authorization: Bearer …`; `Err` for another scheme.
    pub bearer: Option<Result<&'a str, ()>>,
    /// `?token=`.
    pub query_token: Option<&'a str>,
}

/// What a request may do.
#[derive(Debug, Clone)]
pub enum Access {
    /// Auth is off: everything.
    Open,
    /// The secret: everything.
    Secret,
    /// A verified token: what the rules allow its claims.
    Token(Arc<TokenAccess>),
}

impl Access {
    /// When this access ends: a token's `exp` (live responses end there); never for the
    /// secret or without auth.
    pub fn expires_at(&self) -> Option<std::time::SystemTime> {
        match self {
            Access::Open | Access::Secret => None,
            Access::Token(token) => token::expiry(&token.claims),
        }
    }
}

/// A verified token and the rules it is judged by.
#[derive(Debug)]
pub struct TokenAccess {
    pub claims: Claims,
    /// A hash of the token's text: the key of its limits.
    pub key: u64,
    pub rules: Arc<Rules>,
}

impl TokenAccess {
    /// The `sub` claim, when it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(|v| v.as_str())
    }

    /// Whether `column` of `table` may be read with this token.
    pub fn can_read_column(&self, table: &QualifiedName, column: &str) -> bool {
        self.rules
            .table(table)
            .is_some_and(|rule| rule.read.is_some() && rule.readable(column))
    }
}

impl Auth {
    /// No authentication: everything is open.
    pub fn off() -> Self {
        let defaults = AuthConfig::default();
        Self {
            secret: None,
            verifier: None,
            rules: Arc::default(),
            limits: Limits::new(0, 0),
            max_url_bytes: defaults.max_url_bytes,
        }
    }

    /// Builds auth from the flags: reads the key file and the rules, and checks the rules
    /// against the database (`client`).
    pub async fn load(
        config: &AuthConfig,
        secret: Option<&str>,
        client: &Client,
    ) -> Result<Self, AuthSetupError> {
        let has_key = config.jwt_secret.is_some() || config.jwt_public_key.is_some();
        match (has_key, config.rules.is_some()) {
            (true, false) => {
                return Err(AuthSetupError::Flags(
                    "--jwt-secret/--jwt-public-key need --rules FILE: without rules a token can \
                     read and write nothing (see the README's Auth section)"
                        .into(),
                ));
            }
            (false, true) => {
                return Err(AuthSetupError::Flags(
                    "--rules needs a way to verify tokens: --jwt-secret (HS256) or \
                     --jwt-public-key FILE (RS256/ES256)"
                        .into(),
                ));
            }
            _ => {}
        }
        if !has_key && (config.jwt_issuer.is_some() || config.jwt_audience.is_some()) {
            return Err(AuthSetupError::Flags(
                "--jwt-issuer/--jwt-audience need --jwt-secret or --jwt-public-key".into(),
            ));
        }
        if secret == Some("") {
            return Err(AuthSetupError::Flags("--secret is empty".into()));
        }
        let verifier = if has_key {
            Some(TokenVerifier::new(
                config.jwt_secret.as_deref(),
                config.jwt_public_key.as_deref(),
                config.jwt_issuer.clone(),
                config.jwt_audience.clone(),
            )?)
        } else {
            None
        };
        let rules = match &config.rules {
            Some(path) => {
                let rules = Rules::load(path)?;
                check_rules(&rules, client).await?;
                rules
            }
            None => Rules::default(),
        };
        Ok(Self {
            secret: secret.map(str::to_owned),
            verifier,
            rules: Arc::new(rules),
            limits: Limits::new(
                config.max_new_shapes_per_minute,
                config.max_live_connections_per_token,
            ),
            max_url_bytes: config.max_url_bytes,
        })
    }

    /// Whether requests must authenticate.
    pub fn is_on(&self) -> bool {
        self.secret.is_some() || self.verifier.is_some()
    }

    /// Whether `--secret` is set.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Who the request is: 401 when auth is on and its credentials are missing or wrong.
    pub fn access(&self, credentials: Credentials<'_>) -> Result<Access, AuthError> {
        if !self.is_on() {
            return Ok(Access::Open);
        }
        if let Some(given) = credentials.secret {
            return match &self.secret {
                Some(expected) if constant_time_eq(expected.as_bytes(), given.as_bytes()) => {
                    Ok(Access::Secret)
                }
                _ => Err(AuthError::Unauthorized("the secret is wrong".into())),
            };
        }
        let bearer = match credentials.bearer {
            Some(Err(())) => {
                return Err(AuthError::Unauthorized(
                    "the Authorization header must be `Bearer <token>`".into(),
                ));
            }
            Some(Ok(token)) => Some(token),
            None => None,
        };
        let token = match (bearer, credentials.query_token) {
            (Some(a), Some(b)) if a != b => {
                return Err(AuthError::Unauthorized(
                    "two different tokens (Authorization header and ?token=): send one".into(),
                ));
            }
            (Some(token), _) | (None, Some(token)) => token,
            (None, None) => return Err(AuthError::Unauthorized(self.missing_credentials())),
        };
        let Some(verifier) = &self.verifier else {
            return Err(AuthError::Unauthorized(
                "this shapesync accepts no tokens, only its secret (?secret=…)".into(),
            ));
        };
        let claims = verifier.verify(token).map_err(AuthError::Unauthorized)?;
        Ok(Access::Token(Arc::new(TokenAccess {
            claims,
            key: fnv1a_64(token.as_bytes()),
            rules: self.rules.clone(),
        })))
    }

    fn missing_credentials(&self) -> String {
        match (&self.secret, &self.verifier) {
            (Some(_), None) => "this shapesync requires a secret: add ?secret=…".into(),
            _ => "this shapesync requires a token: send `Authorization: Bearer <jwt>` \
                  (or ?token=<jwt>)"
                .into(),
        }
    }

    /// Full access only (the secret, or auth off): 401 without credentials, 403 with a token.
    pub fn require_full_access(
        &self,
        credentials: Credentials<'_>,
        what: &str,
    ) -> Result<(), AuthError> {
        match self.access(credentials)? {
            Access::Open | Access::Secret => Ok(()),
            Access::Token(_) => Err(AuthError::Forbidden(format!(
                "{what} needs the secret (?secret=…); a token is not enough"
            ))),
        }
    }

    /// Counts a new shape against the token's limit (other access is not limited).
    pub fn admit_new_shape(&self, access: &Access) -> Result<(), AuthError> {
        match access {
            Access::Token(token) => self.limits.admit_new_shape(token.key).map_err(too_many),
            _ => Ok(()),
        }
    }

    /// Holds a live connection against the token's limit until the guard drops.
    pub fn live_connection(&self, access: &Access) -> Result<Option<LiveGuard>, AuthError> {
        match access {
            Access::Token(token) => self
                .limits
                .live_connection(token.key)
                .map(Some)
                .map_err(too_many),
            _ => Ok(None),
        }
    }
}

fn too_many(limited: Limited) -> AuthError {
    AuthError::TooManyRequests {
        message: limited.message,
        retry_after: limited.retry_after,
    }
}

/// Every table named in the rules must exist, and its rules must fit its columns.
async fn check_rules(rules: &Rules, client: &Client) -> Result<(), AuthSetupError> {
    let mut problems = Vec::new();
    for rule in rules.tables() {
        // The tables the rule's subqueries read.
        let mut others = std::collections::HashMap::new();
        for inner in rule.subquery_tables() {
            match crate::postgres::catalog::load_table(client, &inner).await {
                Ok(schema) => {
                    others.insert(inner, std::sync::Arc::new(schema));
                }
                Err(crate::postgres::catalog::CatalogError::Query(e)) => {
                    return Err(crate::postgres::catalog::CatalogError::Query(e).into());
                }
                Err(other) => problems.push(format!(
                    "[tables.{}] a subquery of its rules reads {inner}: {other}",
                    rule.table
                )),
            }
        }
        let lookup = |name: &QualifiedName| others.get(name).cloned();
        match crate::postgres::catalog::load_table(client, &rule.table).await {
            Ok(table) => problems.extend(Rules::check_against(rule, &table, &lookup)),
            Err(crate::postgres::catalog::CatalogError::Query(e)) => {
                return Err(crate::postgres::catalog::CatalogError::Query(e).into());
            }
            Err(other) => problems.push(format!("[tables.{}] {other}", rule.table)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AuthSetupError::Mismatch(problems))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_only() -> Auth {
        Auth {
            secret: Some("s3cret".into()),
            ..Auth::off()
        }
    }

    #[test]
    fn without_auth_everything_is_open() {
        let access = Auth::off().access(Credentials::default()).unwrap();
        assert!(matches!(access, Access::Open));
    }

    #[test]
    fn the_secret_gives_full_access_and_nothing_else_does() {
        let auth = secret_only();
        let with = |secret| {
            auth.access(Credentials {
                secret,
                ..Credentials::default()
            })
        };
        assert!(matches!(with(Some("s3cret")), Ok(Access::Secret)));
        assert!(matches!(
            with(Some("s3cre")),
            Err(AuthError::Unauthorized(_))
        ));
        assert!(matches!(with(None), Err(AuthError::Unauthorized(m)) if m.contains("secret")));
        let as_token = auth.access(Credentials {
            bearer: Some(Ok("s3cret")),
            ..Credentials::default()
        });
        assert!(matches!(as_token, Err(AuthError::Unauthorized(m)) if m.contains("no tokens")));
    }
}
