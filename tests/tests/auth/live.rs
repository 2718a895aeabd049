//! Auth over time: live updates with the official Electric client, shape identity and caching
//! per claims (across a restart), per-token limits, ES256 with the example rules file, and
//! start-up checks of the rules.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tests::cases::Cases;
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::{shapesync_bin, wait_for};

use super::matrix::query;
use super::support::*;

fn todos_of(rows: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut titles: Vec<String> = rows
        .values()
        .map(|r| r["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    titles.sort();
    titles
}

async fn live_rows_stay_the_subscribers_own(sse: bool) {
    let name = if sse { "auth_live_sse" } else { "auth_live_lp" };
    let world = World::new(name).await;
    let proxy = world.proxy(name, &[]).await;
    let token = hs256(&claims("alice"));
    let config = if sse {
        // EventSource-style: the token in the query.
        json!({"params": {"table": "todos", "token": token}, "sse": true, "raw": true})
    } else {
        json!({"params": {"table": "todos"}, "raw": true,
               "headers": {"Authorization": format!("Bearer {token}")}})
    };
    let mut client = ElectricClient::start(&proxy.url, config);
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 3).await;
    assert_eq!(
        todos_of(&rows),
        ["Buy milk", "Water the plants", "alice private plan"]
    );
    let sql = world.sql().await;
    // Bob's changes alone, then with one of alice's in the same transaction (so when hers
    // arrives, his have been routed too).
    sql.batch_execute(
        "INSERT INTO todos (id, owner_id, title) VALUES
             ('b0b00000-0000-4000-8000-0000000000c1', 'bob', 'BOB-LIVE-INSERT-1');
         UPDATE todos SET title = 'BOB-LIVE-UPDATE-2'
             WHERE id = 'b0b00000-0000-4000-8000-000000000001';",
    )
    .await
    .expect("bob's writes");
    sql.batch_execute(
        "UPDATE todos SET title = 'BOB-LIVE-UPDATE-3', done = true
             WHERE id = '8f1d7a0e-0c1e-4a53-9a55-0a4f6f0b0003';
         UPDATE todos SET owner_id = 'bob', title = 'BOB-LIVE-TAKEN-4'
             WHERE id = 'a11ce000-0000-4000-8000-000000000001';
         INSERT INTO todos (id, owner_id, title) VALUES
             ('a11ce000-0000-4000-8000-0000000000c2', 'alice', 'alice live');",
    )
    .await
    .expect("mixed writes");
    let rows = client
        .wait_rows(WAIT, |rows| {
            todos_of(rows) == ["Buy milk", "Water the plants", "alice live"]
        })
        .await;
    assert!(
        !rows.contains_key(&format!("\"public\".\"todos\"/\"{ALICE_PLAN}\"")),
        "the todo given to bob left alice's shape"
    );
    // A row handed from bob to alice moves in.
    sql.batch_execute(
        "UPDATE todos SET owner_id = 'alice', title = 'from bob'
             WHERE id = 'b0b00000-0000-4000-8000-0000000000c1'",
    )
    .await
    .expect("hand over");
    client
        .wait_rows(WAIT, |rows| todos_of(rows).contains(&"from bob".to_owned()))
        .await;
    let seen = serde_json::to_string(&client.history).expect("history");
    for value in [
        "BOB-LIVE-INSERT-1",
        "BOB-LIVE-UPDATE-2",
        "BOB-LIVE-UPDATE-3",
        "BOB-LIVE-TAKEN-4",
        "BOB-TODO-TITLE-5581",
        "Book the dentist",
        BOB_TODO,
        BOB_DENTIST,
        "4242.125",
    ] {
        assert!(!seen.contains(value), "the client saw {value}");
    }
    assert!(client.errors().is_empty(), "{:?}", client.errors());
}

#[tokio::test]
async fn long_poll_subscriber_with_a_bearer_header_never_gets_another_owners_changes() {
    live_rows_stay_the_subscribers_own(false).await;
}

#[tokio::test]
async fn sse_subscriber_with_a_query_token_never_gets_another_owners_changes() {
    live_rows_stay_the_subscribers_own(true).await;
}

async fn first_chunk(proxy: &ProxyProcess, table: &str, cred: &Cred) -> Reply {
    send(
        proxy,
        Method::GET,
        &format!("/v1/shape?{}", query(&[("table", table), ("offset", "-1")])),
        cred,
        None,
    )
    .await
}

/// The todos shape `handle` after its snapshot (`offset=0_0`).
async fn after_snapshot(proxy: &ProxyProcess, handle: &str, cred: &Cred) -> Reply {
    let path = format!("/v1/shape?table=todos&offset=0_0&handle={handle}");
    send(proxy, Method::GET, &path, cred, None).await
}

#[tokio::test]
async fn claims_decide_the_handle_and_caching_and_a_restart_keeps_both() {
    let world = World::new("auth_identity").await;
    let mut proxy = world.proxy("auth_identity", &[]).await;
    let alice = Cred::Bearer(hs256(&claims("alice")));
    let bob = Cred::Bearer(hs256(&claims("bob")));
    let secret = Cred::Secret(SECRET.into());

    let a = first_chunk(&proxy, "todos", &alice).await;
    let b = first_chunk(&proxy, "todos", &bob).await;
    let s = first_chunk(&proxy, "todos", &secret).await;
    let a_again = first_chunk(
        &proxy,
        "todos",
        &Cred::Query(rs256(&claims_with(
            "alice",
            json!({"exp": 4_000_000_000u64}),
        ))),
    )
    .await;
    for reply in [&a, &b, &s, &a_again] {
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let handle = |r: &Reply| r.header("electric-handle").expect("handle").to_owned();
    assert_ne!(handle(&a), handle(&b), "different claims, different shapes");
    assert_ne!(
        handle(&a),
        handle(&s),
        "a filtered shape is not the whole table"
    );
    assert_eq!(
        handle(&a),
        handle(&a_again),
        "the same claims, another token"
    );
    assert_eq!(a.rows().len(), 3);
    assert_eq!(b.rows().len(), 2);

    let cache = |r: &Reply| r.header("cache-control").unwrap_or_default().to_owned();
    assert!(cache(&a).starts_with("private, "), "{}", cache(&a));
    let vary: Vec<&str> = a
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(vary.iter().any(|v| v.contains("authorization")), "{vary:?}");
    assert!(cache(&s).starts_with("public, "), "{}", cache(&s));
    let public = first_chunk(&proxy, "announcements", &alice).await;
    assert!(cache(&public).starts_with("public, "), "{}", cache(&public));

    // Catching up, then the live SSE stream, stay private.
    let h = handle(&a);
    let catch_up = after_snapshot(&proxy, &h, &alice).await;
    assert_eq!(catch_up.status, 200, "{}", catch_up.text);
    assert!(cache(&catch_up).starts_with("private, "));
    let sse = proxy
        .http()
        .get(format!(
            "{}/v1/shape?table=todos&offset=0_0&handle={h}&live=true&live_sse=true",
            proxy.url
        ))
        .bearer_auth(hs256(&claims("alice")))
        .send()
        .await
        .expect("SSE stream");
    assert_eq!(sse.status(), 200);
    let sse_cache = sse
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok());
    assert_eq!(sse_cache, Some("private, max-age=59"));
    drop(sse);

    // Subset snapshots of her shape are private too (GET and POST forms); those of shapes
    // without claims stay shareable.
    let subset = |table: &str, handle: &str| {
        format!(
            "/v1/shape?{}",
            query(&[
                ("table", table),
                ("handle", handle),
                ("offset", "0_0"),
                ("subset__where", "true"),
            ])
        )
    };
    let varies = |r: &Reply| {
        r.headers
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("authorization"))
    };
    let own_subset = send(&proxy, Method::GET, &subset("todos", &h), &alice, None).await;
    let own_post = send(
        &proxy,
        Method::POST,
        &format!("/v1/shape?table=todos&handle={h}&offset=0_0"),
        &alice,
        Some(&json!({"where": "true", "order_by": "title", "limit": 10})),
    )
    .await;
    for reply in [&own_subset, &own_post] {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("electric-snapshot"), Some("true"));
        assert_eq!(cache(reply), "private, no-cache");
        assert!(varies(reply), "{:?}", reply.headers);
        assert_eq!(reply.rows().len(), 3);
    }
    let secret_subset = send(
        &proxy,
        Method::GET,
        &subset("todos", &handle(&s)),
        &secret,
        None,
    )
    .await;
    let public_subset = send(
        &proxy,
        Method::GET,
        &subset("announcements", &handle(&public)),
        &alice,
        None,
    )
    .await;
    for reply in [&secret_subset, &public_subset] {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(cache(reply), "no-cache");
        assert!(!varies(reply), "{:?}", reply.headers);
    }

    // Bob with alice's handle is sent to his own shape, and sees none of hers.
    let stolen = after_snapshot(&proxy, &h, &bob).await;
    assert_eq!(stolen.status, 409, "{}", stolen.text);
    assert_eq!(stolen.header("electric-handle"), Some(handle(&b).as_str()));
    assert!(stolen.leaks(forbidden_for(Viewer::Bob)).is_empty());

    proxy.restart().await;
    let after = first_chunk(&proxy, "todos", &alice).await;
    assert_eq!(handle(&after), h, "the filter was kept on disk");
    let resumed = after_snapshot(&proxy, &h, &alice).await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    assert_eq!(
        handle(&first_chunk(&proxy, "todos", &bob).await),
        handle(&b)
    );
}

#[tokio::test]
async fn limits_refuse_one_token_and_spare_the_others() {
    let world = World::new("auth_limits").await;
    let proxy = world
        .proxy(
            "auth_limits",
            &[
                "--max-new-shapes-per-minute",
                "2",
                "--max-live-connections-per-token",
                "1",
                "--max-url-bytes",
                "4096",
                "--long-poll-timeout",
                "2s",
                "--sse-timeout",
                "2s",
            ],
        )
        .await;
    let alice_token = hs256(&claims("alice"));
    let alice = Cred::Bearer(alice_token.clone());
    let bob = Cred::Bearer(hs256(&claims("bob")));
    let get = |params: Vec<(&'static str, String)>, cred: Cred| {
        let proxy = &proxy;
        async move {
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(
                proxy,
                Method::GET,
                &format!("/v1/shape?{}", query(&params)),
                &cred,
                None,
            )
            .await
        }
    };
    let todos = |where_: &str| -> Vec<(&'static str, String)> {
        vec![
            ("table", "todos".to_owned()),
            ("offset", "-1".to_owned()),
            ("where", where_.to_owned()),
        ]
    };
    let first = get(todos("true"), alice.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(get(todos("done"), alice.clone()).await.status, 200);
    let third = get(todos("NOT done"), alice.clone()).await;
    assert_eq!(third.status, 429, "{}", third.text);
    assert!(
        third.text.contains("--max-new-shapes-per-minute"),
        "{}",
        third.text
    );
    let retry: u64 = third
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        get(todos("true"), alice.clone()).await.status,
        200,
        "existing shapes still work"
    );
    let bobs_shape = get(todos("NOT done"), bob.clone()).await;
    assert_eq!(bobs_shape.status, 200, "{}", bobs_shape.text);
    assert_eq!(
        get(todos("NOT done"), Cred::Secret(SECRET.into()))
            .await
            .status,
        200
    );

    // Live connections: alice holds one SSE stream; a second live request is refused.
    let live = |reply: &Reply, where_: &str, sse: bool| {
        let mut params = todos(where_);
        params.retain(|(k, _)| *k != "offset");
        params.extend([
            ("offset", "0_0".to_owned()),
            (
                "handle",
                reply
                    .header("electric-handle")
                    .unwrap_or_default()
                    .to_owned(),
            ),
            ("live", "true".to_owned()),
        ]);
        if sse {
            params.push(("live_sse", "true".to_owned()));
        }
        params
    };
    // Headers arrive once the stream holds its slot. The same token in the query counts
    // against the same limit as in the header.
    let sse_params = live(&first, "true", true);
    let sse_params: Vec<(&str, &str)> = sse_params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut url = format!("{}/v1/shape?{}", proxy.url, query(&sse_params));
    url.push_str(&format!("&token={}", encode_query(&alice_token)));
    let stream = proxy.http().get(&url).send().await.expect("SSE stream");
    assert_eq!(stream.status(), 200);
    let second = get(live(&first, "true", false), alice.clone()).await;
    assert_eq!(second.status, 429, "{}", second.text);
    assert!(second.text.contains("live connections"), "{}", second.text);
    assert!(second.header("retry-after").is_some());
    let bobs_live = get(live(&bobs_shape, "NOT done", false), bob.clone()).await;
    assert_eq!(
        bobs_live.status, 200,
        "bob is not limited by alice: {}",
        bobs_live.text
    );
    drop(stream);
    // The stream ends by itself after --sse-timeout; then alice may go live again.
    wait_for("alice's live slot to be freed", WAIT, || {
        let request = get(live(&first, "true", false), alice.clone());
        async move { (request.await.status == 200).then_some(()) }
    })
    .await;

    // Long URLs are refused before anything else, for everyone.
    let long = get(todos(&format!("title <> '{}'", "x".repeat(5000))), bob).await;
    assert_eq!(long.status, 414, "{}", long.text);
    assert!(long.text.contains("--max-url-bytes"), "{}", long.text);
}

#[tokio::test]
async fn es256_tokens_with_the_example_rules_file() {
    let world = World::new("auth_example_rules").await;
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules.example.toml");
    let public_key = fixture("es256-public.pem");
    let proxy = ProxyProcess::start(
        shapesync_bin!(),
        &world.db,
        &[
            "--jwt-public-key",
            &public_key.display().to_string(),
            "--rules",
            &rules.display().to_string(),
            "--writable",
            "todos,notes",
            "--tombstones",
            "todos,notes",
            "--yjs-columns",
            "notes.body",
        ],
    )
    .await;
    let alice = Cred::Bearer(es256(&claims("alice")));
    let bobs = [
        BOB_TODO,
        BOB_DENTIST,
        "BOB-TODO-TITLE-5581",
        "BOB-NOTE-TITLE-9913",
        "SECRET-CODE-BOB-2",
    ];
    let own = first_chunk(&proxy, "todos", &alice).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.rows().len(), 3);
    assert!(own.leaks(&bobs).is_empty());
    assert!(own.text.contains("4242.125"), "position is readable here");
    for (cred, what) in [
        (Cred::Bearer(rs256(&claims("alice"))), "RS256"),
        (Cred::Bearer(hs256(&claims("alice"))), "HS256"),
        (Cred::Secret("anything".into()), "a secret"),
    ] {
        let refused = first_chunk(&proxy, "todos", &cred).await;
        assert_eq!(refused.status, 401, "{what}: {}", refused.text);
    }
    let hidden = send(
        &proxy,
        Method::GET,
        "/v1/shape?table=todos&offset=-1&columns=id,deleted_at",
        &alice,
        None,
    )
    .await;
    assert_eq!(hidden.status, 403, "{}", hidden.text);
    assert_eq!(first_chunk(&proxy, "secrets", &alice).await.status, 403);
    let write = |id: &str, key: &str, values: Value| {
        batch(
            "alice-laptop",
            mutation(id, "todos", "upsert", json!({"id": key}), values, NOW),
        )
    };
    for (body, expected) in [
        (
            write(
                "e1",
                "a11ce000-0000-4000-8000-0000000000e1",
                json!({"owner_id": "alice", "title": "es256"}),
            ),
            "applied",
        ),
        (
            write("e2", ALICE_TODO, json!({"owner_id": "bob"})),
            "forbidden",
        ),
        (write("e3", BOB_TODO, json!({"title": "mine"})), "forbidden"),
    ] {
        let reply = send(&proxy, Method::POST, "/v1/mutations", &alice, Some(&body)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let result = &reply.json()["results"][0];
        let got = result["error"]["code"]
            .as_str()
            .or_else(|| result["status"].as_str());
        assert_eq!(got, Some(expected), "{result}");
        assert!(reply.leaks(&bobs).is_empty(), "{}", reply.text);
    }
}

/// `shapesync serve` with `args` must stop at start-up, saying `expected`.
async fn refuses_to_start(world: &World, args: &[&str], expected: &str) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(shapesync_bin!())
            .args(["serve", "--database-url", &world.db.url, "--port", "0"])
            .arg("--storage-dir")
            .arg(world.dir.path().join("storage"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the proxy exits")
    .expect("run the proxy");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} started");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
}

#[tokio::test]
async fn rules_that_do_not_fit_the_database_stop_the_start() {
    let world = World::new("auth_bad_rules").await;
    let write_rules = |name: &str, text: &str| {
        let path = world.dir.path().join(name);
        std::fs::write(&path, text).expect("write rules");
        path.display().to_string()
    };
    let unknown_table = write_rules("t.toml", "[tables.todoz]\nread = \"true\"\n");
    let unknown_column = write_rules(
        "c.toml",
        "[tables.todos]\nread = \"owner = $claims.sub\"\ncolumns = [\"id\", \"titel\"]\n",
    );
    let no_key = write_rules(
        "k.toml",
        "[tables.todos]\nread = \"true\"\ncolumns = [\"title\"]\n",
    );
    let typo = write_rules("f.toml", "[tables.todos]\nreed = \"true\"\n");
    let world = &world;
    let mut cases = Cases::default();
    for (name, rules, expected) in [
        ("unknown table", &unknown_table, "todoz"),
        ("unknown column", &unknown_column, "\"titel\""),
        ("read rule on an unknown column", &unknown_column, "owner"),
        ("columns without the key", &no_key, "primary key"),
        ("misspelt rule key", &typo, "reed"),
    ] {
        cases
            .check(
                name,
                refuses_to_start(world, &["--jwt-secret", "k", "--rules", rules], expected),
            )
            .await;
    }
    cases
        .check(
            "a key without rules",
            refuses_to_start(world, &["--jwt-secret", "k"], "--rules"),
        )
        .await;
    cases
        .check(
            "rules without a key",
            refuses_to_start(world, &["--rules", &no_key], "--jwt-secret"),
        )
        .await;
    let not_a_key = fixture("README.md").display().to_string();
    cases
        .check(
            "a public key that is not PEM",
            refuses_to_start(
                world,
                &["--jwt-public-key", &not_a_key, "--rules", &unknown_table],
                "PEM",
            ),
        )
        .await;
    cases.finish();
}
