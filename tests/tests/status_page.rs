//! The operator's status page (`GET /`, `/v1/status`, `/v1/status/stream`) of a real proxy in
//! front of a real Postgres: what it reports of shapes, replication, writes and storage, who
//! may see it, how it is turned off, and the page itself in headless Chromium, following a
//! write without a reload.

use std::time::Duration;

use serde_json::{Value, json};
use tests::ecosystems::NodeClient;
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

/// Generous: nothing here measures speed.
const WAIT: Duration = Duration::from_secs(30);

const SECRET: &str = "status-s3cret";

/// Four rows, three of them not done: the shape `done = false` holds three.
const ITEMS: &str = "
    CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL,
                        done boolean NOT NULL DEFAULT false);
    INSERT INTO items VALUES (1, 'one', false), (2, 'two', false), (3, 'three', false),
                             (4, 'four', true);
";

async fn database(name: &str) -> TestDb {
    let db = TestDb::new(name).await;
    db.connect()
        .await
        .batch_execute(ITEMS)
        .await
        .expect("create the test table");
    db
}

/// `path` with `secret` added to its query, if any.
fn with_secret(path: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if path.contains('?') => format!("{path}&secret={secret}"),
        Some(secret) => format!("{path}?secret={secret}"),
        None => path.to_owned(),
    }
}

/// The first page of a new shape: its handle and offset.
async fn new_shape(proxy: &ProxyProcess, query: &str, secret: Option<&str>) -> (String, String) {
    let url = with_secret(&format!("{}/v1/shape?{query}&offset=-1", proxy.url), secret);
    let response = proxy.http().get(url).send().await.expect("GET a shape");
    assert_eq!(response.status(), 200, "{query}");
    let header = |name: &str| {
        response.headers()[name]
            .to_str()
            .expect("a text header")
            .to_owned()
    };
    (header("electric-handle"), header("electric-offset"))
}

/// A live SSE request on the shape, open until the returned response is dropped.
async fn sse_client(
    proxy: &ProxyProcess,
    query: &str,
    handle: &str,
    offset: &str,
    secret: Option<&str>,
) -> reqwest::Response {
    let url = with_secret(
        &format!(
            "{}/v1/shape?{query}&handle={handle}&offset={offset}&live=true&live_sse=true",
            proxy.url
        ),
        secret,
    );
    let response = proxy
        .http()
        .get(url)
        .send()
        .await
        .expect("open an SSE stream");
    assert_eq!(response.status(), 200);
    response
}

/// Polls `/v1/status` until `check` accepts the report; returns it.
async fn wait_for_report(
    proxy: &ProxyProcess,
    secret: Option<&str>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let path = with_secret("/v1/status", secret);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, report) = proxy.get_json(&path).await;
        assert_eq!(status, 200, "{report}");
        if check(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; the last report: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The report's entry for the shape `handle`.
fn shape<'a>(report: &'a Value, handle: &str) -> Option<&'a Value> {
    report["shapes"]["listed"]
        .as_array()?
        .iter()
        .find(|s| s["handle"] == handle)
}

#[tokio::test]
async fn status_reports_each_shape_with_its_where_rows_and_live_clients_and_counts_writes() {
    let db = database("status_report").await;
    let sql = db.connect().await;
    let proxy = ProxyProcess::start(
        shapesync_bin!(),
        &db,
        &["--writable", "items", "--sse-timeout", "10m"],
    )
    .await;
    let query = "table=items&where=done%20%3D%20false";
    let (handle, offset) = new_shape(&proxy, query, None).await;

    let stream = sse_client(&proxy, query, &handle, &offset, None).await;
    let report = wait_for_report(&proxy, None, "the shape with one live client", |r| {
        shape(r, &handle).is_some_and(|s| s["live_clients"] == 1)
    })
    .await;
    let listed = shape(&report, &handle).expect("listed");
    assert_eq!(listed["table"], "\"public\".\"items\"");
    assert_eq!(listed["where"], "done = false");
    assert_eq!(listed["rows"], 3, "{listed}");
    assert_eq!(listed["state"], "ready");
    assert_eq!(listed["rotations"], 0);
    assert!(listed["log_bytes"].as_u64().unwrap_or(0) > 0, "{listed}");
    assert_eq!(
        listed["last_change_ms"],
        Value::Null,
        "nothing since the snapshot"
    );
    assert_eq!(report["shapes"]["count"], 1);
    assert_eq!(report["shapes"]["live_clients"], 1);
    let replication = &report["replication"];
    assert_eq!(replication["state"], "streaming", "{replication}");
    assert_eq!(replication["connected"], true);
    assert_eq!(replication["slot"], "shapesync");
    assert!(replication["lag_bytes"].is_u64(), "{replication}");
    assert!(replication["retained_wal_bytes"].is_u64(), "{replication}");
    assert!(
        report["storage"]["bytes"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );

    // A row comes in, one moves out: the shape follows.
    sql.batch_execute("INSERT INTO items VALUES (10, 'ten', false)")
        .await
        .expect("insert");
    let report = wait_for_report(&proxy, None, "four rows after the insert", |r| {
        shape(r, &handle).is_some_and(|s| s["rows"] == 4)
    })
    .await;
    let listed = shape(&report, &handle).expect("listed");
    assert!(listed["last_change_ms"].is_u64(), "{listed}");
    let last_commit = &report["replication"]["last_commit"];
    assert!(last_commit["lsn"].is_string(), "{report}");
    assert!(report["replication"]["lag_seconds"].is_number(), "{report}");
    sql.batch_execute("UPDATE items SET done = true WHERE id = 1")
        .await
        .expect("update");
    wait_for_report(&proxy, None, "three rows after a row moved out", |r| {
        shape(r, &handle).is_some_and(|s| s["rows"] == 3)
    })
    .await;
    drop(stream);
    wait_for_report(&proxy, None, "no live client once the stream closed", |r| {
        shape(r, &handle).is_some_and(|s| s["live_clients"] == 0)
    })
    .await;

    // Writes: one applied, one refused by Postgres.
    let (status, answer) = proxy
        .post_json(
            "/v1/mutations",
            &json!({"client_id": "status-test", "mutations": [
                {"id": "m1", "table": "items", "op": "insert", "key": {"id": 20},
                 "values": {"title": "twenty"}, "timestamp": "2026-01-01T00:00:00Z"},
                {"id": "m2", "table": "items", "op": "insert", "key": {"id": 21},
                 "values": {"title": null}, "timestamp": "2026-01-01T00:00:00Z"}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let report = wait_for_report(&proxy, None, "the writes counted", |r| {
        r["writes"]["total"] == 2
    })
    .await;
    let writes = &report["writes"];
    assert_eq!(writes["applied"], 1, "{writes}");
    assert_eq!(
        writes["rejected"],
        json!({"not_null_violation": 1}),
        "{writes}"
    );
    assert!(writes["mutations_per_second"].is_number(), "{writes}");

    // The same report as server-sent events.
    let event = first_event(&proxy, "/v1/status/stream").await;
    assert_eq!(event["shapes"]["count"], 1, "{event}");
    assert_eq!(event["writes"]["total"], 2, "{event}");

    // And the page that shows it.
    let response = proxy
        .http()
        .get(format!("{}/", proxy.url))
        .send()
        .await
        .expect("GET /");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let html = response.text().await.expect("the page");
    assert!(html.contains("<title>shapesync status</title>"), "{html}");
    assert!(
        html.contains("v1/status/stream"),
        "the page follows the stream"
    );
}

/// The first `data:` event of the SSE stream at `path`, parsed.
async fn first_event(proxy: &ProxyProcess, path: &str) -> Value {
    let mut response = proxy
        .http()
        .get(format!("{}{path}", proxy.url))
        .send()
        .await
        .expect("open the status stream");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let read = async {
        while !text.contains("\n\n") {
            let chunk = response.chunk().await.expect("read the stream");
            text.push_str(&String::from_utf8_lossy(
                &chunk.expect("more of the stream"),
            ));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an event within the wait");
    let data = text
        .lines()
        .find_map(|line| line.strip_prefix("data:"))
        .unwrap_or_else(|| panic!("no data line in {text:?}"));
    serde_json::from_str(data.trim()).expect("a JSON report")
}

/// GET `path`: status and body text.
async fn get_text(proxy: &ProxyProcess, path: &str) -> (u16, String) {
    let response = proxy
        .http()
        .get(format!("{}{path}", proxy.url))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

const STATUS_PATHS: [&str; 3] = ["/", "/v1/status", "/v1/status/stream"];

#[tokio::test]
async fn with_a_secret_the_status_page_and_its_data_need_it() {
    let db = database("status_secret").await;
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &["--secret", SECRET]).await;
    let missing = json!({"message": "the status page shows every shape's `where`, so it needs \
        the proxy's secret: add ?secret=… (the value of --secret) to the URL"});
    let wrong = json!({"message":
        "the secret is wrong: ?secret= must be the value of the proxy's --secret"});
    for path in STATUS_PATHS {
        let (status, body) = proxy.get_json(path).await;
        assert_eq!(
            (status, &body),
            (401, &missing),
            "{path} without the secret"
        );
        let (status, body) = proxy.get_json(&with_secret(path, Some("guess"))).await;
        assert_eq!((status, &body), (401, &wrong), "{path} with a wrong secret");
    }
    let (status, page) = get_text(&proxy, &with_secret("/", Some(SECRET))).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>shapesync status</title>"));
    let (status, report) = proxy
        .get_json(&with_secret("/v1/status", Some(SECRET)))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["shapes"]["count"], 0, "{report}");
    let event = first_event(&proxy, &with_secret("/v1/status/stream", Some(SECRET))).await;
    assert_eq!(event["replication"]["slot"], "shapesync", "{event}");
}

#[tokio::test]
async fn no_status_page_answers_404_and_jwt_auth_without_a_secret_403() {
    let db = database("status_off").await;
    let off = ProxyProcess::start_logging_with_env(
        shapesync_bin!(),
        &db,
        &[],
        &[("SHAPESYNC_NO_STATUS_PAGE", "true")],
    )
    .await;
    let message = json!({"message": "the status page is off (--no-status-page, or \
        SHAPESYNC_NO_STATUS_PAGE): start the proxy without it to serve GET /, /v1/status and \
        /v1/status/stream"});
    for path in STATUS_PATHS {
        let (status, body) = off.get_json(path).await;
        assert_eq!((status, &body), (404, &message), "{path}");
    }
    let (status, _) = off.get_json("/v1/health").await;
    assert_eq!(status, 200, "the rest is served");

    // Tokens speak for one user; the page shows every shape: without a secret nobody sees it.
    let rules = tempfile::tempdir().expect("rules dir");
    let rules_file = rules.path().join("rules.toml");
    std::fs::write(&rules_file, "[tables.items]\nread = \"true\"\n").expect("write the rules");
    let jwt_only = ProxyProcess::start(
        shapesync_bin!(),
        &db,
        &[
            "--slot",
            "jwt_only",
            "--publication",
            "jwt_only",
            "--jwt-secret",
            "status-jwt-key",
            "--rules",
            &rules_file.display().to_string(),
        ],
    )
    .await;
    let message = json!({"message": "the status page shows every shape's `where`, so it needs \
        the proxy's secret, and this proxy has none (a token speaks for one user only): start \
        it with --secret (or SHAPESYNC_SECRET) and open /?secret=…"});
    for path in STATUS_PATHS {
        let (status, body) = jwt_only.get_json(path).await;
        assert_eq!((status, &body), (403, &message), "{path}");
    }
}

/// The page in Debian's Chromium (through playwright-core, tests/ecosystems/status-page.mjs):
/// it shows a shape the test made and its live client, and after an INSERT in Postgres its
/// row count and last change move on, in the same page (no reload). With
/// `STATUS_SCREENSHOT=path.png` it also saves a screenshot there (the README's is made so).
#[tokio::test]
async fn the_page_in_chromium_shows_a_shape_and_its_client_and_follows_a_write_without_reload() {
    let db = database("status_browser").await;
    let sql = db.connect().await;
    let proxy = ProxyProcess::start(
        shapesync_bin!(),
        &db,
        &[
            "--secret",
            SECRET,
            "--writable",
            "items",
            "--sse-timeout",
            "10m",
        ],
    )
    .await;
    let query = "table=items&where=done%20%3D%20false";
    let (handle, offset) = new_shape(&proxy, query, Some(SECRET)).await;
    let _stream = sse_client(&proxy, query, &handle, &offset, Some(SECRET)).await;
    // Another shape and a few writes, so that every part of the page has something to show.
    new_shape(&proxy, "table=items&columns=id,title", Some(SECRET)).await;
    let (status, answer) = proxy
        .post_json(
            &with_secret("/v1/mutations", Some(SECRET)),
            &json!({"client_id": "status-browser", "mutations": [
                {"id": "m1", "table": "items", "op": "update", "key": {"id": 4},
                 "values": {"title": "four!"}, "timestamp": "2026-01-01T00:00:00Z"},
                {"id": "m2", "table": "items", "op": "insert", "key": {"id": 30},
                 "values": {"title": null}, "timestamp": "2026-01-01T00:00:00Z"}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    let mut page = NodeClient::start(
        "status page in chromium",
        "status-page.mjs",
        &json!({"url": format!("{}/?secret={SECRET}", proxy.url)}),
    );
    let opened = page
        .ok("open", json!({"timeoutMs": WAIT.as_millis() as u64}))
        .await;
    assert_eq!(opened["title"], "shapesync status");
    let row = page
        .ok(
            "shape",
            json!({"handle": handle, "timeoutMs": WAIT.as_millis() as u64,
                   "expect": {"table": "\"public\".\"items\"", "where": "done = false",
                              "live_clients": "1", "rows": "3",
                              "last_change": "none since snapshot"}}),
        )
        .await;
    assert_eq!(row["connection"], "live", "{row}");
    let reports = row["reports"].as_u64().expect("a report count");

    sql.batch_execute("INSERT INTO items VALUES (40, 'forty', false)")
        .await
        .expect("insert");
    let row = page
        .ok(
            "shape",
            json!({"handle": handle, "timeoutMs": WAIT.as_millis() as u64,
                   "expect": {"rows": "4", "live_clients": "1"}}),
        )
        .await;
    assert_ne!(row["fields"]["last_change"], "none since snapshot", "{row}");
    assert_eq!(row["mark"], "kept", "the same page, not reloaded: {row}");
    assert_eq!(row["navigations"], 1, "one navigation, the first: {row}");
    assert!(
        row["reports"].as_u64().expect("a report count") > reports,
        "{row}"
    );
    let texts = page
        .ok(
            "texts",
            json!({"selectors": {
                "state": "[data-field=\"replication.state\"]",
                "rejected": "[data-field=\"writes.rejected\"] [data-code=\"not_null_violation\"]",
                "shapes": "[data-field=\"shapes.count\"]"}}),
        )
        .await;
    assert_eq!(texts["state"], "streaming", "{texts}");
    assert_eq!(texts["rejected"], "not_null_violation1", "{texts}");
    assert_eq!(texts["shapes"], "2", "{texts}");

    if let Ok(path) = std::env::var("STATUS_SCREENSHOT") {
        page.ok("screenshot", json!({"path": path})).await;
    }
    page.ok("close", json!({})).await;
}
