//! shapesync behind Debian's nginx with the repository's `nginx.conf` (README, "Behind nginx
//! or a CDN"): the first client of a shape fills the cache and every later one is served
//! from it; live long-polls of many clients collapse into one origin request per change;
//! max-age and stale-while-revalidate behave as Electric's cache tests expect; a rotated shape
//! never loops its clients; server-sent events pass through. Origin requests are counted by
//! the proxy itself (`shapesync_http_requests_total`).

use std::time::Duration;

use rstest::rstest;
use serde_json::json;
use tests::cache_edge::{CacheEdge, Kind};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::shape_http::{self, Event, EventStream, Reply};
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(60);

struct Edge {
    db: TestDb,
    proxy: ProxyProcess,
    cache: CacheEdge,
    http: reqwest::Client,
}

impl Edge {
    /// `items` with `rows` rows, a proxy with `flags` (small chunks), the cache in front.
    async fn start(kind: Kind, name: &str, rows: i32, flags: &[&str]) -> Self {
        let db = TestDb::new(name).await;
        db.connect()
            .await
            .batch_execute(&format!(
                "CREATE TABLE items (id int PRIMARY KEY, title text);
                 INSERT INTO items SELECT g, 'item number ' || g
                 FROM generate_series(1, {rows}) g;"
            ))
            .await
            .unwrap();
        let mut args = vec!["--chunk-bytes", "2000"];
        args.extend_from_slice(flags);
        let proxy = ProxyProcess::start(shapesync_bin!(), &db, &args).await;
        let cache = CacheEdge::start(kind, proxy.port).await;
        Self {
            db,
            proxy,
            cache,
            http: reqwest::Client::new(),
        }
    }

    /// `GET /v1/shape?<query>` through the cache.
    async fn get(&self, query: &str) -> Reply {
        shape_http::get(&self.http, &self.cache.url, query).await
    }

    /// Requests the proxy has answered on `/v1/shape`.
    async fn origin_requests(&self) -> u64 {
        self.metric("shapesync_http_requests_total").await
    }

    /// Long-polls and SSE streams waiting at the proxy.
    async fn live_connections(&self) -> u64 {
        self.metric("shapesync_live_connections").await
    }

    /// A counter or gauge of the proxy's `/metrics` (0 before its first value).
    async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.proxy.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |n| n.trim().parse::<f64>().unwrap() as u64)
    }

    /// A client's catch-up from `offset=-1` to up-to-date: each request and its answer.
    async fn catch_up(&self) -> Vec<(String, Reply)> {
        let mut query = "table=items&offset=-1".to_owned();
        let mut exchanges = Vec::new();
        loop {
            let reply = self.get(&query).await;
            assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
            let done = reply.header("electric-up-to-date").is_some();
            let next = format!(
                "table=items&handle={}&offset={}",
                reply.header("electric-handle").unwrap(),
                reply.header("electric-offset").unwrap()
            );
            exchanges.push((query, reply));
            if done {
                return exchanges;
            }
            query = next;
        }
    }

    async fn sql(&self, statement: &str) {
        self.db
            .connect()
            .await
            .batch_execute(statement)
            .await
            .unwrap();
    }
}

fn cache_status(reply: &Reply) -> &str {
    reply.header("x-proxy-cache").unwrap_or("none")
}

/// The initial answer and every catch-up chunk come from the cache for every client after the
/// first: the second client's whole catch-up costs the proxy nothing.
#[rstest]
#[tokio::test]
async fn catch_up_chunks_are_served_from_the_cache_after_the_first_client(
    #[values(Kind::Nginx, Kind::Varnish)] kind: Kind,
) {
    let edge = Edge::start(
        kind,
        &format!("cdn_catch_up_{kind:?}").to_lowercase(),
        200,
        &[],
    )
    .await;
    let first = edge.catch_up().await;
    assert!(first.len() >= 4, "small chunks: {} requests", first.len());
    assert!(
        first.iter().all(|(_, reply)| cache_status(reply) == "MISS"),
        "{:?}",
        first
            .iter()
            .map(|(_, r)| cache_status(r))
            .collect::<Vec<_>>()
    );
    let before = edge.origin_requests().await;
    let second = edge.catch_up().await;
    let after = edge.origin_requests().await;
    assert_eq!(
        second.iter().map(|(q, _)| q).collect::<Vec<_>>(),
        first.iter().map(|(q, _)| q).collect::<Vec<_>>(),
        "every client reads the same URLs"
    );
    for ((query, cached), (_, fresh)) in second.iter().zip(&first) {
        assert_eq!(cache_status(cached), "HIT", "{query}");
        assert_eq!(cached.body, fresh.body, "{query}");
    }
    assert_eq!(
        after, before,
        "the second client's catch-up reached the proxy"
    );
}

/// Fifty clients long-polling one shape: each change costs the proxy about one request, and
/// every client gets it.
#[rstest]
#[tokio::test]
async fn live_long_polls_of_many_clients_collapse_into_one_origin_request_per_change(
    #[values(Kind::Nginx, Kind::Varnish, Kind::VarnishFanout)] kind: Kind,
) {
    const CLIENTS: usize = 50;
    const CHANGES: i32 = 3;
    let edge = Edge::start(
        kind,
        &format!("cdn_collapse_{kind:?}").to_lowercase(),
        10,
        &[],
    )
    .await;
    let (_, last) = edge.catch_up().await.pop().unwrap();
    let handle = last.header("electric-handle").unwrap().to_owned();
    let mut offset = last.header("electric-offset").unwrap().to_owned();
    let mut cursor = last.header("electric-cursor").unwrap_or("0").to_owned();
    for change in 1..=CHANGES {
        let query =
            format!("table=items&handle={handle}&offset={offset}&cursor={cursor}&live=true");
        let before = edge.origin_requests().await;
        let polls: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (http, url, query) = (edge.http.clone(), edge.cache.url.clone(), query.clone());
                tokio::spawn(async move { shape_http::get(&http, &url, &query).await })
            })
            .collect();
        // The polls wait at the proxy (one) and in nginx (the others) until the change.
        wait_for("a live request at the proxy", WAIT, || async {
            (edge.origin_requests().await > before || edge.live_connections().await > 0)
                .then_some(())
        })
        .await;
        edge.sql(&format!(
            "INSERT INTO items VALUES ({}, 'live {change}')",
            1000 + change
        ))
        .await;
        let mut replies = Vec::new();
        for poll in polls {
            replies.push(poll.await.unwrap());
        }
        let origin = edge.origin_requests().await - before;
        assert!(
            origin <= 2,
            "change {change}: {origin} origin requests for {CLIENTS} clients"
        );
        for reply in &replies {
            assert_eq!(reply.status, 200);
            assert_eq!(
                reply.body, replies[0].body,
                "every client gets the same answer"
            );
        }
        let inserted = replies[0].changes();
        assert_eq!(inserted.len(), 1, "{:?}", replies[0].body);
        assert_eq!(inserted[0]["value"]["title"], format!("live {change}"));
        offset = replies[0].header("electric-offset").unwrap().to_owned();
        cursor = replies[0].header("electric-cursor").unwrap().to_owned();
    }
}

/// Electric's cache expectations with `--cache-max-age 1 --cache-stale-age 3`: a fresh
/// answer is a `HIT`; past max-age it is served `STALE` while nginx refreshes it in the
/// background; past the stale window nginx asks the proxy with the ETag and keeps its copy
/// (`REVALIDATED`, a 304 from the proxy).
#[tokio::test]
async fn max_age_and_stale_while_revalidate_behave_as_electric_expects() {
    let edge = Edge::start(
        Kind::Nginx,
        "cdn_stale",
        5,
        &["--cache-max-age", "1", "--cache-stale-age", "3"],
    )
    .await;
    let (query, reply) = edge.catch_up().await.pop().unwrap();
    assert_eq!(cache_status(&reply), "MISS");
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=1, stale-while-revalidate=3")
    );
    assert_eq!(cache_status(&edge.get(&query).await), "HIT");
    // nginx keeps times in whole seconds: 2.5 s is past max-age whatever the fraction.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stale = edge.get(&query).await;
    assert_eq!(cache_status(&stale), "STALE");
    assert_eq!(stale.body, reply.body);
    // The background refresh stored a new copy; past its max-age and its stale window
    // (1 + 3 s, and a second for nginx's rounding), the next request revalidates.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let revalidated = edge.get(&query).await;
    assert_eq!(cache_status(&revalidated), "REVALIDATED");
    assert_eq!(revalidated.body, reply.body);
}

/// A shape rotates (TRUNCATE) while its old initial answer is still in the cache: a new
/// Electric client reads the old answer, is told to refetch once, and converges on the new
/// rows: the 409 is not cached and the refetch does not come back to the old answer.
#[rstest]
#[tokio::test]
async fn a_rotated_shape_refetches_once_through_the_cache(
    #[values(Kind::Nginx, Kind::Varnish)] kind: Kind,
) {
    let edge = Edge::start(
        kind,
        &format!("cdn_rotate_{kind:?}").to_lowercase(),
        20,
        &[],
    )
    .await;
    let old_catch_up = edge.catch_up().await;
    edge.sql("TRUNCATE items; INSERT INTO items VALUES (7, 'after the truncate')")
        .await;
    let mut client = ElectricClient::start(&edge.cache.url, json!({"params": {"table": "items"}}));
    let rows = client
        .wait_rows(WAIT, |rows| {
            rows.len() == 1 && rows.values().any(|r| r["title"] == "after the truncate")
        })
        .await;
    assert_eq!(rows.len(), 1);
    let refetches = client
        .messages()
        .iter()
        .filter(|m| m["headers"]["control"] == "must-refetch")
        .count();
    assert!(refetches <= 1, "{refetches} refetches");
    // The cache still holds the old shape's answers (history does not change); at its live
    // edge the proxy answers 409, each time it is asked: a 409 is never stored.
    let (_, up_to_date) = old_catch_up.last().unwrap();
    let live = format!(
        "table=items&handle={}&offset={}&cursor={}&live=true",
        up_to_date.header("electric-handle").unwrap(),
        up_to_date.header("electric-offset").unwrap(),
        up_to_date.header("electric-cursor").unwrap_or("0"),
    );
    for _ in 0..2 {
        let before = edge.origin_requests().await;
        let reply = edge.get(&live).await;
        assert_eq!(reply.status, 409, "{live}");
        assert_eq!(reply.controls(), ["must-refetch"]);
        assert_eq!(
            edge.origin_requests().await,
            before + 1,
            "{live}: not from the proxy"
        );
    }
}

/// Server-sent events pass through nginx unbuffered and uncached.
#[rstest]
#[tokio::test]
async fn server_sent_events_pass_through(
    #[values(Kind::Nginx, Kind::Varnish, Kind::VarnishFanout)] kind: Kind,
) {
    let edge = Edge::start(kind, &format!("cdn_sse_{kind:?}").to_lowercase(), 3, &[]).await;
    let (_, last) = edge.catch_up().await.pop().unwrap();
    let query = format!(
        "table=items&handle={}&offset={}&live=true&live_sse=true",
        last.header("electric-handle").unwrap(),
        last.header("electric-offset").unwrap()
    );
    let mut stream = EventStream::open(&edge.http, &edge.cache.url, &query).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("x-proxy-cache"), Some("BYPASS"));
    edge.sql("INSERT INTO items VALUES (99, 'through nginx')")
        .await;
    loop {
        match stream.next(WAIT).await {
            Event::Data(message) if message["headers"]["operation"] == "insert" => {
                assert_eq!(message["value"]["title"], "through nginx");
                break;
            }
            Event::Data(_) | Event::Comment(_) => {}
            Event::Closed => panic!("the stream closed before the change"),
        }
    }
}

/// An app following 50 shapes live over HTTPS through nginx: with HTTP/2 (Node's own client)
/// all 50 SSE streams share one connection, and each gets the change. Over HTTP/1.1 a browser
/// would stall after 6.
#[tokio::test]
async fn fifty_live_shapes_share_one_http2_connection() {
    use tokio::io::AsyncBufReadExt;
    const SHAPES: i32 = 50;
    let edge = Edge::start(Kind::Nginx, "cdn_http2", 3, &[]).await;
    let (url, cert) = edge.cache.tls.clone().expect("nginx serves HTTPS");
    let queries: Vec<String> = (1..=SHAPES)
        .map(|i| format!("table=items&where=id%20%3E%20-{i}"))
        .collect();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("electric-client");
    let config = json!({"url": url, "ca": cert, "queries": queries});
    let (_child, stdin, stdout) = tests::electric::spawn_node(&dir, "h2.mjs", &config);
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut next = async || -> serde_json::Value {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the HTTP/2 client in time")
            .expect("its output")
            .expect("a line before it exits");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_ne!(event["type"], "error", "{event}");
        event
    };
    let ready = loop {
        let event = next().await;
        if event["type"] == "ready" {
            break event;
        }
    };
    assert_eq!(ready["streams"], SHAPES);
    assert_eq!(ready["sessions"], 1, "one connection for every shape");
    edge.sql("INSERT INTO items VALUES (77, 'over http2')")
        .await;
    let mut got = std::collections::BTreeSet::new();
    while got.len() < SHAPES as usize {
        let event = next().await;
        if event["type"] == "change" {
            assert_eq!(event["value"]["title"], "over http2", "{event}");
            got.insert(event["shape"].as_i64().unwrap());
        }
    }
    drop(stdin);
}

/// The same in a real browser: headless Chromium running the official Electric client follows
/// 50 shapes over SSE through nginx with TLS. Over HTTP/1.1 a browser opens at most 6
/// connections to an origin, so at most 6 streams could be open; all 50 get the change, and
/// every completed shape request went over HTTP/2.
#[tokio::test]
async fn fifty_live_shapes_in_a_browser_stream_at_once_over_http2() {
    use tokio::io::AsyncBufReadExt;
    const SHAPES: usize = 50;
    let edge = Edge::start(Kind::Nginx, "cdn_browser_h2", 3, &[]).await;
    let (url, _cert) = edge.cache.tls.clone().expect("nginx serves HTTPS");
    let queries: Vec<String> = (1..=SHAPES)
        .map(|i| format!("table=items&where=id%20%3E%20-{i}"))
        .collect();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ecosystems");
    let config = json!({"url": url, "queries": queries, "expect": "in a browser over http2"});
    let (_child, _stdin, stdout) =
        tests::electric::spawn_node(&dir, "electric-h2-browser.mjs", &config);
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut next = async || -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .expect("the browser in time")
            .expect("its output")
            .expect("a line before it exits");
        serde_json::from_str(&line).unwrap()
    };
    let ready = next().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["streams"], SHAPES, "every shape up to date: {ready}");
    edge.sql("INSERT INTO items VALUES (78, 'in a browser over http2')")
        .await;
    let done = next().await;
    assert_eq!(
        done["changed"], SHAPES,
        "every live stream got the change: {done}"
    );
    assert_eq!(done["errors"], json!([]), "{done}");
    let protocols = done["protocols"].as_array().unwrap();
    assert!(protocols.len() >= SHAPES, "{done}");
    assert!(protocols.iter().all(|p| p == "h2"), "{done}");
}
