//! Writes come back out: a mutation applied through `/v1/mutations` reaches a subscribed
//! Electric client, with the response's `txid` in `headers.txids` and an up-to-date whose
//! `global_last_seen_lsn` is at or past the response's `lsn`; a tombstone arrives as a delete.

use std::time::Duration;

use serde_json::{Value, json};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

const WAIT: Duration = Duration::from_secs(30);
const TODO: &str = "11111111-2222-4333-8444-555555555555";

async fn post(proxy: &ProxyProcess, body: Value) -> Value {
    let response = proxy
        .http()
        .post(format!("{}/v1/mutations", proxy.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn an_applied_mutation_reaches_the_client_with_its_txid_and_lsn() {
    let db = TestDb::new("writes_out").await;
    let mut sql = db.connect().await;
    proxy::ops::migrations::apply(&mut sql, &proxy::ops::migrations::embedded())
        .await
        .unwrap();
    let proxy = ProxyProcess::start(
        shapesync_bin!(),
        &db,
        &["--writable", "todos,notes", "--tombstones", "todos,notes"],
    )
    .await;
    let mut client = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "todos", "where": "owner_id = 'carol'"}, "raw": true}),
    );
    client.wait_rows(WAIT, |rows| rows.is_empty()).await;

    let response = post(
        &proxy,
        json!({"client_id": "device-1", "mutations": [{
            "id": "m-1", "table": "todos", "op": "insert", "key": {"id": TODO},
            "values": {"owner_id": "carol", "title": "from a device"},
            "timestamp": "2026-11-22T10:00:00Z"}]}),
    )
    .await;
    assert_eq!(response["results"][0]["status"], "applied", "{response}");
    let txid = response["txid"].as_u64().expect("txid");
    let lsn: u64 = response["lsn"]
        .as_str()
        .expect("the commit LSN, learned from replication")
        .parse()
        .unwrap();

    let insert = client
        .wait_message(WAIT, |m| m["headers"]["operation"] == "insert")
        .await;
    assert_eq!(insert["headers"]["txids"], json!([txid]));
    assert_eq!(
        insert["headers"]["lsn"],
        lsn.to_string(),
        "the response's lsn is the offset's tx"
    );
    assert_eq!(insert["value"]["title"], "from a device");
    let covers = |m: &Value| {
        m["headers"]["control"] == "up-to-date"
            && m["headers"]["global_last_seen_lsn"]
                .as_str()
                .and_then(|l| l.parse::<u64>().ok())
                .is_some_and(|l| l >= lsn)
    };
    if !client.messages().iter().any(covers) {
        client.wait_message(WAIT, covers).await;
    }

    let response = post(
        &proxy,
        json!({"client_id": "device-1", "mutations": [{
            "id": "m-2", "table": "todos", "op": "delete", "key": {"id": TODO},
            "timestamp": "2026-11-22T10:00:05Z"}]}),
    )
    .await;
    assert_eq!(response["results"][0]["status"], "applied", "{response}");
    let delete = client
        .wait_message(WAIT, |m| m["headers"]["operation"] == "delete")
        .await;
    assert_eq!(delete["key"], format!("\"public\".\"todos\"/\"{TODO}\""));
    client.wait_rows(WAIT, |rows| rows.is_empty()).await;
    let tombstone: Option<String> = sql
        .query_one(
            "SELECT deleted_at::text FROM todos WHERE id = $1::text::uuid",
            &[&TODO],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tombstone.is_some(), "the row stays, tombstoned");
}

/// The read and the write path share one table catalog: once the stream shows a table's new
/// columns (its shapes rotate), a write of a new column is accepted at once, not after the
/// write path's own copy of the table ages out.
#[tokio::test]
async fn a_column_the_stream_has_shown_is_writable_at_once() {
    let db = TestDb::new("writes_new_column").await;
    let mut sql = db.connect().await;
    proxy::ops::migrations::apply(&mut sql, &proxy::ops::migrations::embedded())
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &["--writable", "todos"]).await;
    let http = proxy.http().clone();
    let first = tests::shape_http::get(&http, &proxy.url, "table=todos&offset=-1").await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let handle = first.header("electric-handle").expect("handle").to_owned();
    // Far ahead, so clamped to the server's clock: later than the SQL update below.
    let write = |id: &str, op: &str, values: Value| {
        json!({"client_id": "device-1", "mutations": [{
            "id": id, "table": "todos", "op": op, "key": {"id": TODO},
            "values": values, "timestamp": "2099-01-01T00:00:00Z"}]})
    };
    let response = post(
        &proxy,
        write("m-1", "insert", json!({"owner_id": "carol", "title": "t"})),
    )
    .await;
    assert_eq!(response["results"][0]["status"], "applied", "{response}");

    sql.batch_execute(
        "ALTER TABLE todos ADD COLUMN priority int;
         UPDATE todos SET title = 'seen by the stream';",
    )
    .await
    .unwrap();
    let query = format!("table=todos&offset=0_0&handle={handle}");
    tests::wait_for("the shape of the changed table rotated", WAIT, || async {
        let reply = tests::shape_http::get(&http, &proxy.url, &query).await;
        (reply.status == 409).then_some(())
    })
    .await;

    let response = post(&proxy, write("m-2", "update", json!({"priority": 3}))).await;
    assert_eq!(response["results"][0]["status"], "applied", "{response}");
    let priority: Option<i32> = sql
        .query_one(
            "SELECT priority FROM todos WHERE id = $1::text::uuid",
            &[&TODO],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(priority, Some(3));
}
