//! Ordinary (non-replication) connections to the user's Postgres, and the checks made before
//! serving.

pub mod catalog;
pub mod ctype;
pub mod proxy_schema;
pub mod table_catalog;

use tokio_postgres::{Client, NoTls};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    #[error("cannot connect to Postgres at {target}: {}", describe(.source))]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "Postgres has wal_level = {actual}, but shapesync reads changes through logical \
         replication, which needs wal_level = logical. Run `ALTER SYSTEM SET wal_level = logical;` \
         as a superuser and restart Postgres (on a managed service, enable logical replication in \
         its settings)"
    )]
    WalLevel { actual: String },
    #[error("query failed: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
}

impl DatabaseError {
    /// Worth retrying with backoff (the server is starting, restarting or unreachable), as
    /// opposed to a definite refusal (bad password, bad URL, wrong settings).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { source, .. } | Self::Query(source) => is_transient(source),
            Self::InvalidUrl(_) | Self::WalLevel { .. } => false,
        }
    }
}

/// A driver error as a person needs it: Postgres' own message, detail, hint and SQLSTATE
/// (the driver's `Display` says only "db error"), or the I/O cause.
pub fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

/// Whether a driver error is worth retrying.
pub fn is_transient(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        // Closed connections and I/O errors carry no SQLSTATE.
        None => {
            err.is_closed()
                || std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>())
        }
        Some(code) => is_transient_sqlstate(code.code()),
    }
}

/// Whether a SQLSTATE's class is worth retrying: 08 connection exception, 57 operator
/// intervention (shutdown, recovery), 53 insufficient resources, 40 transaction rollback
/// (serialization, deadlock). The code comes from the server, so it may be anything.
fn is_transient_sqlstate(code: &str) -> bool {
    // `get`, not `[..2]`: a short code, or one whose second byte is inside a character, has no
    // class (and must not panic).
    matches!(code.get(..2), Some("08" | "57" | "53" | "40"))
}

/// Connects, driving the connection on its own task; the task ends when the client is dropped.
pub async fn connect(url: &str) -> Result<Client, DatabaseError> {
    let config: tokio_postgres::Config = url.parse().map_err(DatabaseError::InvalidUrl)?;
    let target = describe_target(&config);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| DatabaseError::Connect { target, source })?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "postgres connection closed");
        }
    });
    Ok(client)
}

/// `host:port/dbname` without credentials, for messages.
pub fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}

/// Refuses to go on unless the server can do logical replication.
pub async fn check_wal_level(client: &Client) -> Result<(), DatabaseError> {
    let row = client.query_one("SHOW wal_level", &[]).await?;
    let actual: String = row.get(0);
    if actual == "logical" {
        Ok(())
    } else {
        Err(DatabaseError::WalLevel { actual })
    }
}

/// A shared connection for catalog and setup queries, reconnected when it breaks.
#[derive(Debug)]
pub struct MetadataClient {
    url: String,
    client: tokio::sync::Mutex<Option<std::sync::Arc<Client>>>,
}

impl MetadataClient {
    pub fn new(url: String) -> Self {
        Self {
            url,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection, (re)connecting if it is missing or closed.
    pub async fn get(&self) -> Result<std::sync::Arc<Client>, DatabaseError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref()
            && !client.is_closed()
        {
            return Ok(client.clone());
        }
        let client = std::sync::Arc::new(connect(&self.url).await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Closes the connection (once its current users are done); the next `get` opens one.
    pub async fn close(&self) {
        self.client.lock().await.take();
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient_sqlstate;
    use rstest::rstest;

    #[rstest]
    fn sqlstate_classes_of_lost_connections_shutdowns_and_conflicts_are_retried(
        #[values("08006", "57P01", "53300", "40001", "40P01")] code: &str,
    ) {
        assert!(is_transient_sqlstate(code), "{code}");
    }

    #[rstest]
    fn sqlstate_classes_of_definite_errors_are_not_retried(
        #[values("23505", "42P01", "28P01", "XX000")] code: &str,
    ) {
        assert!(!is_transient_sqlstate(code), "{code}");
    }

    #[rstest]
    fn short_empty_and_non_ascii_sqlstates_are_definite_not_a_panic(
        #[values("", "0", "4", "é", "0é", "€0001", "4\u{0}")] code: &str,
    ) {
        assert!(!is_transient_sqlstate(code), "{code:?}");
    }

    #[test]
    fn a_class_is_the_first_two_bytes() {
        // A class is two bytes; what follows may be anything.
        assert!(is_transient_sqlstate("08"));
        assert!(is_transient_sqlstate("40é"));
    }
}
