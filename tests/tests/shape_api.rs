//! The Electric HTTP Shape API v1 at the wire: exact statuses, headers and bodies, through a
//! real proxy process over a real socket, against a real Postgres.

use std::time::Duration;

use serde_json::{Value, json};
use tests::cases::Cases;
use tests::proxy_process::ProxyProcess;
use tests::shape_http::{self, Reply, controls};
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(name: &str) -> (TestDb, ProxyProcess) {
    let db = TestDb::new(name).await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text, n int8);
             INSERT INTO items VALUES (1, 'a', 10), (2, 'b', NULL);",
        )
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    (db, proxy)
}

async fn get(proxy: &ProxyProcess, query: &str) -> Reply {
    shape_http::get(proxy.http(), &proxy.url, query).await
}

#[tokio::test]
async fn initial_sync_serves_the_snapshot_then_up_to_date() {
    let (_db, proxy) = setup("api_initial").await;
    let first = get(&proxy, "table=items&offset=-1").await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.header("electric-offset"), Some("0_0"));
    let handle = first.header("electric-handle").expect("handle").to_owned();
    assert!(
        first.header("electric-up-to-date").is_none(),
        "offset=-1 never carries up-to-date"
    );
    assert_eq!(
        first.header("cache-control"),
        Some("public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746")
    );
    let schema: Value = serde_json::from_str(first.header("electric-schema").unwrap()).unwrap();
    assert_eq!(
        schema,
        json!({"id":{"type":"int4","not_null":true,"pk_index":0},"title":{"type":"text"},"n":{"type":"int8"}})
    );
    let rows = first.body.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        json!({"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"a","n":"10"},
               "headers":{"operation":"insert","relation":["public","items"]}})
    );
    assert_eq!(rows[1]["value"], json!({"id":"2","title":"b","n":null}));
    assert_eq!(rows[2]["headers"]["control"], "snapshot-end");
    assert!(rows[2]["headers"]["xmin"].is_string());

    let next = get(&proxy, &format!("table=items&offset=0_0&handle={handle}")).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.header("electric-offset"), Some("0_0"));
    assert_eq!(next.header("electric-up-to-date"), Some(""));
    assert_eq!(controls(&next.body), ["up-to-date"]);
    assert_eq!(
        next.header("cache-control"),
        Some("public, max-age=60, stale-while-revalidate=300")
    );
    let etag = next.header("etag").unwrap();
    assert_eq!(etag, format!("\"{handle}:0_0:0_0\""));

    let again = proxy
        .http()
        .get(format!(
            "{}/v1/shape?table=items&offset=0_0&handle={handle}",
            proxy.url
        ))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
}

#[tokio::test]
async fn a_live_request_returns_the_next_transaction_with_log_headers() {
    let (db, proxy) = setup("api_live").await;
    let first = get(&proxy, "table=items&offset=-1").await;
    let handle = first.header("electric-handle").unwrap().to_owned();
    let live = {
        let http = proxy.http().clone();
        let url = format!(
            "{}/v1/shape?table=items&offset=0_0&handle={handle}&live=true&cursor=",
            proxy.url
        );
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = db.connect().await;
    let row = client
        .query_one(
            "WITH ins AS (INSERT INTO items VALUES (3, 'c', 30) RETURNING 1)
             SELECT (txid_current() % 4294967296)::int8",
            &[],
        )
        .await
        .unwrap();
    let xid: i64 = row.get(0);
    let response = tokio::time::timeout(WAIT, live).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap();
    let messages = body.as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    let change = &messages[0];
    assert_eq!(change["value"], json!({"id":"3","title":"c","n":"30"}));
    assert_eq!(change["headers"]["operation"], "insert");
    assert_eq!(change["headers"]["txids"], json!([xid]));
    assert_eq!(change["headers"]["op_position"], 0);
    assert_eq!(change["headers"]["last"], true);
    let lsn = change["headers"]["lsn"].as_str().unwrap();
    assert_eq!(
        headers.get("electric-offset").unwrap().to_str().unwrap(),
        format!("{lsn}_0")
    );
    assert_eq!(messages[1]["headers"]["control"], "up-to-date");
    let global: u64 = messages[1]["headers"]["global_last_seen_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(global >= lsn.parse::<u64>().unwrap());
    assert!(headers.get("electric-cursor").is_some());
    assert!(
        headers.get("electric-schema").is_none(),
        "live responses carry no schema"
    );
    assert_eq!(
        headers.get("cache-control").unwrap(),
        "public, max-age=5, stale-while-revalidate=5"
    );
}

#[tokio::test]
async fn bad_parameters_get_the_electric_error_shape() {
    let (_db, proxy) = setup("api_errors").await;
    let proxy = &proxy;
    let mut cases = Cases::default();
    cases
        .check("no table", async {
            let reply = get(proxy, "offset=-1").await;
            assert_eq!(reply.status, 400);
            assert_eq!(
                reply.body,
                json!({"message":"Invalid request","errors":{"table":["can't be blank"]}})
            );
            assert_eq!(reply.header("cache-control"), Some("no-store"));
        })
        .await;
    cases
        .check("offset not an offset", async {
            let reply = get(proxy, "table=items&offset=banana").await;
            assert_eq!(
                reply.body["errors"]["offset"],
                json!(["has invalid format"])
            );
        })
        .await;
    cases
        .check("offset without a handle", async {
            let reply = get(proxy, "table=items&offset=0_0").await;
            assert_eq!(
                reply.body["errors"]["handle"],
                json!(["can't be blank when offset != -1"])
            );
        })
        .await;
    cases
        .check("table name folded to a missing table", async {
            let reply = get(proxy, "table=Items2&offset=-1").await;
            assert_eq!(reply.status, 400);
            let message = reply.body["errors"]["table"][0].as_str().unwrap();
            assert!(
                message.contains("items2") && message.contains("quoted"),
                "{message}"
            );
        })
        .await;
    cases
        .check("where syntax error at Electric's location", async {
            // N counts characters of `SELECT 1 WHERE <where>` from zero, as Electric reports it.
            let reply = get(proxy, "table=items&offset=-1&where=id%20%3D%201%20x%201").await;
            assert_eq!(
                reply.body["errors"]["where"],
                json!(["At location 22: syntax error at or near \"x\""])
            );
        })
        .await;
    cases
        .check("where with an unknown column", async {
            let reply = get(proxy, "table=items&offset=-1&where=nope%20%3D%201").await;
            let message = reply.body["errors"]["where"][0].as_str().unwrap();
            assert!(
                message.contains("nope") && message.contains("title"),
                "{message}"
            );
        })
        .await;
    cases
        .check("where with a missing param", async {
            let reply = get(proxy, "table=items&offset=-1&where=id%20%3D%20%241").await;
            assert_eq!(reply.status, 400);
            assert!(
                reply.body["errors"].get("params").is_some()
                    || reply.body["errors"].get("where").is_some()
            );
        })
        .await;
    cases
        .check("where over the length limit", async {
            let reply = get(
                proxy,
                &format!("table=items&offset=-1&where={}", "a".repeat(5000)),
            )
            .await;
            assert_eq!(reply.status, 400);
            assert!(
                reply.body["errors"]["where"][0]
                    .as_str()
                    .unwrap()
                    .contains("longer than")
            );
        })
        .await;
    cases
        .check("URL over --max-url-bytes", async {
            let reply = get(
                proxy,
                &format!("table=items&offset=-1&where={}", "a".repeat(7000)),
            )
            .await;
            assert_eq!(reply.status, 414, "URLs over --max-url-bytes");
        })
        .await;
    cases
        .check("request head over 8 KiB", async {
            let reply = get(
                proxy,
                &format!("table=items&offset=-1&where={}", "a".repeat(9000)),
            )
            .await;
            assert_eq!(reply.status, 431, "request heads over 8 KiB");
        })
        .await;
    cases
        .check("columns without the key", async {
            let reply = get(proxy, "table=items&offset=-1&columns=title").await;
            assert_eq!(reply.status, 400);
            assert!(
                reply.body["errors"]["columns"][0]
                    .as_str()
                    .unwrap()
                    .contains("id")
            );
        })
        .await;
    cases.finish();
}

#[tokio::test]
async fn a_stale_or_deleted_handle_gets_409_with_the_new_handle() {
    let (_db, proxy) = setup("api_409").await;
    let first = get(&proxy, "table=items&offset=-1").await;
    let handle = first.header("electric-handle").unwrap().to_owned();

    let reply = get(&proxy, "table=items&offset=0_0&handle=nonsense-1").await;
    assert_eq!(reply.status, 409);
    assert_eq!(reply.body, json!([{"headers":{"control":"must-refetch"}}]));
    assert_eq!(reply.header("electric-handle"), Some(handle.as_str()));

    // A live request waiting on the shape when it is deleted: 409, and no handle to go to
    // (none replaces it yet), so the client starts again from -1, as from Electric.
    let offset = first.header("electric-offset").unwrap().to_owned();
    let waiting = {
        let (http, url) = (proxy.http().clone(), proxy.url.clone());
        let query = format!("table=items&offset={offset}&handle={handle}&live=true");
        tokio::spawn(async move { shape_http::get(&http, &url, &query).await })
    };
    wait_for("the live request to wait", WAIT, || async {
        let metrics = proxy
            .http()
            .get(format!("{}/metrics", proxy.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .lines()
            .any(|l| l.starts_with("shapesync_live_connections ") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;

    let deleted = proxy
        .http()
        .delete(format!(
            "{}/v1/shape?table=items&handle={handle}",
            proxy.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let waited = waiting.await.unwrap();
    assert_eq!(waited.status, 409, "{:?}", waited.body);
    assert_eq!(waited.body, json!([{"headers":{"control":"must-refetch"}}]));
    assert_eq!(waited.header("electric-handle"), None);
    let reply = get(&proxy, &format!("table=items&offset=0_0&handle={handle}")).await;
    assert_eq!(reply.status, 409);
    let new_handle = reply.header("electric-handle").unwrap();
    assert_ne!(new_handle, handle, "handles are never reused");

    let missing = proxy
        .http()
        .delete(format!("{}/v1/shape?handle=nonsense-1", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn every_response_carries_cors_headers_and_preflight_is_answered() {
    let (_db, proxy) = setup("api_cors").await;
    let reply = proxy
        .http()
        .get(format!("{}/v1/shape?table=items&offset=-1", proxy.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = reply.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for name in [
        "electric-handle",
        "electric-offset",
        "electric-schema",
        "electric-cursor",
        "electric-up-to-date",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let preflight = proxy
        .http()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/shape", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-max-age"], "86400");
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn a_restarted_proxy_serves_the_same_handle_and_offsets() {
    let (db, mut proxy) = setup("api_restart").await;
    let first = get(&proxy, "table=items&offset=-1").await;
    let handle = first.header("electric-handle").unwrap().to_owned();
    db.connect()
        .await
        .batch_execute("INSERT INTO items VALUES (5, 'e', 50)")
        .await
        .unwrap();
    let caught_up = tests::wait_for("the insert in the log", WAIT, || async {
        let reply = get(&proxy, &format!("table=items&offset=0_0&handle={handle}")).await;
        (reply.body.as_array().map(Vec::len) == Some(2)).then_some(reply)
    })
    .await;
    let offset = caught_up.header("electric-offset").unwrap().to_owned();

    proxy.restart().await;
    let reply = get(&proxy, &format!("table=items&offset=0_0&handle={handle}")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("electric-offset"), Some(offset.as_str()));
    assert_eq!(reply.body[0]["value"]["id"], "5");

    db.connect()
        .await
        .batch_execute("UPDATE items SET title = 'E' WHERE id = 5")
        .await
        .unwrap();
    let after = tests::wait_for("the update after the restart", WAIT, || async {
        let reply = get(
            &proxy,
            &format!("table=items&offset={offset}&handle={handle}"),
        )
        .await;
        (reply.body.as_array().map(Vec::len) == Some(2)).then_some(reply)
    })
    .await;
    assert_eq!(after.body[0]["headers"]["operation"], "update");
    assert_eq!(after.body[0]["value"], json!({"id":"5","title":"E"}));
}

/// HEAD answers what GET would, headers only: the handle, offset, schema and etag of the same
/// request, and no body.
#[tokio::test]
async fn head_answers_the_headers_of_get_without_a_body() {
    let (_db, proxy) = setup("api_head").await;
    let url = format!("{}/v1/shape?table=items&offset=-1", proxy.url);
    let head = proxy.http().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let headers = head.headers().clone();
    assert_eq!(head.bytes().await.unwrap().len(), 0);
    let get = get(&proxy, "table=items&offset=-1").await;
    for name in [
        "electric-handle",
        "electric-offset",
        "electric-schema",
        "etag",
        "cache-control",
    ] {
        assert_eq!(
            headers.get(name).and_then(|v| v.to_str().ok()),
            get.header(name),
            "{name}"
        );
    }
    assert_eq!(headers["electric-offset"], "0_0");
    assert_eq!(
        headers["access-control-allow-origin"], "*",
        "CORS on HEAD too"
    );

    let handle = get.header("electric-handle").unwrap();
    let stale = proxy
        .http()
        .head(format!(
            "{}/v1/shape?table=items&offset=0_0&handle=nonsense-1",
            proxy.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);
    assert_eq!(stale.headers()["electric-handle"], handle);
}

/// `0_inf` is the end of the initial snapshot: the client has every snapshot row, so it gets
/// none of them, only what the log holds after the snapshot, then up-to-date.
#[tokio::test]
async fn offset_0_inf_skips_the_snapshot_and_serves_the_log_after_it() {
    let (db, proxy) = setup("api_0_inf").await;
    let first = get(&proxy, "table=items&offset=-1").await;
    assert_eq!(
        first.body.as_array().unwrap().len(),
        3,
        "two rows and snapshot-end"
    );
    let handle = first.header("electric-handle").unwrap().to_owned();
    let at_end = format!("table=items&offset=0_inf&handle={handle}");

    let nothing_yet = get(&proxy, &at_end).await;
    assert_eq!(nothing_yet.status, 200, "{:?}", nothing_yet.body);
    assert_eq!(controls(&nothing_yet.body), ["up-to-date"]);
    assert_eq!(nothing_yet.body.as_array().unwrap().len(), 1);
    assert_eq!(nothing_yet.header("electric-offset"), Some("0_inf"));
    assert_eq!(nothing_yet.header("electric-up-to-date"), Some(""));

    db.connect()
        .await
        .batch_execute("INSERT INTO items VALUES (3, 'c', 30)")
        .await
        .unwrap();
    let reply = tests::wait_for("the insert after the snapshot", WAIT, || async {
        let reply = get(&proxy, &at_end).await;
        (reply.body.as_array().map(Vec::len) == Some(2)).then_some(reply)
    })
    .await;
    assert_eq!(reply.status, 200);
    let insert = &reply.body[0];
    assert_eq!(insert["headers"]["operation"], "insert");
    assert_eq!(insert["value"], json!({"id": "3", "title": "c", "n": "30"}));
    assert_eq!(controls(&reply.body), ["up-to-date"]);
    let offset = reply.header("electric-offset").unwrap();
    assert_ne!(offset, "0_inf");
    assert!(!offset.starts_with("0_"), "a log offset: {offset}");
}
