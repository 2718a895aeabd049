//! A token's `exp` ends the live responses made with it: what is committed after `exp` never
//! reaches that response, the response ends, and the same token is refused afterwards (the
//! client must come back with a fresh one). SSE and long-poll alike, with real tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};
use tests::proxy_process::ProxyProcess;
use tests::shape_http::{Event, EventStream};

use super::support::*;

/// Seconds a token lives in these tests: enough for the requests before `exp` on a loaded
/// machine.
const LIFETIME: u64 = 10;
/// Longer than any wait of these tests: without the expiry, a live response would stay open
/// (and carry the change made after `exp`).
const LIVE_TIMEOUT: &str = "300s";
/// How long the live response gets to end after `exp` (generous: it ends at `exp`).
const ENDS_WITHIN: Duration = Duration::from_secs(60);

async fn proxy(world: &World, name: &str) -> ProxyProcess {
    world
        .proxy(
            name,
            &[
                "--long-poll-timeout",
                LIVE_TIMEOUT,
                "--sse-timeout",
                LIVE_TIMEOUT,
            ],
        )
        .await
}

/// Alice's token, expiring [`LIFETIME`] seconds from now, and its `exp`.
fn expiring_token() -> (String, u64) {
    let exp = jsonwebtoken::get_current_timestamp() + LIFETIME;
    (hs256(&claims_with("alice", json!({"exp": exp}))), exp)
}

/// Sleeps until the wall clock is a second past `exp`.
async fn sleep_past(exp: u64) {
    let past = UNIX_EPOCH + Duration::from_secs(exp + 1);
    if let Ok(left) = past.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

async fn insert_todo(world: &World, title: &str) {
    world
        .sql()
        .await
        .execute(
            "INSERT INTO todos (owner_id, title) VALUES ('alice', $1)",
            &[&title],
        )
        .await
        .expect("insert a todo");
}

/// The titles of the change messages among `messages`.
fn titles(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| m["value"]["title"].as_str().map(str::to_owned))
        .collect()
}

/// The todos shape's handle after its snapshot, read with `cred`.
async fn snapshot_handle(proxy: &ProxyProcess, cred: &Cred) -> String {
    let first = send(
        proxy,
        Method::GET,
        "/v1/shape?table=todos&offset=-1",
        cred,
        None,
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    first
        .header("electric-handle")
        .expect("electric-handle")
        .to_owned()
}

/// The next live request with the expired token is refused, saying why.
/// A GET of `path` with `token`, sent from its own task (so the test can act while it waits).
fn spawn_get(
    proxy: &ProxyProcess,
    path: &str,
    token: &str,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let request = proxy
        .http()
        .get(format!("{}{path}", proxy.url))
        .bearer_auth(token);
    tokio::spawn(request.send())
}

async fn the_token_is_refused(proxy: &ProxyProcess, path: &str, token: &str) {
    let again = send(
        proxy,
        Method::GET,
        path,
        &Cred::Bearer(token.to_owned()),
        None,
    )
    .await;
    assert_eq!(again.status, 401, "{}", again.text);
    assert_eq!(
        again.json()["message"],
        "the token has expired",
        "{}",
        again.text
    );
}

#[tokio::test]
async fn an_sse_response_ends_at_the_tokens_exp() {
    let world = World::new("auth_exp_sse").await;
    let proxy = proxy(&world, "auth_exp_sse").await;
    let (token, exp) = expiring_token();
    let handle = snapshot_handle(&proxy, &Cred::Bearer(token.clone())).await;
    let path = format!("/v1/shape?table=todos&offset=0_0&handle={handle}&live=true&live_sse=true");
    let query = format!(
        "{}&token={}",
        path.trim_start_matches("/v1/shape?"),
        encode_query(&token)
    );
    let mut stream = EventStream::open(proxy.http(), &proxy.url, &query).await;
    assert_eq!(stream.status, 200);

    // Before `exp` the stream carries changes (an SSE request at an up-to-date offset sends no
    // up-to-date of its own: the first comes with this change).
    insert_todo(&world, "before exp").await;
    let before = stream.until_up_to_date(WAIT).await;
    assert_eq!(titles(&before), ["before exp"], "{before:?}");

    sleep_past(exp).await;
    insert_todo(&world, "after exp").await;
    let mut after = Vec::new();
    let ended = tokio::time::timeout(ENDS_WITHIN, async {
        loop {
            match stream.next(ENDS_WITHIN).await {
                Event::Data(message) => after.push(message),
                Event::Comment(_) => {}
                Event::Closed => return,
            }
        }
    })
    .await;
    assert_eq!(
        titles(&after),
        Vec::<String>::new(),
        "a change committed after exp reached the response: {after:?}"
    );
    assert!(ended.is_ok(), "the SSE response did not end: {after:?}");
    the_token_is_refused(&proxy, &path, &token).await;
}

#[tokio::test]
async fn a_long_poll_ends_at_the_tokens_exp() {
    let world = World::new("auth_exp_long_poll").await;
    let proxy = proxy(&world, "auth_exp_long_poll").await;
    let (token, exp) = expiring_token();
    let cred = Cred::Bearer(token.clone());
    let handle = snapshot_handle(&proxy, &cred).await;
    let live_after =
        |offset: &str| format!("/v1/shape?table=todos&offset={offset}&handle={handle}&live=true");

    // Before `exp` a long-poll answers the change.
    let waiting = spawn_get(&proxy, &live_after("0_0"), &token);
    // (Whether the request waits before the insert or comes after it, it answers the change.)
    insert_todo(&world, "before exp").await;
    let answered = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the long-poll answers the change")
        .expect("the request task")
        .expect("the long-poll");
    assert_eq!(answered.status(), 200);
    let offset = answered.headers()["electric-offset"]
        .to_str()
        .expect("electric-offset")
        .to_owned();
    let body: Value = answered.json().await.expect("a JSON body");
    assert_eq!(
        titles(body.as_array().expect("an array")),
        ["before exp"],
        "{body}"
    );

    // The next long-poll is open across `exp`; a change after it does not reach it.
    let path = live_after(&offset);
    let waiting = spawn_get(&proxy, &path, &token);
    sleep_past(exp).await;
    insert_todo(&world, "after exp").await;
    let ended = tokio::time::timeout(ENDS_WITHIN, waiting)
        .await
        .expect("the long-poll ends")
        .expect("the request task")
        .expect("the long-poll");
    assert_eq!(ended.status(), 200);
    let headers = ended.headers().clone();
    let body: Value = ended.json().await.expect("a JSON body");
    assert_eq!(
        titles(body.as_array().expect("an array")),
        Vec::<String>::new(),
        "a change committed after exp reached the response: {body}"
    );
    assert!(headers.contains_key("electric-up-to-date"), "{headers:?}");
    assert_eq!(headers["electric-offset"], offset.as_str());
    the_token_is_refused(&proxy, &path, &token).await;
}
