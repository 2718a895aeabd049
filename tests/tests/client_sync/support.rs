//! A Postgres with the example app, a real proxy process in front of it, and clients with
//! their own SQLite files in a temporary directory.

use std::time::Duration;

use client_sqlite::rusqlite::types::Value as SqlValue;
use client_sqlite::{Client, ClientConfig, ShapeSpec, SyncOptions};
use serde_json::{Map, Value};
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

pub const WAIT: Duration = Duration::from_secs(40);

/// Proxy flags for the example app: writable, tombstoned todos and notes; Yjs `notes.body`;
/// short live timeouts so tests see up-to-date messages often; small log chunks so that a
/// snapshot or a catch-up spans several responses (one batch across requests).
pub const PROXY_FLAGS: &[&str] = &[
    "--chunk-bytes",
    "4096",
    "--writable",
    "todos,notes",
    "--tombstones",
    "todos,notes",
    "--yjs-columns",
    "notes.body",
    "--long-poll-timeout",
    "2s",
    "--sse-timeout",
    "8s",
];

pub struct Env {
    /// Kept for its lifetime: dropping it removes the cluster.
    #[allow(dead_code)]
    pub db: TestDb,
    pub proxy: ProxyProcess,
    pub pg: tokio_postgres::Client,
    pub dir: tempfile::TempDir,
}

/// The example schema without its seed rows, and the proxy.
pub async fn env(name: &str) -> Env {
    let db = TestDb::new(name).await;
    let mut pg = db.connect().await;
    proxy::ops::migrations::apply(&mut pg, &proxy::ops::migrations::embedded())
        .await
        .expect("example migrations");
    pg.batch_execute("DELETE FROM todos; DELETE FROM notes; SET TimeZone = 'UTC';")
        .await
        .expect("empty tables");
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, PROXY_FLAGS).await;
    Env {
        db,
        proxy,
        pg,
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

impl Env {
    /// A client configuration for the file `file` with the given shapes, retrying fast.
    pub fn config(&self, file: &str, shapes: &[ShapeSpec]) -> ClientConfig {
        let mut config = ClientConfig::new(&self.proxy.url, self.dir.path().join(file));
        config.shapes = shapes.to_vec();
        config.sync = SyncOptions {
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(20),
            ..SyncOptions::default()
        };
        config.ack_grace = Duration::from_secs(5);
        config
    }

    pub async fn open(&self, file: &str, shapes: &[ShapeSpec]) -> Client {
        Client::open(self.config(file, shapes))
            .await
            .expect("open the client")
    }

    /// A client whose write timestamps run `seconds` ahead of the real clock (so its writes
    /// are newer than plain SQL writes made meanwhile, within the server's allowed skew).
    pub async fn open_ahead(&self, file: &str, shapes: &[ShapeSpec], seconds: i64) -> Client {
        let mut config = self.config(file, shapes);
        config.clock = Some(clock_ahead(seconds));
        Client::open(config).await.expect("open the client")
    }

    pub async fn sql(&self, sql: &str) {
        self.pg.batch_execute(sql).await.expect(sql);
    }

    /// Rows of a Postgres query, each value as text (NULL as `None`).
    pub async fn pg_rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.pg
            .simple_query(sql)
            .await
            .expect(sql)
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }
}

/// Rows of a SQLite query on the client, each value as text (NULL as `None`).
pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let sql = sql.to_owned();
    client
        .read(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            r.get::<_, SqlValue>(i).map(|v| match v {
                                SqlValue::Null => None,
                                SqlValue::Integer(i) => Some(i.to_string()),
                                SqlValue::Real(f) => Some(f.to_string()),
                                SqlValue::Text(t) => Some(t),
                                SqlValue::Blob(b) => Some(format!("{b:?}")),
                            })
                        })
                        .collect()
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .expect("read the client's database")
}

/// The todos as the app reads them, in a form comparable with [`pg_todos`].
pub const CLIENT_TODOS: &str = "SELECT id, owner_id, title, done, CAST(position AS INTEGER), updated_at \
     FROM todos ORDER BY id";
/// The todos shape evaluated on Postgres.
pub const PG_TODOS: &str = "SELECT id::text, owner_id, title, done::int::text, position::int8::text, \
     updated_at::text FROM todos WHERE deleted_at IS NULL ORDER BY id";

/// Waits until `check` holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tests::wait_for(what, WAIT, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await;
}

pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The uuid of test row `n`.
pub fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

pub fn todos() -> ShapeSpec {
    ShapeSpec::table("todos")
}

/// A write clock `seconds` ahead of the real one (see [`Env::open_ahead`]).
pub fn clock_ahead(seconds: i64) -> client_sqlite::Clock {
    let offset = seconds * 1_000_000;
    std::sync::Arc::new(move || chrono_micros() + offset)
}

/// A number from a query of one value on the client.
pub async fn count(client: &Client, sql: &str) -> i64 {
    let sql = sql.to_owned();
    client
        .read(move |c| c.query_row(&sql, [], |r| r.get(0)))
        .await
        .expect("a number from the client's database")
}

fn chrono_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The next conflict on the client's events (readiness events are skipped).
pub async fn next_conflict(
    events: &mut tokio::sync::broadcast::Receiver<client_sqlite::ClientEvent>,
) -> client_sqlite::Conflict {
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("a conflict event")
            .expect("event");
        if let client_sqlite::ClientEvent::Conflict(conflict) = event {
            return conflict;
        }
    }
}
