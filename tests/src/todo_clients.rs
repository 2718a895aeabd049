//! Client libraries following shapes of the subquery world's todos ([`crate::subquery_world`]),
//! each held to what Postgres gives for the shape's `where`: TanStack DB's electric collection
//! ([`TodosCollection`]) and shapesync's SQLite client ([`SqliteMirror`]), each asking its
//! moves as rows or as Electric's events.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use client_sqlite::rusqlite::types::Value as SqlValue;
use client_sqlite::{Client, ClientConfig, Moves, ShapePhase, ShapeSpec, SyncOptions};
use serde_json::{Map, Value, json};

use crate::tanstack::TanStackCollection;

/// How long a client may take to hold Postgres' rows.
pub const WAIT: Duration = Duration::from_secs(30);

/// `params` as `$n` values of a prepared statement (all text).
fn sql_params(params: &[String]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// Runs `query` with `params` as text `$n`.
async fn query_text_params(
    sql: &tokio_postgres::Client,
    query: &str,
    params: &[String],
) -> Vec<tokio_postgres::Row> {
    let statement = sql
        .prepare_typed(
            query,
            &vec![tokio_postgres::types::Type::TEXT; params.len()],
        )
        .await
        .expect(query);
    sql.query(&statement, &sql_params(params))
        .await
        .expect(query)
}

/// Postgres' todos for `where_` with `params` ($n as text), keyed by id as text, each row as
/// a TanStack collection parses it (ints are numbers, bools are booleans).
pub async fn pg_todos_json(
    sql: &tokio_postgres::Client,
    where_: &str,
    params: &[String],
) -> BTreeMap<String, Value> {
    let query = format!(
        "SELECT id::text, json_build_object('id', id, 'project_id', project_id, 'title', title, \
         'done', done)::text FROM todos WHERE {where_}"
    );
    query_text_params(sql, &query, params)
        .await
        .iter()
        .map(|row| (row.get(0), serde_json::from_str(row.get(1)).unwrap()))
        .collect()
}

/// Postgres' todos for `where_` with `params`, by id, as [`sqlite_todos`] shows them.
pub async fn pg_todos_text(
    sql: &tokio_postgres::Client,
    where_: &str,
    params: &[String],
) -> Vec<Vec<Option<String>>> {
    let query = format!(
        "SELECT id::text, project_id::text, title, done::int::text FROM todos \
         WHERE {where_} ORDER BY todos.id"
    );
    query_text_params(sql, &query, params)
        .await
        .iter()
        .map(|row| (0..4).map(|i| row.get(i)).collect())
        .collect()
}

/// The todos the SQLite client mirrors in its local `table`, each value as text, by id.
pub async fn sqlite_todos(client: &Client, table: &str) -> Vec<Vec<Option<String>>> {
    let query = format!("SELECT id, project_id, title, done FROM \"{table}\" ORDER BY id");
    client
        .read(move |conn| {
            let mut stmt = conn.prepare(&query)?;
            let rows = stmt
                .query_map([], |r| {
                    (0..4)
                        .map(|i| {
                            r.get::<_, SqlValue>(i).map(|v| match v {
                                SqlValue::Null => None,
                                SqlValue::Integer(i) => Some(i.to_string()),
                                SqlValue::Text(t) => Some(t),
                                other => Some(format!("{other:?}")),
                            })
                        })
                        .collect()
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .expect("read the mirror")
}

/// The `$n` parameters as owned strings.
fn owned(params: &[&str]) -> Vec<String> {
    params.iter().map(|p| (*p).to_owned()).collect()
}

/// A shape of todos followed by a TanStack DB collection.
pub struct TodosCollection {
    pub where_: String,
    pub params: Vec<String>,
    /// The shape asks `moves=events`.
    pub events: bool,
    pub collection: TanStackCollection,
}

impl TodosCollection {
    pub fn start(proxy_url: &str, where_: &str, params: &[&str]) -> Self {
        Self::start_with(proxy_url, where_, params, "rows")
    }

    /// A collection whose shape sends its moves as `moves` (`rows` or `events`).
    pub fn start_with(proxy_url: &str, where_: &str, params: &[&str], moves: &str) -> Self {
        let param_map: Map<String, Value> = params
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1).to_string(), json!(p)))
            .collect();
        let mut shape = json!({"table": "todos", "where": where_, "params": param_map});
        if moves != "rows" {
            shape["moves"] = json!(moves);
        }
        let collection = TanStackCollection::start(proxy_url, shape, "id");
        Self {
            where_: where_.to_owned(),
            params: owned(params),
            events: moves == "events",
            collection,
        }
    }

    /// Waits until the collection is ready (its first sync is done).
    pub async fn first_sync(&mut self) {
        self.collection.wait_rows(WAIT, |_| true).await;
    }

    /// Waits until the collection holds exactly Postgres' rows, with no refetch and no error.
    pub async fn converges(&mut self, sql: &tokio_postgres::Client, step: &str) {
        let want = pg_todos_json(sql, &self.where_, &self.params).await;
        let report = self
            .collection
            .wait_rows(WAIT, |rows| {
                rows.len() == want.len() && rows.iter().all(|(k, v)| want.get(k) == Some(v))
            })
            .await;
        let moves = if self.events { "events" } else { "rows" };
        let name = format!(
            "TanStack DB (moves={moves}) on {} {:?} after {step}",
            self.where_, self.params
        );
        assert_eq!(report["initialRequests"], 1, "{name}: refetched");
        assert_eq!(report["conflicts"], 0, "{name}: a 409");
        assert_eq!(
            report["movesAsEvents"].as_u64().is_some_and(|n| n > 0),
            self.events,
            "{name}: the requests ask moves=events"
        );
        assert!(
            self.collection.errors.is_empty(),
            "{name}: {:?}",
            self.collection.errors
        );
    }
}

/// A client configuration for the proxy at `url`, a database at `db_path` and `spec`, retrying
/// quickly (a test's proxy comes back within a second).
pub fn sqlite_config(url: &str, db_path: std::path::PathBuf, spec: ShapeSpec) -> ClientConfig {
    let mut config = ClientConfig::new(url, db_path).shape(spec);
    config.sync = SyncOptions {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..SyncOptions::default()
    };
    config
}

/// A shape of todos followed by shapesync's SQLite client, mirrored in its local `todos`.
pub struct SqliteMirror {
    pub where_: String,
    pub params: Vec<String>,
    pub moves: Moves,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl SqliteMirror {
    /// Opens a client of its own on the shape (its database in a temporary directory).
    pub async fn start(proxy_url: &str, where_: &str, params: &[&str], moves: Moves) -> Self {
        let mut spec = ShapeSpec::new("todos", "todos").with_where(where_);
        spec.params = owned(params);
        if moves == Moves::Events {
            spec = spec.moves_as_events();
        }
        let dir = tempfile::tempdir().expect("a directory for the client's database");
        let config = sqlite_config(proxy_url, dir.path().join("todos.db"), spec);
        let client = Client::open(config).await.expect("open the SQLite client");
        Self {
            where_: where_.to_owned(),
            params: owned(params),
            moves,
            client,
            _dir: dir,
        }
    }

    /// Waits until the shape's first sync is done (its table is readable).
    pub async fn first_sync(&self) {
        let mut status = self.client.watch_status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.ready.contains("todos")))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the SQLite client on {} {:?}: no first sync within {WAIT:?}: {:?}",
                    self.where_,
                    self.params,
                    self.client.status()
                )
            })
            .expect("the client is open");
    }

    /// Syncs up to now, then waits until the mirror is exactly Postgres' rows for the shape;
    /// no refetch, and the shape never refused.
    pub async fn converges(&self, sql: &tokio_postgres::Client, step: &str) {
        let name = format!(
            "the SQLite client (moves={}) on {} {:?} after {step}",
            if self.moves == Moves::Events {
                "events"
            } else {
                "rows"
            },
            self.where_,
            self.params
        );
        tokio::time::timeout(WAIT, self.client.sync_now())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name}: not synced up to now within {WAIT:?}: {:?}",
                    self.client.status()
                )
            })
            .unwrap_or_else(|e| panic!("{name}: sync now: {e}"));
        let want = pg_todos_text(sql, &self.where_, &self.params).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = sqlite_todos(&self.client, "todos").await;
            if got == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: the mirror is not Postgres' rows (status {:?})\n{}",
                self.client.status(),
                mirror_diff(&got, &want)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = self.client.status();
        assert_eq!(status.refetches, 0, "{name}: refetched");
        assert!(
            !status
                .shapes
                .values()
                .any(|p| matches!(p, ShapePhase::Error(_))),
            "{name}: {status:?}"
        );
    }
}

/// The rows only one side has, or has otherwise, by id.
fn mirror_diff(got: &[Vec<Option<String>>], want: &[Vec<Option<String>>]) -> String {
    let got_set: BTreeSet<_> = got.iter().collect();
    let want_set: BTreeSet<_> = want.iter().collect();
    let extra: Vec<_> = got_set.difference(&want_set).collect();
    let missing: Vec<_> = want_set.difference(&got_set).collect();
    format!(
        " {} rows in the mirror, {} in Postgres\n only in the mirror {extra:?}\n only in \
         Postgres {missing:?}",
        got.len(),
        want.len()
    )
}
