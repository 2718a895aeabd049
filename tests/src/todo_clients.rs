//! Client libraries following shapes of the subquery world's todos ([`crate::subquery_world`]),
//! each held to what Postgres gives for the shape's `where`: TanStack DB's electric collection
//! ([`TodosCollection`]) and shapesync's SQLite client ([`SqliteMirror`]), each asking its
//! moves as rows or as Electric's events.

use std::collections::BTreeMap;
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
    /// The proxy was killed while the collection followed it: see [`is_cut_response`].
    pub proxy_killed: bool,
}

/// An error the JavaScript clients report (to `onError`, then retry) when the proxy dies in
/// the middle of a response: undici's `terminated`, on a 200. Expected when the proxy is
/// killed; any other error is not.
pub fn is_cut_response(error: &Value) -> bool {
    error["status"] == 200 && error["message"] == "terminated"
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
            proxy_killed: false,
        }
    }

    /// Waits until the collection is ready (its first sync is done).
    pub async fn first_sync(&mut self) {
        self.collection.wait_rows(WAIT, |_| true).await;
    }

    /// Waits until the collection holds exactly Postgres' rows, with no refetch and no error.
    pub async fn converges(&mut self, sql: &tokio_postgres::Client, step: &str) {
        if let Err(failure) = self.check_converges(sql, step).await {
            panic!("{failure}");
        }
    }

    /// [`TodosCollection::converges`], saying what is wrong instead of panicking.
    pub async fn check_converges(
        &mut self,
        sql: &tokio_postgres::Client,
        step: &str,
    ) -> Result<(), String> {
        let want = pg_todos_json(sql, &self.where_, &self.params).await;
        let moves = if self.events { "events" } else { "rows" };
        let name = format!(
            "TanStack DB (moves={moves}) on {} {:?} after {step}",
            self.where_, self.params
        );
        let report = self
            .collection
            .try_wait_rows(WAIT, |rows| {
                rows.len() == want.len() && rows.iter().all(|(k, v)| want.get(k) == Some(v))
            })
            .await
            .map_err(|last| {
                let got: BTreeMap<String, Value> = last["rows"]
                    .as_object()
                    .map(|rows| rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                format!(
                    "{name}: not Postgres' rows within {WAIT:?} (status {}, errors {:?})\n{}",
                    last["status"],
                    self.collection.errors,
                    rows_diff(&got, &want)
                )
            })?;
        let errors: Vec<&Value> = self
            .collection
            .errors
            .iter()
            .filter(|e| !(self.proxy_killed && is_cut_response(e)))
            .collect();
        let failures: Vec<String> = [
            (report["initialRequests"] != 1).then(|| {
                format!(
                    "refetched ({} requests with offset=-1)",
                    report["initialRequests"]
                )
            }),
            (report["conflicts"] != 0).then(|| format!("{} 409s", report["conflicts"])),
            (report["movesAsEvents"].as_u64().is_some_and(|n| n > 0) != self.events)
                .then(|| format!("{} requests asked moves=events", report["movesAsEvents"])),
            (!errors.is_empty()).then(|| format!("errors {errors:?}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("{name}: {}", failures.join("; ")))
        }
    }
}

/// What differs between a client's rows and Postgres', by key: how many only one side has or
/// both have otherwise, the first few of each, and the keys' count by `project_id` (rows move
/// by project, so a lost move shows as a whole project).
pub fn rows_diff<V: PartialEq + std::fmt::Debug + ProjectOf>(
    got: &BTreeMap<String, V>,
    want: &BTreeMap<String, V>,
) -> String {
    fn only<'a, V>(
        a: &'a BTreeMap<String, V>,
        b: &BTreeMap<String, V>,
    ) -> Vec<(&'a String, &'a V)> {
        a.iter().filter(|(k, _)| !b.contains_key(*k)).collect()
    }
    let by_project = |rows: &[(&String, &V)]| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, row) in rows {
            *counts.entry(row.project()).or_default() += 1;
        }
        counts
    };
    let held_only = only(got, want);
    let pg_only = only(want, got);
    let differ: Vec<(&String, &V, &V)> = got
        .iter()
        .filter_map(|(k, row)| want.get(k).filter(|w| *w != row).map(|w| (k, row, w)))
        .collect();
    format!(
        " {} rows held, {} in Postgres\n {} only held, by project {:?}: {:?}\n {} only in \
         Postgres, by project {:?}: {:?}\n {} held otherwise (key, held, Postgres): {:?}",
        got.len(),
        want.len(),
        held_only.len(),
        by_project(&held_only),
        &held_only[..held_only.len().min(8)],
        pg_only.len(),
        by_project(&pg_only),
        &pg_only[..pg_only.len().min(8)],
        differ.len(),
        &differ[..differ.len().min(5)]
    )
}

/// The `project_id` of a todo as a client holds it (for [`rows_diff`]).
pub trait ProjectOf {
    fn project(&self) -> String;
}

/// A row as JSON (a TanStack row, a consumer's row).
impl ProjectOf for Value {
    fn project(&self) -> String {
        match &self["project_id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl ProjectOf for Map<String, Value> {
    fn project(&self) -> String {
        match self.get("project_id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "none".into(),
        }
    }
}

/// A row as [`sqlite_todos`] shows it (id, project_id, title, done).
impl ProjectOf for Vec<Option<String>> {
    fn project(&self) -> String {
        self.get(1)
            .cloned()
            .flatten()
            .unwrap_or_else(|| "null".into())
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
        if let Err(failure) = self.check_converges(sql, step).await {
            panic!("{failure}");
        }
    }

    /// [`SqliteMirror::converges`], saying what is wrong instead of panicking.
    pub async fn check_converges(
        &self,
        sql: &tokio_postgres::Client,
        step: &str,
    ) -> Result<(), String> {
        let moves = if self.moves == Moves::Events {
            "events"
        } else {
            "rows"
        };
        let name = format!(
            "the SQLite client (moves={moves}) on {} {:?} after {step}",
            self.where_, self.params
        );
        match tokio::time::timeout(WAIT, self.client.sync_now()).await {
            Err(_) => {
                return Err(format!(
                    "{name}: not synced up to now within {WAIT:?}: {:?}",
                    self.client.status()
                ));
            }
            Ok(Err(e)) => return Err(format!("{name}: sync now: {e}")),
            Ok(Ok(_)) => {}
        }
        let by_id = |rows: Vec<Vec<Option<String>>>| -> BTreeMap<String, Vec<Option<String>>> {
            rows.into_iter()
                .map(|row| (row[0].clone().unwrap_or_default(), row))
                .collect()
        };
        let want = by_id(pg_todos_text(sql, &self.where_, &self.params).await);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = by_id(sqlite_todos(&self.client, "todos").await);
            if got == want {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{name}: the mirror is not Postgres' rows within {WAIT:?} (status {:?})\n{}",
                    self.client.status(),
                    rows_diff(&got, &want)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = self.client.status();
        if status.refetches > 0 {
            return Err(format!("{name}: refetched: {status:?}"));
        }
        if status
            .shapes
            .values()
            .any(|p| matches!(p, ShapePhase::Error(_)))
        {
            return Err(format!("{name}: the shape was refused: {status:?}"));
        }
        Ok(())
    }
}
