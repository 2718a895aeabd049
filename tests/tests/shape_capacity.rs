//! How many shapes a proxy keeps: `--max-shapes` evicts the least recently used one, and many
//! clients asking at once for the same new shape share one snapshot.

use std::time::Duration;

use tests::proxy_process::ProxyProcess;
use tests::shape_http;
use tests::{TestDb, shapesync_bin};

async fn setup(name: &str, flags: &[&str]) -> (TestDb, ProxyProcess) {
    let db = TestDb::new(name).await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, flags).await;
    (db, proxy)
}

fn shape_dirs(proxy: &ProxyProcess) -> usize {
    std::fs::read_dir(proxy.storage_dir().join("v1/shapes"))
        .expect("shapes directory")
        .count()
}

/// With room for four shapes, using A, B and C again after D was made leaves D the least
/// recently used (though the newest): a fifth shape evicts D, and the others carry on. All of
/// it happens within a second or two.
#[tokio::test]
async fn max_shapes_evicts_the_least_recently_used_shape() {
    let (_db, proxy) = setup("capacity_lru", &["--max-shapes", "4"]).await;
    let http = proxy.http().clone();
    let url = &proxy.url;
    let shape = |id: u32| format!("table=items&where=id%20%3D%20{id}");
    let mut handles = Vec::new();
    for id in 1..=4 {
        let reply = shape_http::get(&http, url, &format!("{}&offset=-1", shape(id))).await;
        assert_eq!(reply.status, 200);
        handles.push(reply.header("electric-handle").unwrap().to_owned());
    }
    let follow = |id: u32| {
        let handle = handles[id as usize - 1].clone();
        let http = http.clone();
        async move {
            shape_http::get(
                &http,
                url,
                &format!("{}&offset=0_0&handle={handle}", shape(id)),
            )
            .await
            .status
        }
    };
    for id in [3, 1, 2] {
        assert_eq!(follow(id).await, 200);
    }

    let fifth = shape_http::get(&http, url, &format!("{}&offset=-1", shape(5))).await;
    assert_eq!(fifth.status, 200);
    // (A request for an evicted shape makes it again, evicting another: check D last.)
    for id in [1, 2, 3] {
        assert_eq!(
            follow(id).await,
            200,
            "shape {id} was used after D: it stays"
        );
    }
    assert_eq!(
        follow(4).await,
        409,
        "D was the least recently used: evicted"
    );
}

/// Twenty clients ask for the same new shape at once: one snapshot, one directory, one handle,
/// the same body for all.
#[tokio::test]
async fn concurrent_requests_for_a_new_shape_share_one_snapshot() {
    let (_db, proxy) = setup("capacity_shared", &[]).await;
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let http = proxy.http().clone();
            let url = proxy.url.clone();
            tokio::spawn(async move {
                shape_http::get(&http, &url, "table=items&where=id%20%3C%201500&offset=-1").await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await.unwrap());
    }
    let first = &replies[0];
    assert_eq!(first.status, 200);
    for reply in &replies {
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("electric-handle"),
            first.header("electric-handle")
        );
        assert_eq!(reply.body, first.body);
    }
    // Directories of losing creators are removed at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shape_dirs(&proxy), 1);
}

/// At the limit, many clients asking at once for one new shape make one shape, so they evict
/// one other shape, not one each.
#[tokio::test]
async fn concurrent_requests_for_a_new_shape_at_the_limit_evict_one_shape() {
    let (_db, proxy) = setup("capacity_shared_lru", &["--max-shapes", "4"]).await;
    let http = proxy.http().clone();
    let shape = |id: u32| format!("table=items&where=id%20%3D%20{id}");
    let mut handles = Vec::new();
    for id in 1..=4 {
        let reply = shape_http::get(&http, &proxy.url, &format!("{}&offset=-1", shape(id))).await;
        handles.push(reply.header("electric-handle").unwrap().to_owned());
    }
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let http = http.clone();
            let url = proxy.url.clone();
            let query = format!("{}&offset=-1", shape(5));
            tokio::spawn(async move { shape_http::get(&http, &url, &query).await.status })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    // Shapes 2, 3 and 4 stay (1 was the least recently used). Asking for an evicted one
    // would make it again, so look at the store from outside: the directories.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dirs: Vec<String> = std::fs::read_dir(proxy.storage_dir().join("v1/shapes"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for (i, handle) in handles.iter().enumerate().skip(1) {
        assert!(
            dirs.contains(handle),
            "shape {} was evicted although one eviction made room: {dirs:?}",
            i + 1
        );
    }
    assert_eq!(dirs.len(), 4, "{dirs:?}");
}

/// With `--max-concurrent-snapshots 1`, at most 16 new shapes may be in the making at once.
/// A burst of 24 distinct new shapes arrives while the table cannot be prepared yet (another
/// session holds a lock on it), so none of them can finish: exactly 8 are refused at once with
/// 503 and `retry-after`, however close together they arrive (counting and checking are one
/// step), and every one of them is served once retried.
#[tokio::test]
async fn a_burst_of_new_shapes_beyond_the_creation_queue_gets_503_and_succeeds_on_retry() {
    let (db, proxy) = setup(
        "capacity_burst",
        &["--max-concurrent-snapshots", "1", "--lock-timeout", "60s"],
    )
    .await;
    let mut holder = db.connect().await;
    let lock = holder.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE items IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let query = |id: usize| format!("table=items&where=id%20%3C%3E%20{id}&offset=-1");
    let mut burst = tokio::task::JoinSet::new();
    for id in 0..24 {
        let http = proxy.http().clone();
        let url = proxy.url.clone();
        let query = query(id);
        burst.spawn(async move { (id, shape_http::get(&http, &url, &query).await) });
    }
    let mut refused = Vec::new();
    while refused.len() < 8 {
        let (id, reply) = tokio::time::timeout(Duration::from_secs(30), burst.join_next())
            .await
            .expect("8 of the burst refused while the table is locked")
            .unwrap()
            .unwrap();
        assert_eq!(reply.status, 503, "{:?}", reply.body);
        assert_eq!(reply.header("retry-after"), Some("2"));
        assert_eq!(reply.body["code"], "concurrent_request_limit_exceeded");
        let message = reply.body["message"].as_str().unwrap();
        assert!(
            message.contains("--max-concurrent-snapshots 1"),
            "{message}"
        );
        refused.push(id);
    }
    lock.rollback().await.unwrap();
    let mut handles = std::collections::HashSet::new();
    while let Some(done) = burst.join_next().await {
        let (id, reply) = done.unwrap();
        assert_eq!(reply.status, 200, "shape {id}: {:?}", reply.body);
        handles.insert(reply.header("electric-handle").unwrap().to_owned());
    }
    assert_eq!(handles.len(), 16);
    for id in refused {
        let reply = tests::wait_for(
            "a refused shape served on retry",
            Duration::from_secs(30),
            || {
                let http = proxy.http().clone();
                let url = proxy.url.clone();
                let query = query(id);
                async move {
                    let reply = shape_http::get(&http, &url, &query).await;
                    assert!(
                        matches!(reply.status, 200 | 503),
                        "shape {id}: {} {:?}",
                        reply.status,
                        reply.body
                    );
                    (reply.status == 200).then_some(reply)
                }
            },
        )
        .await;
        handles.insert(reply.header("electric-handle").unwrap().to_owned());
    }
    assert_eq!(handles.len(), 24, "24 distinct shapes");
}

/// Many different shapes of a table no shape has used yet, asked for at once: every request
/// prepares the table (publication, REPLICA IDENTITY FULL on it and its partitions) and all of
/// them are answered; none gets a 503 from two preparations deadlocking on the table's lock.
#[tokio::test]
async fn concurrent_first_shapes_of_a_new_table_all_prepare_it() {
    let (_db, proxy) = setup("capacity_first_prepare", &[]).await;
    let http = proxy.http().clone();
    let url = proxy.url.clone();
    let requests = (1..=24).map(|id| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let query = format!("table=items&where=id%20%3D%20{id}&offset=-1");
            let reply = shape_http::get(&http, &url, &query).await;
            (id, reply.status, reply.body)
        })
    });
    for request in requests.collect::<Vec<_>>() {
        let (id, status, body) = request.await.expect("request task");
        assert_eq!(status, 200, "shape id = {id}: {body}");
    }
}

fn open_files(proxy: &ProxyProcess) -> usize {
    let pid = proxy.pid().expect("the proxy runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the proxy's descriptors")
        .count()
}

/// An idle shape holds no file descriptor: a proxy with many shapes does not run out of them
/// (the descriptor limit is often 1,024 or 20,000; an app may have 100,000 shapes). Each of
/// 300 shapes is made, answered, and then holds nothing open; a change routed to some of them
/// opens their logs only for as long as they are written.
#[tokio::test]
async fn idle_shapes_hold_no_open_files() {
    let (db, proxy) = setup("capacity_files", &[]).await;
    let http = proxy.http().clone();
    // The first shape opens what the proxy keeps (a snapshot connection, the table's
    // preparation): count from there.
    let first = shape_http::get(
        &http,
        &proxy.url,
        "table=items&where=id%20%3D%200&offset=-1",
    )
    .await;
    assert_eq!(first.status, 200);
    let before = open_files(&proxy);
    for id in 1..=300 {
        let reply = shape_http::get(
            &http,
            &proxy.url,
            &format!("table=items&where=id%20%3D%20{id}&offset=-1"),
        )
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.changes().len(), 1);
    }
    let after = open_files(&proxy);
    assert!(
        after <= before + 8,
        "300 idle shapes hold {} more descriptors ({before} → {after})",
        after - before.min(after)
    );
    db.connect()
        .await
        .batch_execute("UPDATE items SET title = 'changed' WHERE id <= 300")
        .await
        .unwrap();
    // Written logs stay open only until swept (at most a quarter of the descriptor limit).
    let changed = shape_http::get(
        &http,
        &proxy.url,
        "table=items&where=id%20%3D%201&offset=-1",
    )
    .await;
    assert_eq!(changed.status, 200);
}
