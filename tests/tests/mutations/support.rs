//! A database with the example app and the proxy's schema, and the real router in front of it.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use proxy::config::ServeConfig;
use proxy::mutations::WriteConfig;
use serde_json::{Value, json};
use tests::TestDb;
use tower::ServiceExt as _;

pub struct Harness {
    pub db: TestDb,
    pub router: Router,
    pub client: tokio_postgres::Client,
}

/// The example app (todos, notes) with dev defaults for writes, on a fresh database.
pub async fn harness(name: &str) -> Harness {
    harness_with(name, |_| {}).await
}

pub async fn harness_with(name: &str, adjust: impl FnOnce(&mut ServeConfig)) -> Harness {
    let db = TestDb::new(name).await;
    let mut client = db.connect().await;
    proxy::ops::migrations::apply(&mut client, &proxy::ops::migrations::embedded())
        .await
        .expect("example migrations");
    proxy::postgres::proxy_schema::upgrade(&mut client)
        .await
        .expect("shapesync schema");
    let storage =
        std::env::temp_dir().join(format!("shapesync-mutations-{name}-{}", std::process::id()));
    let mut config = ServeConfig::new(
        db.url.clone(),
        "127.0.0.1:0".parse().expect("address"),
        storage,
    );
    config.tombstones = ["todos", "notes"]
        .iter()
        .map(|t| t.parse().expect("tombstone spec"))
        .collect();
    config.writes = WriteConfig {
        lsn_wait: Duration::from_millis(5),
        ..WriteConfig::dev()
    };
    adjust(&mut config);
    let router = tests::writes_only_router(config);
    Harness { db, router, client }
}

impl Harness {
    /// POSTs a JSON body to /v1/mutations.
    pub async fn post(&self, body: &Value) -> (StatusCode, Value) {
        let bytes = serde_json::to_vec(body).expect("json");
        self.post_bytes(bytes, None).await
    }

    pub async fn post_bytes(&self, bytes: Vec<u8>, encoding: Option<&str>) -> (StatusCode, Value) {
        post_bytes(&self.router, bytes, encoding).await
    }

    /// POSTs a batch from `client_id` and expects 200.
    pub async fn send(&self, client_id: &str, mutations: Vec<Value>) -> Value {
        send(&self.router, client_id, false, mutations).await
    }

    /// A todo's columns as text (NULL as None), in `columns` order.
    pub async fn todo(&self, id: &str, columns: &str) -> Option<Vec<Option<String>>> {
        let sql = format!(
            "SELECT ARRAY[{columns}]::text[] FROM todos WHERE id = $1::text::uuid",
            columns = columns
                .split(',')
                .map(|c| format!("{}::text", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.client
            .query_opt(&sql, &[&id])
            .await
            .expect("read todo")
            .map(|row| row.get(0))
    }
}

pub async fn post_bytes(
    router: &Router,
    bytes: Vec<u8>,
    encoding: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::post("/v1/mutations").header("content-type", "application/json");
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let request = request.body(Body::from(bytes)).expect("request");
    let response = router.clone().oneshot(request).await.expect("router");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, value)
}

pub async fn send(router: &Router, client_id: &str, atomic: bool, mutations: Vec<Value>) -> Value {
    let body = json!({"client_id": client_id, "atomic": atomic, "mutations": mutations});
    let (status, response) =
        post_bytes(router, serde_json::to_vec(&body).expect("json"), None).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    response
}

/// `2026-01-01T00:00:00Z` plus `seconds`.
pub fn at(seconds: i64) -> String {
    let base = 1_767_225_600; // 2026-01-01T00:00:00Z
    chrono_free_rfc3339(base + seconds)
}

/// This machine's time (the test cluster's too) plus `seconds`, for writes that must fall
/// before or after a plain SQL write made at `now()`.
pub fn from_now(seconds: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    chrono_free_rfc3339(i64::try_from(now).expect("seconds fit") + seconds)
}

fn chrono_free_rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The uuid of test todo `n`.
pub fn todo_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A mutation on todos.
pub fn todo(id: &str, op: &str, n: u32, values: Value, timestamp: &str) -> Value {
    json!({"id": id, "table": "todos", "op": op, "key": {"id": todo_id(n)},
           "values": values, "timestamp": timestamp})
}

/// The full values of a new todo.
pub fn new_todo(title: &str) -> Value {
    json!({"owner_id": "alice", "title": title, "done": false, "position": 1})
}

pub fn status(result: &Value) -> &str {
    result["status"].as_str().unwrap_or("?")
}

#[test]
fn timestamps_are_rfc3339() {
    assert_eq!(at(0), "2026-01-01T00:00:00Z");
    assert_eq!(at(86_400 * 59 + 3661), "2026-03-01T01:01:01Z");
}
