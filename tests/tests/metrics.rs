//! `GET /metrics`: what operators graph and alert on.

use std::time::Duration;

use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_shapes_changes_snapshots_and_live_connections() {
    let db = TestDb::new("metrics").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 5)",
    )
    .await
    .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let first = proxy
        .http()
        .get(format!("{}/v1/shape?table=t&offset=-1", proxy.url))
        .send()
        .await
        .unwrap();
    let handle = first.headers()["electric-handle"]
        .to_str()
        .unwrap()
        .to_owned();
    let live = {
        let http = proxy.http().clone();
        let url = format!(
            "{}/v1/shape?table=t&offset=0_0&handle={handle}&live=true",
            proxy.url
        );
        tokio::spawn(async move { http.get(url).send().await })
    };
    let metrics_url = format!("{}/metrics", proxy.url);
    let text = tests::wait_for(
        "a live connection in the metrics",
        Duration::from_secs(20),
        || {
            let http = proxy.http().clone();
            let url = metrics_url.clone();
            async move {
                let text = http.get(url).send().await.ok()?.text().await.ok()?;
                (value(&text, "shapesync_live_connections") == Some(1.0)).then_some(text)
            }
        },
    )
    .await;
    assert_eq!(value(&text, "shapesync_shapes"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "shapesync_snapshot_rows_total"),
        Some(5.0),
        "{text}"
    );
    assert!(
        value(&text, "shapesync_slot_retained_wal_bytes").is_some(),
        "{text}"
    );

    sql.batch_execute("INSERT INTO t VALUES (6), (7)")
        .await
        .unwrap();
    live.await.unwrap().unwrap();
    let text = tests::wait_for(
        "the changes in the metrics",
        Duration::from_secs(20),
        || {
            let http = proxy.http().clone();
            let url = metrics_url.clone();
            async move {
                let text = http.get(url).send().await.ok()?.text().await.ok()?;
                (value(&text, "shapesync_changes_total").unwrap_or(0.0) >= 2.0).then_some(text)
            }
        },
    )
    .await;
    assert!(
        value(&text, "shapesync_transactions_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "shapesync_replication_lag_seconds").is_some(),
        "{text}"
    );
    assert_eq!(
        value(&text, "shapesync_live_connections"),
        Some(0.0),
        "{text}"
    );
}
