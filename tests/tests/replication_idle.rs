//! `--replication-idle-timeout`: with no live client and no change the proxy closes its
//! replication connection (Postgres sees no walsender); the next request opens it again and
//! answers only once every change committed meanwhile is in the shape; a live client keeps
//! it open.

use std::time::Duration;

use serde_json::json;
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::shape_http;
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(60);

async fn walsenders(sql: &tokio_postgres::Client) -> i64 {
    sql.query_one("SELECT count(*) FROM pg_stat_replication", &[])
        .await
        .unwrap()
        .get(0)
}

/// Connections the proxy keeps for snapshots.
async fn snapshot_connections(sql: &tokio_postgres::Client) -> i64 {
    sql.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'shapesync-snapshot'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

fn closes(proxy: &ProxyProcess) -> usize {
    proxy
        .log()
        .matches("closed the replication connection")
        .count()
}

#[tokio::test]
async fn an_idle_proxy_closes_replication_and_the_next_request_gets_every_change_made_meanwhile() {
    let db = TestDb::new("replication_idle").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a')",
    )
    .await
    .unwrap();
    let proxy =
        ProxyProcess::start_logging(shapesync_bin!(), &db, &["--replication-idle-timeout", "1s"])
            .await;
    let first = shape_http::get(proxy.http(), &proxy.url, "table=items&offset=-1").await;
    assert_eq!(first.status, 200);
    let handle = first.header("electric-handle").unwrap().to_owned();
    let offset = first.header("electric-offset").unwrap().to_owned();
    assert_eq!(first.changes().len(), 1);
    // The snapshot's connection is kept for the next one.
    assert_eq!(snapshot_connections(&sql).await, 1);

    wait_for("the idle proxy to close replication", WAIT, || async {
        (closes(&proxy) == 1).then_some(())
    })
    .await;
    assert_eq!(walsenders(&sql).await, 0, "no walsender while idle");
    // The connection kept from the snapshot is closed too (its backend exits a moment later).
    wait_for("the snapshot connection to close", WAIT, || async {
        (snapshot_connections(&sql).await == 0).then_some(())
    })
    .await;
    let (_, report) = proxy.get_json("/v1/status").await;
    assert_eq!(report["replication"]["state"], "idle", "{report}");

    // Changes made while it is closed.
    for id in 2..=4 {
        sql.execute("INSERT INTO items VALUES ($1, 'while closed')", &[&id])
            .await
            .unwrap();
    }
    let asked = std::time::Instant::now();
    let next = shape_http::get(
        proxy.http(),
        &proxy.url,
        &format!("table=items&handle={handle}&offset={offset}"),
    )
    .await;
    eprintln!(
        "the request that reopened replication was answered in {:?}",
        asked.elapsed()
    );
    assert_eq!(next.status, 200, "{:?}", next.body);
    let ids: Vec<_> = next
        .changes()
        .iter()
        .map(|c| c["value"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["2", "3", "4"], "every change made while closed");
    assert!(next.controls().contains(&"up-to-date".to_owned()));
    assert_eq!(walsenders(&sql).await, 1, "open again");
    assert!(
        proxy.log().contains("open again and caught up"),
        "{}",
        proxy.log()
    );

    // A live client keeps it open past the timeout, and gets changes as they come.
    let mut client = ElectricClient::start(&proxy.url, json!({"params": {"table": "items"}}));
    client.wait_rows(WAIT, |rows| rows.len() == 4).await;
    let closed_so_far = closes(&proxy);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(closes(&proxy), closed_so_far, "{}", proxy.log());
    assert_eq!(walsenders(&sql).await, 1);
    sql.execute("INSERT INTO items VALUES (5, 'live')", &[])
        .await
        .unwrap();
    client.wait_rows(WAIT, |rows| rows.len() == 5).await;
    drop(client);
    wait_for("the proxy to close replication again", WAIT, || async {
        (closes(&proxy) > closed_so_far).then_some(())
    })
    .await;
}
