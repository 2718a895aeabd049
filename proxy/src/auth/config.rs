//! Auth flags (flattened into the options of `dev` and `serve`) and what they resolve to.
//! `--secret` stays with the proxy's other options: it predates the rest.

use std::path::PathBuf;

use clap::Args;

/// JWT bearer tokens, rules and per-token limits. Each flag has a `SHAPESYNC_*` equivalent.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Key of HS256-signed JWT bearer tokens (shared with the identity provider). Needs --rules.
    #[arg(long, env = "SHAPESYNC_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key (-----BEGIN PUBLIC KEY-----) of RS256 (RSA) or ES256 (P-256) signed JWT
    /// bearer tokens. Needs --rules.
    #[arg(long, env = "SHAPESYNC_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Tokens must carry this `iss` claim.
    #[arg(long, env = "SHAPESYNC_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Tokens must carry this `aud` claim (or list it).
    #[arg(long, env = "SHAPESYNC_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Rules file (TOML): per table, which rows and columns a token may read and which writes
    /// it may make. Tables without rules are invisible to tokens. See rules.example.toml.
    #[arg(long, env = "SHAPESYNC_RULES", value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// New shapes one token may create per minute (bursts up to that); 0: no limit. Past it:
    /// 429 with retry-after. Existing shapes are not counted.
    #[arg(
        long,
        env = "SHAPESYNC_MAX_NEW_SHAPES_PER_MINUTE",
        default_value_t = 60
    )]
    pub max_new_shapes_per_minute: u32,

    /// Live requests (long-poll or SSE) one token may have open at once; 0: no limit. Past
    /// it: 429 with retry-after.
    #[arg(
        long,
        env = "SHAPESYNC_MAX_LIVE_CONNECTIONS_PER_TOKEN",
        default_value_t = 64
    )]
    pub max_live_connections_per_token: u32,

    /// Longest request URL (path and query) accepted, in bytes; longer ones get 414. Request
    /// heads (URL and headers) beyond 8 KiB are refused by the HTTP layer itself (431), as
    /// nginx and most proxies do: keeping that buffer small is what keeps idle live
    /// connections cheap.
    #[arg(long, env = "SHAPESYNC_MAX_URL_BYTES", default_value_t = 6 * 1024)]
    pub max_url_bytes: usize,
}

/// The auth settings once flags and defaults are resolved (files are read at start-up).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub rules: Option<PathBuf>,
    pub max_new_shapes_per_minute: u32,
    pub max_live_connections_per_token: u32,
    pub max_url_bytes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            rules: None,
            max_new_shapes_per_minute: 60,
            max_live_connections_per_token: 64,
            max_url_bytes: 6 * 1024,
        }
    }
}

impl From<AuthArgs> for AuthConfig {
    fn from(args: AuthArgs) -> Self {
        Self {
            jwt_secret: args.jwt_secret,
            jwt_public_key: args.jwt_public_key,
            jwt_issuer: args.jwt_issuer,
            jwt_audience: args.jwt_audience,
            rules: args.rules,
            max_new_shapes_per_minute: args.max_new_shapes_per_minute,
            max_live_connections_per_token: args.max_live_connections_per_token,
            max_url_bytes: args.max_url_bytes,
        }
    }
}

impl AuthConfig {
    /// Whether any auth flag was given (with `secret`, the proxy's `--secret`).
    pub fn any_given(&self, secret: Option<&str>) -> bool {
        secret.is_some()
            || self.jwt_secret.is_some()
            || self.jwt_public_key.is_some()
            || self.rules.is_some()
    }
}
