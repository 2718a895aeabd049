//! Why auth refuses a request, in auth's own terms. The HTTP layer decides how each refusal
//! is answered (`http::error` maps them to statuses and bodies).

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Credentials are missing or wrong (who the request is cannot be told).
    #[error("{0}")]
    Unauthorized(String),
    /// The request is known but the rules do not allow what it asks.
    #[error("{0}")]
    Forbidden(String),
    /// A per-token limit is reached; try again after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// A request parameter is wrong, found while narrowing it to the rules.
    #[error("{param}: {message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// The rules themselves cannot be applied (a bug or a rules file out of step with the
    /// database); the details are for the log, not the client.
    #[error("{0}")]
    Internal(String),
}
