//! "Sync now" against a real proxy (in this process, on a real socket) and a throwaway
//! Postgres: a plain SQL write committed just before `sync --once` (the binary) or
//! `Client::sync_now` (the library) is in the mirror when it returns, every time, while
//! another writer keeps the proxy busy.

mod common;

use std::time::Duration;

use client_sqlite::rusqlite::{self, Connection};
use client_sqlite::{Client, ClientConfig, ShapeSpec, SyncOptions};
use common::run;
use tests::in_process::InProcessProxy;
use tokio_util::sync::CancellationToken;

/// Rounds of write-then-sync; `SHAPESYNC_SYNC_NOW_ROUNDS` overrides (library rounds; the CLI
/// runs a tenth of them, each being a process start and 2,000 rows).
fn rounds() -> u32 {
    std::env::var("SHAPESYNC_SYNC_NOW_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Rows each round updates: the library's rounds are fast, so a few; a process start takes
/// longer than decoding a small transaction, so the CLI's rounds update 2,000 rows (as in the
/// report of issue 19).
const LIBRARY_ROWS: i32 = 20;
const CLI_ROWS: i32 = 2000;

struct Server {
    db: tests::TestDb,
    pg: tokio_postgres::Client,
    url: String,
    proxy: InProcessProxy,
}

async fn server(name: &str) -> Server {
    server_with_secret(name, None).await
}

async fn server_with_secret(name: &str, secret: Option<&str>) -> Server {
    let db = tests::TestDb::new(name).await;
    let pg = db.connect().await;
    pg.batch_execute(
        "CREATE TABLE counter (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO counter SELECT g, 0 FROM generate_series(0, 2000) g;
         CREATE TABLE noise (id bigserial PRIMARY KEY, payload text);",
    )
    .await
    .expect("schema");
    let proxy = InProcessProxy::start(&db.url, |config| {
        config.secret = secret.map(str::to_owned);
    })
    .await;
    Server {
        db,
        pg,
        url: proxy.url.clone(),
        proxy,
    }
}

/// Another writer, on its own connection, until cancelled: rows of a table no shape reads and
/// updates of a row of the synced one, so the proxy always has transactions to decode and the
/// shape always has news.
async fn load(server: &Server) -> CancellationToken {
    let stop = server.proxy.shutdown.child_token();
    let pg = server.db.connect().await;
    let until = stop.clone();
    tokio::spawn(async move {
        while !until.is_cancelled() {
            let _ = pg
                .batch_execute(
                    "INSERT INTO noise (payload) SELECT repeat('x', 200) FROM generate_series(1, 50);
                     UPDATE counter SET v = v + 1 WHERE id = 0;",
                )
                .await;
            // Steady, not unbounded: a debug-build proxy that fell ever further behind would
            // make each sync wait for a growing backlog (correct, but slow for CI).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    stop
}

/// Round `i`'s writes, committed before the sync starts: rows 1..=`rows` take `i` (one
/// transaction, so the proxy takes a moment to decode it), row `1_000_000 + i` appears and
/// the previous round's goes.
async fn write_round(pg: &tokio_postgres::Client, i: i32, rows: i32) {
    pg.batch_execute(&format!(
        "UPDATE counter SET v = {i} WHERE id BETWEEN 1 AND {rows};
         INSERT INTO counter VALUES ({}, {i});
         DELETE FROM counter WHERE id = {};",
        1_000_000 + i,
        999_999 + i
    ))
    .await
    .expect("the round's writes");
}

/// What the mirror shows of round `i`'s rows: (lowest and highest `v`, how many rows) of rows
/// 1..=`rows`, and the ids from 1,000,000 up.
fn round_seen(conn: &Connection, rows: i32) -> rusqlite::Result<((i64, i64, i64), Vec<i64>)> {
    let updated = conn.query_row(
        "SELECT min(v), max(v), count(*) FROM counter WHERE id BETWEEN 1 AND ?1",
        [rows],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut stmt = conn.prepare("SELECT id FROM counter WHERE id >= 1000000 ORDER BY id")?;
    let ids = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((updated, ids))
}

/// What round `i` must show.
fn expected(i: i32, rows: i32) -> ((i64, i64, i64), Vec<i64>) {
    let i = i64::from(i);
    ((i, i, i64::from(rows)), vec![1_000_000 + i])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_now_includes_every_write_committed_before_it() {
    let server = server("sync_now_library").await;
    let dir = tempfile::tempdir().expect("dir");
    let mut config = ClientConfig::new(&server.url, dir.path().join("app.db"));
    config.shapes = vec![ShapeSpec::table("counter")];
    config.sync = SyncOptions {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..SyncOptions::default()
    };
    let client = Client::open(config).await.expect("open");
    let start = client.sync_now().await.expect("first sync");
    let stop = load(&server).await;
    let mut last = start;
    for i in 1..=rounds() as i32 {
        write_round(&server.pg, i, LIBRARY_ROWS).await;
        let lsn = client.sync_now().await.expect("sync now");
        let seen = client
            .read(|conn| round_seen(conn, LIBRARY_ROWS))
            .await
            .expect("read the mirror");
        assert_eq!(
            seen,
            expected(i, LIBRARY_ROWS),
            "round {i}: sync_now returned before the round's writes were in the mirror"
        );
        assert!(
            lsn > last,
            "round {i}: each sync-now position is past the one before"
        );
        let synced = client.status().synced_up_to().expect("synced up to");
        assert!(
            synced >= lsn,
            "round {i}: status says synced up to {synced} < {lsn}"
        );
        last = lsn;
    }
    stop.cancel();
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_includes_every_write_committed_before_it() {
    let server = server("sync_now_cli").await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("app.db");
    let db = path.to_str().expect("utf-8 path");
    let sync = [
        "sync",
        "--url",
        &server.url,
        "--db",
        db,
        "--shape",
        "counter",
        "--once",
    ];
    let stop = load(&server).await;
    for i in 1..=(rounds() / 10).max(1) as i32 {
        write_round(&server.pg, i, CLI_ROWS).await;
        let output = run(&sync).await;
        assert!(
            output.status.success(),
            "round {i}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let conn = Connection::open(&path).expect("open the mirror");
        let seen = round_seen(&conn, CLI_ROWS).expect("read the mirror");
        assert_eq!(
            seen,
            expected(i, CLI_ROWS),
            "round {i}: sync --once exited before the round's writes were in the mirror"
        );
    }
    stop.cancel();
    let status = run(&["status", "--db", db, "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json status");
    let synced = status["synced_up_to"].as_u64().expect("synced_up_to");
    assert!(synced > 0, "{status}");
    assert_eq!(status["shapes"][0]["synced_up_to"].as_u64(), Some(synced));
    assert_eq!(status["priorities"], serde_json::json!({"3": true}));
}

#[tokio::test]
async fn the_lsn_endpoint_asks_for_the_credentials_of_shape_reads_and_answers_only_a_position() {
    let server = server_with_secret("sync_now_lsn_auth", Some("s3cret")).await;
    let http = reqwest::Client::new();
    let get = |query: &'static str| {
        let request = http.get(format!("{}/v1/lsn{query}", server.url));
        async move { request.send().await.expect("GET /v1/lsn") }
    };
    for query in ["", "?secret=wrong"] {
        let refused = get(query).await;
        assert_eq!(refused.status(), 401, "GET /v1/lsn{query}");
        let body: serde_json::Value = refused.json().await.expect("json");
        assert!(body.get("lsn").is_none(), "{body}");
    }
    // Written before the request: the fence is at or past it.
    server
        .pg
        .batch_execute("UPDATE counter SET v = 7 WHERE id = 1")
        .await
        .expect("a write");
    let before: i64 = server
        .pg
        .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8", &[])
        .await
        .expect("wal position")
        .get(0);
    let answer = get("?secret=s3cret").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["cache-control"],
        "no-store",
        "a position is never cached"
    );
    let body: serde_json::Value = answer.json().await.expect("json");
    let object = body.as_object().expect("an object");
    assert_eq!(object.keys().collect::<Vec<_>>(), ["lsn"], "{body}");
    let lsn: u64 = object["lsn"]
        .as_str()
        .expect("a string")
        .parse()
        .expect("decimal");
    assert!(
        lsn >= before as u64,
        "fence {lsn} before the write's WAL {before}"
    );
    // A shape read after it reports the position reached, and has the write.
    let (mut offset, mut handle) = ("-1".to_owned(), String::new());
    let mut values = Vec::new();
    let global: u64 = loop {
        let mut url: reqwest::Url = format!("{}/v1/shape", server.url).parse().expect("url");
        url.query_pairs_mut()
            .append_pair("table", "counter")
            .append_pair("where", "id = 1")
            .append_pair("offset", &offset)
            .append_pair("handle", &handle)
            .append_pair("secret", "s3cret");
        let response = http.get(url).send().await.expect("shape");
        assert_eq!(response.status(), 200);
        offset = response.headers()["electric-offset"]
            .to_str()
            .expect("offset")
            .to_owned();
        handle = response.headers()["electric-handle"]
            .to_str()
            .expect("handle")
            .to_owned();
        let messages: Vec<serde_json::Value> = response.json().await.expect("json");
        values.extend(
            messages
                .iter()
                .filter_map(|m| m["value"]["v"].as_str().map(str::to_owned)),
        );
        if let Some(end) = messages
            .iter()
            .find(|m| m["headers"]["control"] == "up-to-date")
        {
            break end["headers"]["global_last_seen_lsn"]
                .as_str()
                .expect("global_last_seen_lsn")
                .parse()
                .expect("decimal");
        }
    };
    assert_eq!(values, ["7"]);
    assert!(global >= lsn, "{global} < fence {lsn}");
}
