//! Writes: `POST /v1/mutations` (proxy/PROTOCOL.md, "Writes";
//! proxy/ARCHITECTURE.md, "The write path").
//!
//! A batch goes through these steps, each in its own module:
//! - `wire`: the JSON, parsed strictly (unknown fields are named with the mutation's index);
//! - `batch` + `validate`: each mutation checked against its table (`table`: catalog and the
//!   roles configuration gives columns) — exists, writable, primary key, columns writable,
//!   timestamp parsed and clamped (`clock`) — and, with auth, admitted by the request's
//!   `guard` (the rules' ops and columns; their row check runs inside the transaction, on the
//!   locked row before and the written row after);
//! - `values`: every value cast by Postgres before the write transaction (read-only), so a bad
//!   value rejects its mutation only;
//! - `apply`: one transaction — idempotency, row locks, last-write-wins planning (`lww`, pure),
//!   Yjs merges (`yjs`), set-based writes (`store`, `sql`: without savepoints, or, when Postgres
//!   refuses a row, run again with a bounded number of them), results recorded under their ids;
//! - the commit's LSN, from the replication stream ([`CommitWatch`]), for a bounded time.
//!
//! `gc` purges old tombstones, the registers of deleted rows and old mutation ids; `outcomes`
//! counts the answers for operators.

pub mod apply;
pub mod batch;
pub mod check_sql;
pub mod clock;
pub mod config;
pub mod error;
pub mod gc;
pub mod guard;
pub mod lww;
pub mod outcomes;
pub mod pool;
pub mod precondition;
pub mod refusal;
pub mod sql;
pub mod store;
pub mod table;
pub mod validate;
pub mod values;
pub mod wire;
pub mod yjs;

use std::sync::Arc;
use std::time::Duration;

use crate::postgres::table_catalog::TableCatalog;
use crate::replication::commit_watch::CommitWatch;
use crate::tombstones::TombstoneSpec;

pub use config::{WriteArgs, WriteConfig};
pub use error::MutationError;
pub use wire::{MutationRequest, MutationResponse};

use apply::Applied;
use guard::WriteGuard;
use outcomes::{OutcomeCounts, OutcomeTotals};
use pool::{ConnectionPool, PooledConnection};
use precondition::Precondition;
use table::TableCache;

/// Attempts of a transaction that fails transiently (deadlock, serialization, concurrent create).
const ATTEMPTS: u32 = 5;

/// The write path, shared by request handlers.
#[derive(Debug)]
pub struct MutationService {
    pool: ConnectionPool,
    tables: TableCache,
    config: WriteConfig,
    tombstones: Vec<TombstoneSpec>,
    commits: Arc<CommitWatch>,
    outcomes: OutcomeCounts,
}

impl MutationService {
    /// Connections are opened on first use.
    pub fn new(
        database_url: &str,
        config: WriteConfig,
        tombstones: Vec<TombstoneSpec>,
        commits: Arc<CommitWatch>,
        catalog: Arc<TableCatalog>,
    ) -> Self {
        Self {
            pool: ConnectionPool::new(database_url.to_owned(), config.max_connections),
            tables: TableCache::new(catalog),
            config,
            tombstones,
            commits,
            outcomes: OutcomeCounts::default(),
        }
    }

    pub fn config(&self) -> &WriteConfig {
        &self.config
    }

    pub fn tombstones(&self) -> &[TombstoneSpec] {
        &self.tombstones
    }

    /// How the mutations answered since the proxy started went.
    pub fn outcomes(&self) -> OutcomeTotals {
        self.outcomes.totals()
    }

    /// Applies a batch and answers it.
    pub async fn apply(&self, request: MutationRequest) -> Result<MutationResponse, MutationError> {
        self.apply_guarded(request, None).await
    }

    /// Applies a batch that `guard` (the auth rules of the request) must also allow.
    pub async fn apply_guarded(
        &self,
        request: MutationRequest,
        guard: Option<&dyn WriteGuard>,
    ) -> Result<MutationResponse, MutationError> {
        self.apply_checked(request, guard, None).await
    }

    /// Applies a batch whose rows must also meet `precondition` once locked (the sync
    /// protocols of `http::ecosystems`).
    pub async fn apply_checked(
        &self,
        request: MutationRequest,
        guard: Option<&dyn WriteGuard>,
        precondition: Option<Arc<dyn Precondition>>,
    ) -> Result<MutationResponse, MutationError> {
        let ids: Vec<String> = request.mutations.iter().map(|m| m.id.clone()).collect();
        let mut conn = self.pool.get().await?;
        let applied = match self
            .apply_on(&mut conn, request.clone(), guard, precondition.clone())
            .await
        {
            Err(err) if err.is_schema_change() => {
                // A table changed under cached statements: read the catalog again, once.
                self.tables.clear();
                conn.forget_statements();
                self.apply_on(&mut conn, request, guard, precondition)
                    .await?
            }
            other => other?,
        };
        drop(conn);
        self.outcomes.record(&applied.outcomes);
        let lsn = match (applied.txid, applied.wrote_rows) {
            (Some(xid), true) => self
                .commits
                .wait_for(xid, self.config.lsn_wait)
                .await
                .map(|lsn| lsn.as_u64().to_string()),
            _ => None,
        };
        let results = ids
            .into_iter()
            .zip(applied.outcomes)
            .map(|(id, outcome)| wire::MutationResult { id, outcome })
            .collect();
        Ok(MutationResponse {
            txid: applied.txid.map(|xid| xid.0),
            lsn,
            results,
        })
    }

    async fn apply_on(
        &self,
        conn: &mut PooledConnection<'_>,
        request: MutationRequest,
        guard: Option<&dyn WriteGuard>,
        precondition: Option<Arc<dyn Precondition>>,
    ) -> Result<Applied, MutationError> {
        let now = chrono::Utc::now().timestamp_micros();
        let preparation = batch::Preparation {
            tables: &self.tables,
            config: &self.config,
            tombstones: &self.tombstones,
            server_now: now,
            guard,
        };
        let mut batch = preparation.prepare(request, conn).await?;
        batch.precondition = precondition;
        values::check(conn, &mut batch).await?;
        let mut attempt = 1;
        let mut guarded_from = None;
        loop {
            match apply::run(conn, &batch, guarded_from).await {
                Ok(applied) => return Ok(applied),
                // Runs again at once with savepoints from that group on; the group is before
                // the first guarded one, so this ends.
                Err(MutationError::NeedsSavepoints { group }) => {
                    rollback(conn).await;
                    tracing::debug!(group, "a write was refused; running it in savepoints");
                    guarded_from = Some(group);
                }
                Err(err) => {
                    rollback(conn).await;
                    guarded_from = None;
                    if !err.is_transient() || attempt >= ATTEMPTS || conn.client().is_closed() {
                        return Err(err);
                    }
                    tracing::debug!(error = %err, attempt, "retrying a write transaction");
                    let jitter = rand::random_range(0..5 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5 + jitter))
                        .await;
                    attempt += 1;
                }
            }
        }
    }
}

/// Ends a failed transaction so the connection can be reused (it is dropped if that fails).
async fn rollback(conn: &mut PooledConnection<'_>) {
    if conn.in_transaction && conn.execute("ROLLBACK").await.is_ok() {
        conn.in_transaction = false;
    }
}
