//! The write path's connections to Postgres: a small pool, each connection with the display
//! settings shapes use (so returned rows read exactly as shapes send them) and a cache of
//! prepared statements (the statements are generated per table and column set).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::postgres::{self, DatabaseError};

/// Session settings that make text output match pgoutput's and snapshots'.
const SESSION_SETTINGS: &str = shapes::display::SET_STATEMENTS;

/// Prepared statements kept per connection before the cache is emptied.
const MAX_CACHED_STATEMENTS: usize = 512;

#[derive(Debug)]
pub struct ConnectionPool {
    url: String,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

/// One connection and its prepared statements.
pub struct Connection {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("statements", &self.statements.len())
            .finish()
    }
}

/// A connection borrowed from the pool; returned on drop unless it was marked broken.
#[derive(Debug)]
pub struct PooledConnection<'a> {
    connection: Option<Connection>,
    pool: &'a ConnectionPool,
    /// Set while a transaction is open: dropping mid-transaction discards the connection.
    pub in_transaction: bool,
    _permit: Option<SemaphorePermit<'a>>,
}

impl ConnectionPool {
    pub fn new(url: String, size: usize) -> Self {
        Self {
            url,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    /// A connection: an idle one, or a new one.
    pub async fn get(&self) -> Result<PooledConnection<'_>, DatabaseError> {
        // The semaphore is never closed, so this always holds a permit.
        let permit = self.permits.acquire().await.ok();
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let connection = match idle.filter(|c| !c.client.is_closed()) {
            Some(connection) => connection,
            None => {
                let client = postgres::connect(&self.url).await?;
                client.batch_execute(SESSION_SETTINGS).await?;
                Connection {
                    client,
                    statements: HashMap::new(),
                }
            }
        };
        Ok(PooledConnection {
            connection: Some(connection),
            pool: self,
            in_transaction: false,
            _permit: permit,
        })
    }
}

impl PooledConnection<'_> {
    fn connection(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }

    pub fn client(&mut self) -> &Client {
        &self.connection().client
    }

    /// The prepared statement for `sql`, preparing it on first use.
    pub async fn prepare(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let connection = self.connection();
        if let Some(statement) = connection.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = connection.client.prepare(sql).await?;
        if connection.statements.len() >= MAX_CACHED_STATEMENTS {
            connection.statements.clear();
        }
        connection
            .statements
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Runs a cached statement.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare(sql).await?;
        self.client().query(&statement, params).await
    }

    pub async fn execute(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client().batch_execute(sql).await
    }

    /// Forgets prepared statements (after the schema changed under them).
    pub fn forget_statements(&mut self) {
        self.connection().statements.clear();
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.in_transaction || connection.client.is_closed() {
            return;
        }
        self.pool
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(connection);
    }
}
