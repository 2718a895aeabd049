//! Rolling deploys: a second `shapesync serve` on the same database, slot and storage stands
//! by while the first runs (serving the stored shapes read-only, `/v1/health` 202 `waiting`,
//! 503 + `retry-after` for what only the running instance may do), and takes over when the
//! first exits on SIGTERM. Clients syncing through the whole deploy, on one port shared with
//! `--reuse-port`, see no error but those 503s, never refetch, and lose no change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::shape_http::{self, Reply};
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(60);

async fn health(proxy: &ProxyProcess) -> (u16, Value) {
    proxy.get_json("/v1/health").await
}

/// Reads a shape from `-1` to up-to-date: its handle, offset and rows by key.
async fn catch_up(proxy: &ProxyProcess, query: &str) -> (String, String, BTreeSet<String>) {
    let mut reply = shape_http::get(proxy.http(), &proxy.url, &format!("{query}&offset=-1")).await;
    let mut keys = BTreeSet::new();
    loop {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        for change in reply.changes() {
            keys.insert(change["key"].as_str().unwrap().to_owned());
        }
        let handle = reply.header("electric-handle").unwrap().to_owned();
        let offset = reply.header("electric-offset").unwrap().to_owned();
        if reply.controls().contains(&"up-to-date".to_owned()) {
            return (handle, offset, keys);
        }
        reply = shape_http::get(
            proxy.http(),
            &proxy.url,
            &format!("{query}&handle={handle}&offset={offset}"),
        )
        .await;
    }
}

fn assert_standby_refusal(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 503, "{what}: {:?}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"), "{what}");
    assert_eq!(reply.body["code"], "standby", "{what}: {:?}", reply.body);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("another instance on the same replication slot is still running"),
        "{what}: {message}"
    );
}

#[tokio::test]
async fn a_standby_serves_the_stored_shapes_read_only_then_takes_over_when_the_first_exits() {
    let db = TestDb::new("deploy_standby").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 50) g;",
    )
    .await
    .unwrap();
    let mut first =
        ProxyProcess::start_logging(shapesync_bin!(), &db, &["--writable", "items"]).await;
    let query = "table=items&where=id%20%3C%3D%201000";
    let (handle, offset, keys) = catch_up(&first, query).await;
    assert_eq!(keys.len(), 50);

    let mut second = first.start_beside(&[], false).await;
    assert_eq!(health(&second).await, (202, json!({"status": "waiting"})));
    assert!(
        second.log().contains("standing by until it exits"),
        "{}",
        second.log()
    );

    // The stored shape, with the same handle, offsets and rows as from the first.
    let (standby_handle, standby_offset, standby_keys) = catch_up(&second, query).await;
    assert_eq!(
        (&standby_handle, &standby_offset, &standby_keys),
        (&handle, &offset, &keys)
    );
    // What only the running instance may do.
    let new_shape = shape_http::get(second.http(), &second.url, "table=items&offset=-1").await;
    assert_standby_refusal(&new_shape, "a new shape");
    let delete = second
        .http()
        .delete(format!(
            "{}/v1/shape?table=items&handle={handle}",
            second.url
        ))
        .send()
        .await
        .unwrap();
    let delete = Reply {
        status: delete.status().as_u16(),
        headers: delete.headers().clone(),
        body: delete.json().await.unwrap(),
    };
    assert_standby_refusal(&delete, "a DELETE");

    // A live request on the standby gets what the first streams (it follows the log).
    let live = {
        let http = second.http().clone();
        let url = second.url.clone();
        let live_query = format!("{query}&handle={handle}&offset={offset}&live=true");
        tokio::spawn(async move { shape_http::get(&http, &url, &live_query).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sql.execute("INSERT INTO items VALUES (51, 'while standing by')", &[])
        .await
        .unwrap();
    let live = live.await.unwrap();
    assert_eq!(live.status, 200, "{:?}", live.body);
    let changes = live.changes();
    assert_eq!(changes.len(), 1, "{:?}", live.body);
    assert_eq!(changes[0]["value"]["v"], "while standing by");
    let offset = live.header("electric-offset").unwrap().to_owned();

    // Writes go straight to Postgres from the standby too.
    let (status, written) = second
        .post_json(
            "/v1/mutations",
            &json!({"client_id": "device", "mutations": [{"id": "m1", "table": "items",
                "op": "insert", "key": {"id": 52}, "values": {"v": "written on the standby"},
                "timestamp": "2026-12-06T10:00:00Z"}]}),
        )
        .await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["results"][0]["status"], "applied", "{written}");

    // The first exits; the standby takes over with the same shape and offsets.
    first.stop().await;
    // Health turns active when its read path is up, a moment before the router is swapped
    // and "took over" is logged.
    wait_for("the standby to take over", WAIT, || async {
        (health(&second).await == (200, json!({"status": "active"}))
            && second.log().contains("took over"))
        .then_some(())
    })
    .await;
    let after = shape_http::get(
        second.http(),
        &second.url,
        &format!("{query}&handle={handle}&offset={offset}"),
    )
    .await;
    assert_eq!(
        after.status, 200,
        "no refetch after the takeover: {:?}",
        after.body
    );
    let mut seen: Vec<Value> = after.changes();
    let mut offset = after.header("electric-offset").unwrap().to_owned();
    while seen.is_empty() {
        let next = shape_http::get(
            second.http(),
            &second.url,
            &format!("{query}&handle={handle}&offset={offset}&live=true"),
        )
        .await;
        assert_eq!(next.status, 200, "{:?}", next.body);
        seen.extend(next.changes());
        offset = next.header("electric-offset").unwrap().to_owned();
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["value"]["v"], "written on the standby");
    // Now it makes new shapes.
    let (_, _, all) = catch_up(&second, "table=items").await;
    assert_eq!(all.len(), 52);
    second.stop().await;
}

/// Every answer a client got, from its `response` events.
fn responses(client: &ElectricClient) -> Vec<Value> {
    client
        .history
        .iter()
        .filter(|e| e["type"] == "response")
        .cloned()
        .collect()
}

#[tokio::test]
async fn clients_syncing_through_a_rolling_deploy_on_one_port_lose_nothing_and_never_refetch() {
    let db = TestDb::new("deploy_rolling").await;
    let sql = db.connect().await;
    sql.batch_execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let mut first = ProxyProcess::start_logging(shapesync_bin!(), &db, &["--reuse-port"]).await;
    let params = json!({"table": "items"});
    let mut clients: Vec<ElectricClient> = [false, false, true]
        .into_iter()
        .map(|sse| {
            ElectricClient::start(
                &first.url,
                json!({"params": params, "sse": sse, "responses": true}),
            )
        })
        .collect();
    for client in &mut clients {
        client.wait_rows(WAIT, |rows| rows.is_empty()).await;
    }

    // A writer commits a row every 20 ms through the whole deploy.
    let written = Arc::new(AtomicU32::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (written, writing) = (written.clone(), writing.clone());
        let sql = db.connect().await;
        tokio::spawn(async move {
            while writing.load(Ordering::Relaxed) {
                let id = written.load(Ordering::Relaxed) + 1;
                sql.execute(
                    "INSERT INTO items VALUES ($1, 'row')",
                    &[&i32::try_from(id).unwrap()],
                )
                .await
                .unwrap();
                written.store(id, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    wait_for("rows to be written", WAIT, || async {
        (written.load(Ordering::Relaxed) >= 20).then_some(())
    })
    .await;
    let mut second = first.start_beside(&[], true).await;
    // (its health check may have reached the first, on the same port)
    wait_for("the new instance to stand by", WAIT, || async {
        second
            .log()
            .contains("standing by until it exits")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.stop().await;
    wait_for("the new instance to take over", WAIT, || async {
        (health(&second).await == (200, json!({"status": "active"}))).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    writing.store(false, Ordering::Relaxed);
    writer.await.unwrap();
    let total = written.load(Ordering::Relaxed) as usize;
    assert!(total > 40, "the writer kept writing: {total} rows");

    for (n, client) in clients.iter_mut().enumerate() {
        let rows = client.wait_rows(WAIT, |rows| rows.len() == total).await;
        let ids: BTreeSet<u32> = rows.keys().map(|k| key_id(k)).collect();
        assert_eq!(ids, (1..=total as u32).collect(), "client {n}");
        let answers = responses(client);
        let initial = answers
            .iter()
            .filter(|r| r["url"].as_str().unwrap().contains("offset=-1"))
            .count();
        assert_eq!(initial, 1, "client {n} fetched the shape once: {answers:?}");
        for answer in &answers {
            let status = answer["status"].as_u64().unwrap();
            assert!(
                status == 200 || (status == 503 && !answer["retryAfter"].is_null()),
                "client {n} got {answer}"
            );
        }
        assert!(
            client.errors().is_empty(),
            "client {n}: {:?}",
            client.errors()
        );
        let dropped = client
            .history
            .iter()
            .filter(|e| e["type"] == "fetch-error")
            .count();
        eprintln!(
            "client {n}: {} answers, {dropped} requests without an answer (retried)",
            answers.len()
        );
    }
    second.stop().await;
}

/// The id in a key like `"public"."items"/"7"`.
fn key_id(key: &str) -> u32 {
    key.rsplit('/')
        .next()
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap()
}
