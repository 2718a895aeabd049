//! Subset snapshots: part of a shape on demand, as the Electric client's `fetchSnapshot` and
//! `requestSnapshot` ask for it.

use std::time::Duration;

use serde_json::{Value, json};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(name: &str) -> (TestDb, ProxyProcess) {
    setup_with(name, &[]).await
}

async fn setup_with(name: &str, flags: &[&str]) -> (TestDb, ProxyProcess) {
    let db = TestDb::new(name).await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text, owner text);
             INSERT INTO items SELECT g, 'item ' || g, CASE WHEN g % 2 = 0 THEN 'ann' ELSE 'bob' END
             FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, flags).await;
    (db, proxy)
}

async fn handle_of(proxy: &ProxyProcess, query: &str) -> String {
    let response = proxy
        .http()
        .get(format!("{}/v1/shape?{query}&offset=-1", proxy.url))
        .send()
        .await
        .unwrap();
    response.headers()["electric-handle"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_subset_is_the_shape_narrowed_ordered_and_limited() {
    let (_db, proxy) = setup("subset_get").await;
    let handle = handle_of(&proxy, "table=items&where=owner%3D%27ann%27").await;
    let url = format!(
        "{}/v1/shape?table=items&where=owner%3D%27ann%27&handle={handle}&offset=0_0\
         &subset__where=id%20%3E%20%241&subset__params=%7B%221%22%3A%224%22%7D\
         &subset__order_by=id%20DESC&subset__limit=3",
        proxy.url
    );
    let response = proxy.http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["electric-snapshot"], "true");
    assert_eq!(response.headers()["electric-handle"], handle.as_str());
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert!(response.headers().get("electric-schema").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(ids(&body), ["20", "18", "16"]);
    let mark = body["metadata"]["snapshot_mark"].as_u64().unwrap();
    assert_eq!(body["data"][0]["headers"]["snapshot_mark"], mark);
    assert_eq!(body["data"][0]["headers"]["operation"], "insert");
    for key in ["xmin", "xmax", "database_lsn"] {
        assert!(
            body["metadata"][key]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .is_ok(),
            "{key}"
        );
    }
    assert!(body["metadata"]["xip_list"].is_array());
}

#[tokio::test]
async fn a_subset_can_be_posted_and_bad_subsets_name_the_field() {
    let (_db, proxy) = setup("subset_post").await;
    let handle = handle_of(&proxy, "table=items").await;
    let url = format!(
        "{}/v1/shape?table=items&handle={handle}&offset=0_0",
        proxy.url
    );
    let response = proxy
        .http()
        .post(&url)
        .json(&json!({"where": "owner = $1", "params": {"1": "bob"}, "order_by": "id", "limit": 2, "offset": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(ids(&body), ["3", "5"]);

    let bad = proxy
        .http()
        .post(&url)
        .json(&json!({"where": "owner ="}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    let message = body["errors"]["subset"]["where"][0].as_str().unwrap();
    assert!(message.starts_with("At location"), "{message}");

    let bad = proxy
        .http()
        .post(&url)
        .json(&json!({"limit": 2}))
        .send()
        .await
        .unwrap();
    let body: Value = bad.json().await.unwrap();
    assert_eq!(
        body["errors"]["subset"]["order_by"],
        json!(["order_by is required when limit or offset is present"])
    );
    let bad = proxy
        .http()
        .post(&url)
        .json(&json!({"order_by": "id; DROP TABLE items"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_electric_client_requests_a_snapshot_in_changes_only_mode() {
    let (db, proxy) = setup("subset_client").await;
    let mut client = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "log": "changes_only", "raw": true}),
    );
    client.wait_rows(WAIT, |rows| rows.is_empty()).await;
    client
        .command(json!({"op": "requestSnapshot", "params": {"where": "id <= 3", "orderBy": "id", "limit": 10}}))
        .await;
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 3).await;
    assert!(rows.contains_key("\"public\".\"items\"/\"2\""));
    db.connect()
        .await
        .batch_execute("UPDATE items SET title = 'changed' WHERE id = 2; INSERT INTO items VALUES (99, 'new', 'ann')")
        .await
        .unwrap();
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 4).await;
    assert_eq!(rows["\"public\".\"items\"/\"2\""]["title"], "changed");
    assert!(client.errors().is_empty(), "{:?}", client.errors());
}

/// The one snapshot connection (`--max-concurrent-snapshots 1`) is busy with an initial
/// snapshot stuck behind a lock: a subset does not open a connection of its own past the limit
/// but gets 503 with `retry-after`, naming the limit; once the slot is free it is served.
#[tokio::test]
async fn a_subset_gets_503_with_retry_after_while_every_snapshot_slot_is_busy() {
    let (db, proxy) = setup_with("subset_permit", &["--max-concurrent-snapshots", "1"]).await;
    let sql = db.connect().await;
    sql.batch_execute("CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other VALUES (1)")
        .await
        .unwrap();
    let handle = handle_of(&proxy, "table=items").await;
    // `other` joins the publication now, so the next shape of it needs no ALTER.
    handle_of(&proxy, "table=other").await;

    let mut holder = db.connect().await;
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE other IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let stuck = {
        let http = proxy.http().clone();
        let url = format!(
            "{}/v1/shape?table=other&where=id%20%3E%200&offset=-1",
            proxy.url
        );
        tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
    };
    tests::wait_for("the snapshot waiting for the lock", WAIT, || async {
        let waiting: i64 = sql
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'shapesync-snapshot' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (waiting == 1).then_some(())
    })
    .await;

    let subset_url = format!(
        "{}/v1/shape?table=items&handle={handle}&offset=0_0&subset__where=id%20%3C%203",
        proxy.url
    );
    let busy = proxy.http().get(&subset_url).send().await.unwrap();
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_eq!(busy.headers()["cache-control"], "no-store");
    let body: Value = busy.json().await.unwrap();
    assert_eq!(body["code"], "concurrent_request_limit_exceeded", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("--max-concurrent-snapshots") && message.contains("limit: 1"),
        "{message}"
    );

    lock.rollback().await.unwrap();
    assert_eq!(stuck.await.unwrap(), 200);
    let served = proxy.http().get(&subset_url).send().await.unwrap();
    assert_eq!(served.status(), 200);
    let body: Value = served.json().await.unwrap();
    assert_eq!(ids(&body), ["1", "2"]);
}

/// No `limit` means every matching row, however many: nothing is cut at some row count
/// (this once stopped at 100,000 without a word).
#[tokio::test]
async fn a_subset_without_limit_returns_every_row_even_past_100000() {
    let (db, proxy) = setup("subset_unlimited").await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY);
             INSERT INTO big SELECT generate_series(1, 100050);",
        )
        .await
        .unwrap();
    let handle = handle_of(&proxy, "table=big&log=changes_only").await;
    let response = proxy
        .http()
        .post(format!(
            "{}/v1/shape?table=big&log=changes_only&handle={handle}&offset=0_0",
            proxy.url
        ))
        .json(&json!({"where": "id > 0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let ids = ids(&body);
    assert_eq!(ids.len(), 100_050);
    let mut numbers: Vec<u32> = ids.iter().map(|id| id.parse().unwrap()).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 100_050);
    assert_eq!(numbers.last(), Some(&100_050));
}
