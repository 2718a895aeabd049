//! What can end a replication session, split into transient (reconnect with backoff) and
//! definite (stop, log an ERROR and tell the caller, with what to do about it).

use std::time::Duration;

use pgwire_replication::PgWireError;
use shapes::schema::quote_identifier;

use crate::postgres::DatabaseError;
use crate::replication::assembly::AssemblyError;
use crate::replication::pgoutput::DecodeError;
use crate::replication::setup::SetupError;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("invalid replication settings: {0}")]
    Config(String),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("preparing replication: {0}")]
    Setup(#[from] SetupError),
    #[error(
        "Postgres refused the replication login of role {user}: {message}. Check the user and \
         password in the database URL, and that pg_hba.conf admits replication connections"
    )]
    Authentication { user: String, message: String },
    #[error(
        "role {user} may not stream changes: {message}. As a superuser run: ALTER ROLE {} WITH \
         REPLICATION;",
        quote_identifier(.user)
    )]
    NotReplicationRole { user: String, message: String },
    #[error("replication slot {slot} is in use by another process: {message}")]
    SlotBusy { slot: String, message: String },
    #[error(
        "replication slot {slot} has been in use by another process for {waited:?}: {message}. \
         Stop the other consumer of the slot, or give this proxy a slot of its own"
    )]
    SlotBusyTooLong {
        slot: String,
        waited: Duration,
        message: String,
    },
    #[error("replication slot {slot} can no longer stream: {message}")]
    SlotInvalidated { slot: String, message: String },
    #[error("replication slot {slot} does not exist: {message}")]
    SlotMissing { slot: String, message: String },
    #[error("decoding the replication stream at {at}: {source}")]
    Decode {
        /// Where the message starts in the WAL.
        at: shapes::lsn::Lsn,
        source: DecodeError,
    },
    #[error("assembling the replication stream: {0}")]
    Assembly(#[from] AssemblyError),
    #[error("Postgres ended the replication session: {message}")]
    Server {
        code: Option<String>,
        message: String,
    },
    #[error("replication connection lost: {0}")]
    Connection(String),
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Internal(String),
}

impl ReplicationError {
    /// Worth reconnecting for. Slot trouble counts as transient: the next attempt recreates
    /// an invalidated or missing slot, and a busy one is waited for (up to a limit, after
    /// which the task reports [`SlotBusyTooLong`](Self::SlotBusyTooLong)).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(err) => err.is_transient(),
            Self::Setup(err) => err.is_transient(),
            Self::SlotBusy { .. }
            | Self::SlotInvalidated { .. }
            | Self::SlotMissing { .. }
            | Self::Connection(_) => true,
            Self::Server { code, .. } => code.as_deref().is_some_and(transient_sqlstate),
            Self::Config(_)
            | Self::Authentication { .. }
            | Self::NotReplicationRole { .. }
            | Self::SlotBusyTooLong { .. }
            | Self::Decode { .. }
            | Self::Assembly(_)
            | Self::Protocol(_)
            | Self::Internal(_) => false,
        }
    }

    /// Classifies a failure of the ordinary connection that prepares each session: server
    /// errors are read like the replication connection's (a wrong password is the same
    /// definite error on both).
    pub(crate) fn from_database(err: DatabaseError, user: &str, slot: &str) -> Self {
        let source = match &err {
            DatabaseError::Connect { source, .. } | DatabaseError::Query(source) => source,
            _ => return Self::Database(err),
        };
        match source.as_db_error() {
            Some(db) => from_server_text(
                format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                user,
                slot,
            ),
            None => Self::Database(err),
        }
    }

    /// Classifies an error of the replication client. Its server errors carry only
    /// `message (SQLSTATE code)`, so the SQLSTATE is read back from the text.
    pub(crate) fn from_pgwire(err: PgWireError, user: &str, slot: &str) -> Self {
        match err {
            PgWireError::Io(io) => Self::Connection(io.to_string()),
            PgWireError::Task(text) => Self::Connection(text),
            // The client reports "worker already joined" when a receive was abandoned while
            // it collected the worker's result (our select on shutdown or acknowledgements
            // can do that): the session is over, its own error lost; reconnecting finds out.
            PgWireError::Internal(text) => Self::Connection(text),
            PgWireError::Auth(message) => Self::Authentication {
                user: user.to_owned(),
                message,
            },
            PgWireError::Server(text) => from_server_text(text, user, slot),
            other => Self::Protocol(other.to_string()),
        }
    }
}

fn from_server_text(text: String, user: &str, slot: &str) -> ReplicationError {
    let (message, code) = split_sqlstate(&text);
    let (message, code) = (message.to_owned(), code.map(str::to_owned));
    let lower = message.to_lowercase();
    let slot = slot.to_owned();
    match code.as_deref() {
        Some("28P01" | "28000") => ReplicationError::Authentication {
            user: user.to_owned(),
            message,
        },
        Some("42501") if lower.contains("replication") => ReplicationError::NotReplicationRole {
            user: user.to_owned(),
            message,
        },
        Some("55006") => ReplicationError::SlotBusy { slot, message },
        Some("42704") if lower.contains("replication slot") => {
            ReplicationError::SlotMissing { slot, message }
        }
        _ if is_invalidation(&lower) => ReplicationError::SlotInvalidated { slot, message },
        _ => ReplicationError::Server { code, message },
    }
}

/// The ways Postgres 13–17 say a slot cannot stream any more because the WAL it needs is
/// gone.
fn is_invalidation(lower_message: &str) -> bool {
    lower_message.contains("can no longer get changes from replication slot")
        || lower_message.contains("has been invalidated")
        || lower_message.contains("cannot read from logical replication slot")
        || (lower_message.contains("requested wal segment")
            && lower_message.contains("has already been removed"))
}

/// `"message (SQLSTATE 28P01)"` → `("message", Some("28P01"))`.
fn split_sqlstate(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once(" (SQLSTATE ") {
        Some((message, rest)) => match rest.strip_suffix(')') {
            Some(code) if code.len() == 5 => (message, Some(code)),
            _ => (text, None),
        },
        None => (text, None),
    }
}

/// The SQLSTATE classes worth a reconnect: 08 connection exception, 57 operator
/// intervention (shutdown, crash recovery, terminated backend), 53 insufficient resources
/// (too many connections), 40 transaction rollback.
fn transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "57" | "53" | "40"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(text: &str) -> ReplicationError {
        ReplicationError::from_pgwire(PgWireError::Server(text.to_owned()), "app", "shapesync")
    }

    #[test]
    fn server_errors_are_classified_by_sqlstate() {
        let bad_password =
            server("password authentication failed for user \"app\" (SQLSTATE 28P01)");
        assert!(matches!(
            bad_password,
            ReplicationError::Authentication { .. }
        ));
        assert!(!bad_password.is_transient());

        let not_replication =
            server("must be superuser or replication role to start walsender (SQLSTATE 42501)");
        assert!(!not_replication.is_transient());
        assert!(
            not_replication
                .to_string()
                .contains("ALTER ROLE \"app\" WITH REPLICATION;")
        );

        let busy = server("replication slot \"shapesync\" is active for PID 42 (SQLSTATE 55006)");
        assert!(matches!(busy, ReplicationError::SlotBusy { .. }));
        assert!(busy.is_transient());

        let terminated =
            server("terminating connection due to administrator command (SQLSTATE 57P01)");
        assert!(terminated.is_transient());

        let missing = server("replication slot \"shapesync\" does not exist (SQLSTATE 42704)");
        assert!(matches!(missing, ReplicationError::SlotMissing { .. }));

        let syntax = server("syntax error (SQLSTATE 42601)");
        assert!(!syntax.is_transient());
        let unknown = server("something without a code");
        assert!(!unknown.is_transient());
    }

    #[test]
    fn invalidated_slots_are_recognised_in_every_wording() {
        for text in [
            "can no longer get changes from replication slot \"s\" (SQLSTATE 55000)",
            "cannot read from logical replication slot \"s\" (SQLSTATE 55000)",
            "requested WAL segment 000000010000000000000003 has already been removed \
             (SQLSTATE 58P01)",
        ] {
            let err = server(text);
            assert!(
                matches!(err, ReplicationError::SlotInvalidated { .. }),
                "{text}: {err:?}"
            );
            assert!(err.is_transient());
        }
    }

    #[test]
    fn io_errors_are_transient_and_protocol_errors_definite() {
        let io = PgWireError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(ReplicationError::from_pgwire(io, "u", "s").is_transient());
        let protocol = PgWireError::Protocol("bad frame".into());
        assert!(!ReplicationError::from_pgwire(protocol, "u", "s").is_transient());
    }
}
