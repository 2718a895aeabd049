//! An RxDB app in headless Chromium (Dexie storage, i.e. IndexedDB; the page on its own
//! origin, so every request is cross-origin and carries a token, as a web app's would) and one
//! in Node, replicating `items`.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn rxdb_in_chromium_with_indexeddb_converges_with_a_node_client() {
    let db = database("eco_rxdb_browser", ITEMS).await;
    let sql = db.connect().await;
    let rules = tempfile::tempdir().expect("rules dir");
    let proxy = auth_proxy(&db, &rules, ITEMS_RULES, "items").await;
    let mut page = rxdb_browser(&proxy.url, "page", &token("page-user"));
    let mut node = rxdb_node_with_token(&proxy.url, "node", Some(&token("node-user")));
    start(&mut page).await;
    start(&mut node).await;
    let rows = items(&sql).await;
    wait_docs(&mut page, &rows).await;
    wait_docs(&mut node, &rows).await;

    // Live: an SQL insert reaches the page through its EventSource.
    sql.batch_execute("INSERT INTO items VALUES ('i4', 'four', false, 4)")
        .await
        .expect("insert by SQL");
    let rows = items(&sql).await;
    wait_docs(&mut page, &rows).await;
    let seen = page.ok("seen", json!({})).await;
    assert!(
        seen["streamed"]
            .as_array()
            .expect("ids")
            .contains(&json!("i4")),
        "the insert came through pullStream: {seen}"
    );

    // The page goes offline, and is reloaded: its documents come back from IndexedDB.
    page.ok("stop", json!({})).await;
    page.ok("reload", json!({})).await;
    assert_eq!(page.ok("docs", json!({})).await, rows, "kept in IndexedDB");
    // Offline, it edits i1, which the Node client changes meanwhile.
    page.ok(
        "patch",
        json!({"id": "i1", "patch": {"title": "page offline"}}),
    )
    .await;
    page.ok(
        "insert",
        json!({"doc": item("p1", "from the page", true, 20)}),
    )
    .await;
    node.ok(
        "patch",
        json!({"id": "i1", "patch": {"title": "node online"}}),
    )
    .await;
    node.ok("remove", json!({"id": "i2"})).await;
    node.ok("inSync", json!({})).await;

    start(&mut page).await;
    page.ok("inSync", json!({})).await;
    let end = json!([
        item("i1", "node online", false, 1),
        item("i3", "three", false, 3),
        item("i4", "four", false, 4),
        item("p1", "from the page", true, 20)
    ]);
    assert_eq!(items(&sql).await, end, "the master won i1; the rest landed");
    wait_docs(&mut page, &end).await;
    wait_docs(&mut node, &end).await;
    let seen = page.ok("seen", json!({})).await;
    assert_eq!(seen["errors"], json!([]), "replication errors in the page");
    page.ok("close", json!({})).await;
}
