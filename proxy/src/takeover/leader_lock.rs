//! The lock that makes one instance per replication slot the writer: a Postgres session
//! advisory lock, held on a connection of its own for as long as the instance streams.
//!
//! A second instance started on the same database and slot (a rolling deploy) finds it taken,
//! serves as a standby, and waits for it: Postgres releases a session lock when its
//! connection ends, so an instance that exits, crashes or loses its database lets the next
//! one take over.

use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::postgres::{self, DatabaseError};

/// The advisory lock's first key ("shaq"); the second is `hashtext(slot)`.
const LOCK_CLASS: i32 = 0x7368_6171;
/// How often the holder checks that its connection (and so the lock) is still there.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The lock, held: dropping it closes its connection, which releases it.
pub struct LeaderLock {
    client: Client,
    database_url: String,
    slot: String,
}

impl LeaderLock {
    /// Takes the lock if nobody holds it.
    pub async fn try_acquire(
        database_url: &str,
        slot: &str,
    ) -> Result<Option<Self>, DatabaseError> {
        let client = postgres::connect(database_url).await?;
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &slot],
            )
            .await
            .map_err(DatabaseError::Query)?;
        Ok(row.get::<_, bool>(0).then(|| Self {
            client,
            database_url: database_url.to_owned(),
            slot: slot.to_owned(),
        }))
    }

    /// Waits until the lock is free and takes it; `None` if `stop` comes first. Reconnects
    /// while the database is unreachable.
    pub async fn wait(database_url: &str, slot: &str, stop: &CancellationToken) -> Option<Self> {
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = async {
                let client = postgres::connect(database_url).await?;
                client
                    .execute(
                        "SELECT pg_advisory_lock($1, hashtext($2))",
                        &[&LOCK_CLASS, &slot],
                    )
                    .await
                    .map_err(DatabaseError::Query)?;
                Ok::<_, DatabaseError>(client)
            };
            tokio::select! {
                // Dropping the waiting query's connection ends its wait in Postgres too.
                () = stop.cancelled() => return None,
                taken = attempt => match taken {
                    Ok(client) => {
                        return Some(Self {
                            client,
                            database_url: database_url.to_owned(),
                            slot: slot.to_owned(),
                        });
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "waiting for the running instance's lock; retrying");
                    }
                },
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// The process id of the backend holding the lock (the running instance's connection),
    /// if it can be found: for the standby's log line.
    pub async fn holder(database_url: &str, slot: &str) -> Option<i32> {
        let client = postgres::connect(database_url).await.ok()?;
        let row = client
            .query_opt(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND classid = $1::int4::oid AND objid = hashtext($2)::oid AND objsubid = 2
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&LOCK_CLASS, &slot],
            )
            .await
            .ok()??;
        Some(row.get(0))
    }

    /// Keeps the lock until `shutdown`. If its connection breaks (the database restarted,
    /// say), takes it again on a new one; if another instance took it meanwhile, this one must
    /// stop writing: it cancels `shutdown`. While `quiet()` (the replication connection is
    /// closed for idleness) it sends the database no query.
    pub async fn keep(mut self, quiet: impl Fn() -> bool, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
            if !self.client.is_closed()
                && (quiet() || self.client.simple_query("SELECT 1").await.is_ok())
            {
                continue;
            }
            match Self::try_acquire(&self.database_url, &self.slot).await {
                Ok(Some(again)) => {
                    tracing::info!("took the instance lock again after its connection broke");
                    self = again;
                }
                Ok(None) => {
                    tracing::error!(
                        "another shapesync took over the replication slot's lock while this \
                         one's database connection was broken: stopping"
                    );
                    shutdown.cancel();
                    return;
                }
                // The database is unreachable: nobody else can take the lock either.
                Err(err) => {
                    tracing::warn!(error = %err, "cannot check the instance lock; retrying")
                }
            }
        }
    }
}
