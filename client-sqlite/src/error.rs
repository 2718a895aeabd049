//! The client's errors, in two kinds (see [`ClientError::is_transient`]): *transient* ones are
//! retried with backoff (the network, a busy server), *definite* ones stop the operation and
//! tell the user what to change (a wrong key, an unknown shape, a bad `where`).

use std::time::Duration;

/// Everything the client library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The server answered with a status that asks to try again later (5xx, 429).
    #[error("the server is busy or unavailable (HTTP {status}): {message}")]
    Unavailable {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The server refused the request for good (4xx other than 409/429).
    #[error("the server refused the request (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// One message of a response (an event of the stream, an element of a JSON body) is
    /// longer than the client accepts. Definite: asking again brings the same bytes.
    #[error(
        "the server sent a message of more than {limit} bytes in {what}, more than the client \
         accepts (SyncOptions::max_message_bytes): raise the limit if rows that large are \
         expected, or check what is between the client and the server"
    )]
    MessageTooLarge { limit: usize, what: &'static str },
    /// The server sent something that does not follow the protocol.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// The local database failed.
    #[error("local database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file is encrypted with another key, or is not a database.
    #[error(
        "cannot open {path}: the encryption key is wrong (or the file is not a shapesync \
         database); give the key it was created with (SHAPESYNC_CLIENT_KEY)"
    )]
    WrongKey { path: String },
    /// A key was given but this build has no encryption.
    #[error(
        "an encryption key was given but this build has no encryption: rebuild with \
         `--features encryption`"
    )]
    EncryptionUnavailable,
    /// An https:// URL but this build has no TLS.
    #[error("{url} needs TLS but this build has none: rebuild with `--features tls`")]
    TlsUnavailable { url: String },
    /// A shape definition or name the client does not know or cannot use.
    #[error("shape {name:?}: {message}")]
    Shape { name: String, message: String },
    /// A local write that cannot be queued (missing key column, unknown shape, …).
    #[error("invalid local write: {0}")]
    InvalidWrite(String),
    /// A Yjs update or document that cannot be decoded.
    #[error("Yjs document: {0}")]
    Yjs(String),
    /// The client is shutting down (or its database task stopped).
    #[error("the client is closed")]
    Closed,
    /// Gone offline (by [`crate::Client::set_online`]) while a request was in flight.
    #[error("offline")]
    Offline,
}

impl ClientError {
    /// Transient errors are retried with exponential backoff; the others stop and are shown.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Network(_) | Self::Unavailable { .. } | Self::Offline | Self::Protocol(_)
        )
    }

    /// How long the server asked us to wait (`retry-after`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(err: reqwest::Error) -> Self {
        // The source chain says why (refused, reset, timed out); reqwest's own text does not.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Network(message)
    }
}
