//! The RxDB and WatermelonDB endpoints under the same rules as `/v1/shape` and
//! `/v1/mutations`: a token pulls only its rows and readable columns, writes only what the
//! rules allow (another owner's row comes back as a conflict with nothing of that row in it,
//! or as `experimentalRejectedIds`), and a row that leaves its read rule arrives as deleted.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const HIDDEN_OF_TODOS: &[&str] = &["position", "deleted_at"];

fn encode(value: &Value) -> String {
    encode_query(&value.to_string())
}

async fn rxdb_pull(
    proxy: &tests::proxy_process::ProxyProcess,
    cred: &Cred,
    checkpoint: &Value,
) -> Reply {
    let path = format!(
        "/v1/rxdb/todos/pull?limit=1000&checkpoint={}",
        encode(checkpoint)
    );
    send(proxy, Method::GET, &path, cred, None).await
}

async fn watermelon_pull(
    proxy: &tests::proxy_process::ProxyProcess,
    cred: &Cred,
    last: &str,
) -> Reply {
    let path = format!("/v1/watermelon/pull?last_pulled_at={last}&schema_version=1&tables=todos");
    send(proxy, Method::GET, &path, cred, None).await
}

#[tokio::test]
async fn sync_protocols_show_and_write_only_what_the_token_may() {
    let world = World::new("auth_sync_protocols").await;
    let proxy = world.proxy("auth_sync_protocols", &[]).await;
    let sql = world.sql().await;
    let alice = Cred::Bearer(hs256(&claims("alice")));

    // Without credentials: 401 everywhere, before anything is judged.
    for (method, path) in [
        (Method::GET, "/v1/rxdb/todos/pull"),
        (Method::GET, "/v1/rxdb/todos/pullStream"),
        (Method::POST, "/v1/rxdb/todos/push"),
        (
            Method::GET,
            "/v1/watermelon/pull?last_pulled_at=null&schema_version=1&tables=todos",
        ),
        (Method::POST, "/v1/watermelon/push?last_pulled_at=1"),
    ] {
        let reply = send(&proxy, method, path, &Cred::None, Some(&json!([]))).await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.text);
    }

    // Pulls: alice's rows, readable columns, nothing of bob's.
    let reply = rxdb_pull(&proxy, &alice, &Value::Null).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.leaks(forbidden_for(Viewer::Alice)),
        Vec::<String>::new()
    );
    assert_eq!(reply.names_shown(HIDDEN_OF_TODOS), Vec::<String>::new());
    let body = reply.json();
    let docs = body["documents"].as_array().unwrap().clone();
    assert!(docs.iter().all(|d| d["owner_id"] == "alice"), "{docs:?}");
    let mine = docs
        .iter()
        .find(|d| d["id"] == ALICE_TODO)
        .expect("alice's todo")
        .clone();
    let mut fields: Vec<&String> = mine.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["_deleted", "done", "id", "owner_id", "title", "updated_at"]
    );
    let checkpoint = body["checkpoint"].clone();
    let reply = watermelon_pull(&proxy, &alice, "null").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.leaks(forbidden_for(Viewer::Alice)),
        Vec::<String>::new()
    );
    assert_eq!(reply.names_shown(HIDDEN_OF_TODOS), Vec::<String>::new());
    let since = reply.json()["timestamp"].as_u64().unwrap().to_string();

    // RxDB push: her own change applies; bob's row comes back as a conflict that shows only
    // what she sent, and stays as it was.
    let mut retitled = mine.clone();
    retitled["title"] = json!("milk, oat");
    let hijack = json!({"id": BOB_TODO, "owner_id": "bob", "title": "hijacked", "done": true,
                        "_deleted": false});
    let push = json!([
        {"assumedMasterState": mine, "newDocumentState": retitled},
        {"newDocumentState": hijack},
    ]);
    let reply = send(
        &proxy,
        Method::POST,
        "/v1/rxdb/todos/push",
        &alice,
        Some(&push),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // Bob's id is in the answer only because she sent it.
    let unsent: Vec<&str> = forbidden_for(Viewer::Alice)
        .iter()
        .copied()
        .filter(|v| *v != BOB_TODO)
        .collect();
    assert_eq!(reply.leaks(&unsent), Vec::<String>::new());
    assert_eq!(
        reply.json(),
        json!([{"id": BOB_TODO, "_deleted": true}]),
        "a row she may not write is, for her, a row that does not exist"
    );
    let titles: Vec<(String, String)> = sql
        .query(
            "SELECT id::text, title FROM todos WHERE id::text = ANY($1) ORDER BY owner_id",
            &[&vec![ALICE_TODO, BOB_TODO]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        titles,
        [
            (ALICE_TODO.to_owned(), "milk, oat".to_owned()),
            (BOB_TODO.to_owned(), "BOB-TODO-TITLE-5581".to_owned())
        ]
    );

    // WatermelonDB push: the same two; hers applies, bob's is listed as rejected.
    let changes = json!({"todos": {"created": [], "deleted": [], "updated": [
        {"id": ALICE_TODO, "title": "milk, soy", "_status": "updated", "_changed": "title"},
        {"id": BOB_TODO, "title": "hijacked again", "_status": "updated", "_changed": "title"}]}});
    // Her own RxDB write above is newer than `since`: a push from there is refused first.
    let path = format!("/v1/watermelon/push?last_pulled_at={since}");
    let reply = send(&proxy, Method::POST, &path, &alice, Some(&changes)).await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.json()["conflicts"], json!({"todos": [ALICE_TODO]}));
    let since = watermelon_pull(&proxy, &alice, &since).await.json()["timestamp"]
        .as_u64()
        .unwrap()
        .to_string();
    let path = format!("/v1/watermelon/push?last_pulled_at={since}");
    let reply = send(&proxy, Method::POST, &path, &alice, Some(&changes)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({"experimentalRejectedIds": {"todos": [BOB_TODO]}})
    );
    let bob_title: String = sql
        .query_one("SELECT title FROM todos WHERE id::text = $1", &[&BOB_TODO])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bob_title, "BOB-TODO-TITLE-5581");

    // Revoked: her todo moves to bob; both protocols then tell her it is gone.
    sql.execute(
        "UPDATE todos SET owner_id = 'bob' WHERE id::text = $1",
        &[&ALICE_TODO],
    )
    .await
    .unwrap();
    let reply = watermelon_pull(&proxy, &alice, &since).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.json()["changes"]["todos"]["deleted"]
            .as_array()
            .unwrap()
            .contains(&json!(ALICE_TODO)),
        "{}",
        reply.text
    );
    let reply = rxdb_pull(&proxy, &alice, &checkpoint).await;
    let gone = reply.json()["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == ALICE_TODO)
        .cloned()
        .expect("her todo, deleted");
    assert_eq!(gone["_deleted"], json!(true));
    assert_eq!(
        reply.leaks(&["BOB-TODO-TITLE-5581", "hijacked"]),
        Vec::<String>::new()
    );
}
