//! Connections for snapshots, kept for the next one. A new connection costs a forked backend
//! and an authentication, several milliseconds, more than the snapshot of a small shape: an
//! app creating a shape per user would spend most of its creations connecting. At most
//! `--max-concurrent-snapshots` idle connections are kept (as many as can run at once), each
//! handed back only after a snapshot that ended cleanly (its transaction committed), and all
//! of them are closed when replication closes for idleness (a database that scales to zero
//! must see no connection).

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use tokio_postgres::Client;

use super::ShapeError;

#[derive(Debug)]
pub struct SnapshotClients {
    database_url: String,
    idle: Mutex<Vec<Client>>,
    keep: usize,
}

/// A connection taken from [`SnapshotClients`]: closed when dropped, kept with
/// [`SnapshotClient::reuse`].
pub struct SnapshotClient<'a> {
    client: Option<Client>,
    pool: &'a SnapshotClients,
}

impl SnapshotClients {
    pub fn new(database_url: String, keep: usize) -> Self {
        Self {
            database_url,
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An idle connection, or a new one, with the display settings both snapshot paths share.
    pub async fn get(&self) -> Result<SnapshotClient<'_>, ShapeError> {
        let idle = loop {
            let Some(client) = self.lock().pop() else {
                break None;
            };
            if !client.is_closed() {
                break Some(client);
            }
        };
        let client = match idle {
            Some(client) => client,
            None => self.connect().await?,
        };
        Ok(SnapshotClient {
            client: Some(client),
            pool: self,
        })
    }

    /// Closes every idle connection.
    pub fn close_idle(&self) {
        self.lock().clear();
    }

    async fn connect(&self) -> Result<Client, ShapeError> {
        let mut config: tokio_postgres::Config = self
            .database_url
            .parse()
            .map_err(|e| ShapeError::Internal(format!("database URL: {e}")))?;
        config.options(shapes::display::STARTUP_OPTIONS);
        config.application_name("shapesync-snapshot");
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| ShapeError::unavailable(format!("cannot connect for a snapshot: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SnapshotClient<'_> {
    /// The snapshot ended cleanly (no transaction open): keep the connection for the next.
    pub fn reuse(mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut idle = self.pool.lock();
        if !client.is_closed() && idle.len() < self.pool.keep {
            idle.push(client);
        }
    }
}

impl Deref for SnapshotClient<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client.as_ref().expect("taken only by reuse")
    }
}

impl DerefMut for SnapshotClient<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("taken only by reuse")
    }
}
