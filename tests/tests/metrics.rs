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

/// Polls `/metrics` on `proxy` until `found` picks what the test waits for out of its text.
async fn wait_for_metrics<T>(
    proxy: &ProxyProcess,
    what: &str,
    timeout: Duration,
    found: impl Fn(&str) -> Option<T>,
) -> T {
    let url = format!("{}/metrics", proxy.url);
    let (url, found) = (&url, &found);
    tests::wait_for(what, timeout, move || async move {
        let text = proxy.http().get(url).send().await.ok()?.text().await.ok()?;
        found(&text)
    })
    .await
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
    let text = wait_for_metrics(
        &proxy,
        "a live connection in the metrics",
        Duration::from_secs(20),
        |text| (value(text, "shapesync_live_connections") == Some(1.0)).then(|| text.to_owned()),
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
    let text = wait_for_metrics(
        &proxy,
        "the changes in the metrics",
        Duration::from_secs(20),
        |text| {
            (value(text, "shapesync_changes_total").unwrap_or(0.0) >= 2.0).then(|| text.to_owned())
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

/// `GET /metrics` over a connection of its own, read to the end.
async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    socket.read_to_string(&mut text).await.unwrap();
    text
}

/// `shapesync_clients` counts open client connections, idle keep-alive ones and those still
/// to send a request included, from accept to close.
#[tokio::test]
async fn clients_count_open_connections_from_accept_to_close() {
    let db = TestDb::new("metrics_clients").await;
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let addr = format!("127.0.0.1:{}", proxy.port);
    let clients = |text: &str| value(text, "shapesync_clients").expect("shapesync_clients");
    // The scraping connection counts itself; others (the start-up health checks) may be open.
    let before = clients(&scrape(&addr).await);
    assert!(before >= 1.0);

    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let during = tests::wait_for("three more clients", Duration::from_secs(20), || {
        let addr = addr.clone();
        async move {
            let n = clients(&scrape(&addr).await);
            (n == before + 3.0).then_some(n)
        }
    })
    .await;
    assert_eq!(during, before + 3.0);

    drop(idle);
    tests::wait_for("the clients gone", Duration::from_secs(20), || {
        let addr = addr.clone();
        async move { (clients(&scrape(&addr).await) == before).then_some(()) }
    })
    .await;
}

/// A slot that retains more WAL than `--max-lag-bytes` (here: held back by a transaction left
/// open, so it cannot advance) is an ERROR log line and shows in
/// `shapesync_slot_retained_wal_bytes`.
#[tokio::test]
async fn a_slot_retaining_more_than_max_lag_bytes_logs_an_error_and_shows_in_the_gauge() {
    let db = TestDb::new("metrics_lag").await;
    let sql = db.connect().await;
    sql.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    sql.batch_execute("SELECT pg_create_logical_replication_slot('shapesync', 'pgoutput')")
        .await
        .unwrap();
    // A transaction with an xid that stays open: the slot must keep the WAL from its start.
    let mut holder = db.connect().await;
    let open = holder.transaction().await.unwrap();
    open.batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    sql.batch_execute(
        "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 10000) g",
    )
    .await
    .unwrap();

    let proxy =
        ProxyProcess::start_logging(shapesync_bin!(), &db, &["--max-lag-bytes", "1000000"]).await;
    let retained = wait_for_metrics(
        &proxy,
        "the retained WAL in the metrics",
        Duration::from_secs(30),
        |text| value(text, "shapesync_slot_retained_wal_bytes").filter(|v| *v > 1_000_000.0),
    )
    .await;
    assert!(retained > 1_000_000.0);
    let line = tests::wait_for("the ERROR log line", Duration::from_secs(30), || async {
        proxy
            .log()
            .lines()
            .find(|l| l.contains("ERROR") && l.contains("--max-lag-bytes"))
            .map(str::to_owned)
    })
    .await;
    assert!(
        line.contains("retained_bytes=") && line.contains("max_lag_bytes=1000000"),
        "{line}"
    );
    assert!(
        !line.contains('\x1b'),
        "no colour codes in a log file: {line}"
    );
    open.rollback().await.unwrap();
}

/// What the slot says: WAL not confirmed, and WAL retained, in bytes.
async fn slot_wal(sql: &tokio_postgres::Client) -> (f64, f64) {
    let row = sql
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8
             FROM pg_replication_slots WHERE slot_name = 'shapesync'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// `shapesync_replication_lag_bytes` and `shapesync_slot_retained_wal_bytes` read what
/// Postgres says of the slot, at a moment the WAL stands still (the gauges are measured every
/// 10 s, so this polls).
async fn wal_gauges_match_the_slot(proxy: &ProxyProcess, sql: &tokio_postgres::Client) {
    let addr = format!("127.0.0.1:{}", proxy.port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let before = slot_wal(sql).await;
        let text = scrape(&addr).await;
        let after = slot_wal(sql).await;
        let gauges = (
            value(&text, "shapesync_replication_lag_bytes"),
            value(&text, "shapesync_slot_retained_wal_bytes"),
        );
        if before == after && gauges == (Some(before.0), Some(before.1)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the WAL gauges (lag, retained) = {gauges:?}, the slot says {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every metric `/metrics` exports, against what Postgres says (WAL positions of the slot) or
/// what the test did (shapes, rows, requests, transactions, changes, live requests).
#[tokio::test]
async fn every_metric_tells_what_postgres_and_the_clients_saw() {
    use tests::shape_http::{self, EventStream};
    let db = TestDb::new("metrics_truth").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' FROM generate_series(1, 5) g",
    )
    .await
    .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let addr = format!("127.0.0.1:{}", proxy.port);
    // An idle proxy that has not seen a transaction yet lags by nothing the slot has not
    // confirmed (it used to report the absolute LSN).
    wal_gauges_match_the_slot(&proxy, &sql).await;

    let (http, url) = (proxy.http(), proxy.url.as_str());
    let mut requests = 0.0;
    let mut shape = |query: &'static str| {
        requests += 1.0;
        shape_http::get(http, url, query)
    };
    let all = shape("table=t&offset=-1").await;
    let low = shape("table=t&offset=-1&where=id%20%3C%3D%202").await;
    let high = shape("table=t&offset=-1&where=id%20%3E%203").await;
    let bad = shape("table=t&offset=bogus").await;
    let handle = |reply: &shape_http::Reply| reply.header("electric-handle").unwrap().to_owned();
    for (reply, status, rows) in [
        (&all, 200, 5),
        (&low, 200, 2),
        (&high, 200, 2),
        (&bad, 400, 0),
    ] {
        assert_eq!(reply.status, status, "{:?}", reply.body);
        assert_eq!(reply.changes().len(), rows, "{:?}", reply.body);
    }
    let deleted = http
        .delete(format!("{url}/v1/shape?handle={}", handle(&high)))
        .send()
        .await
        .unwrap();
    requests += 1.0;
    assert_eq!(deleted.status(), 202);

    // Two live requests: a long-poll and an SSE stream.
    let long_poll = {
        let request = http.get(format!(
            "{url}/v1/shape?table=t&offset=0_0&handle={}&live=true",
            handle(&all)
        ));
        tokio::spawn(request.send())
    };
    let sse_query = format!(
        "table=t&where=id%20%3C%3D%202&offset=0_0&handle={}&live=true&live_sse=true",
        handle(&low)
    );
    let mut sse = EventStream::open(http, url, &sse_query).await;
    requests += 2.0;
    assert_eq!(sse.status, 200);
    wait_for_metrics(
        &proxy,
        "two live requests",
        Duration::from_secs(30),
        |text| (value(text, "shapesync_live_connections") == Some(2.0)).then_some(()),
    )
    .await;

    let committed = std::time::Instant::now();
    sql.batch_execute("INSERT INTO t VALUES (6, 'a'), (7, 'b')")
        .await
        .unwrap();
    sql.batch_execute("UPDATE t SET v = 'c' WHERE id <= 3")
        .await
        .unwrap();
    sql.batch_execute("DELETE FROM t WHERE id = 7")
        .await
        .unwrap();
    let text = wait_for_metrics(
        &proxy,
        "three transactions",
        Duration::from_secs(30),
        |text| {
            (value(text, "shapesync_transactions_total").unwrap_or(0.0) >= 3.0)
                .then(|| text.to_owned())
        },
    )
    .await;
    assert_eq!(
        value(&text, "shapesync_transactions_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(value(&text, "shapesync_changes_total"), Some(6.0), "{text}");
    let lag_seconds = value(&text, "shapesync_replication_lag_seconds").expect("lag seconds");
    assert!(
        (0.0..=committed.elapsed().as_secs_f64()).contains(&lag_seconds),
        "a commit is processed after it happens and before the test sees it: {lag_seconds}"
    );
    let answered = long_poll.await.unwrap().unwrap();
    assert_eq!(answered.status(), 200);
    let changes = sse.until_up_to_date(Duration::from_secs(30)).await;
    assert!(!changes.is_empty());
    drop(sse);

    let text = scrape(&addr).await;
    assert_eq!(value(&text, "shapesync_shapes"), Some(2.0), "{text}");
    assert_eq!(
        value(&text, "shapesync_snapshot_rows_total"),
        Some(9.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "shapesync_http_requests_total"),
        Some(requests),
        "every request to /v1/shape, a 400 and a DELETE included: {text}"
    );

    // WAL of a table no shape reads moves the server's position; an idle proxy's slot
    // confirms it, and the lag says so.
    sql.batch_execute("CREATE TABLE unrelated AS SELECT g FROM generate_series(1, 10000) g")
        .await
        .unwrap();
    wal_gauges_match_the_slot(&proxy, &sql).await;
}
