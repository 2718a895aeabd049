//! WatermelonDB devices (LokiJS adapter in Node) of one user syncing through `synchronize()`
//! with a proxy that has tokens and rules.

use serde_json::{Value, json};

use crate::support::*;

fn task(id: &str, project: Option<&str>, title: &str, done: bool) -> Value {
    json!({"id": id, "owner_id": "alice", "project_id": project, "title": title, "done": done})
}

fn project(id: &str, name: &str) -> Value {
    json!({"id": id, "owner_id": "alice", "name": name})
}

#[tokio::test]
async fn watermelon_devices_converge_and_a_push_over_a_newer_server_change_is_refused_whole() {
    let db = database("eco_watermelon", TASKS).await;
    let sql = db.connect().await;
    let rules = tempfile::tempdir().expect("rules dir");
    let proxy = auth_proxy(&db, &rules, TASKS_RULES, "projects,tasks").await;
    let alice = token("alice");
    let mut a = watermelon(&proxy.url, &alice, "a");
    let mut b = watermelon(&proxy.url, &alice, "b");

    // First sync: everything alice may read, nothing of bob's.
    let first = sync(&mut a).await;
    assert_eq!(first.pulls.len(), 1);
    let pulled = &first.pulls[0]["changes"];
    let ids = |table: &str, kind: &str| -> Vec<Value> {
        let mut ids: Vec<Value> = pulled[table][kind]
            .as_array()
            .unwrap_or_else(|| panic!("{table}.{kind} in {pulled}"))
            .iter()
            .map(|r| r["id"].clone())
            .collect();
        ids.sort_by_key(Value::to_string);
        ids
    };
    // In `updated`, as synchronize() with sendCreatedAsUpdated expects (README).
    assert_eq!(
        ids("tasks", "updated"),
        [json!("t1"), json!("t2"), json!("t3")]
    );
    assert_eq!(ids("projects", "updated"), [json!("p1")]);
    assert_eq!(ids("tasks", "created"), Vec::<Value>::new());
    assert_eq!(ids("projects", "created"), Vec::<Value>::new());
    assert!(
        !first.pulls[0].to_string().contains("bob"),
        "bob's rows stay on the server: {}",
        first.pulls[0]
    );
    assert_eq!(first.pushes, Vec::<Value>::new(), "nothing to push yet");
    sync(&mut b).await;
    assert_device_equals_postgres(&mut a, &sql).await;
    assert_device_equals_postgres(&mut b, &sql).await;

    // Offline edits on both devices, then each syncs.
    let create = |table: &str, raw: Value| json!({"table": table, "raw": raw});
    a.ok(
        "create",
        create("tasks", task("ta1", Some("p1"), "from A", false)),
    )
    .await;
    a.ok(
        "update",
        json!({"table": "tasks", "id": "t1", "raw": {"title": "Buy oat milk"}}),
    )
    .await;
    b.ok("create", create("projects", project("pb1", "Garden")))
        .await;
    b.ok("delete", json!({"table": "tasks", "id": "t2"})).await;
    b.ok(
        "update",
        json!({"table": "tasks", "id": "t3", "raw": {"done": false}}),
    )
    .await;
    let pushed = sync(&mut a).await;
    assert_eq!(pushed.pushes, [json!({"status": 200, "body": {}})]);
    sync(&mut b).await;
    sync(&mut a).await;
    assert_eq!(
        alices(&sql, "tasks").await,
        json!([
            task("t1", Some("p1"), "Buy oat milk", false),
            task("t3", Some("p1"), "Water plants", false),
            task("ta1", Some("p1"), "from A", false)
        ])
    );
    assert_eq!(
        alices(&sql, "projects").await,
        json!([project("p1", "Home"), project("pb1", "Garden")])
    );
    assert_device_equals_postgres(&mut a, &sql).await;
    assert_device_equals_postgres(&mut b, &sql).await;

    // A pulls; t3 then changes on the server; A pushes its own edit of t3 (and a new task):
    // the whole push is refused with 409 naming t3, and synchronize() throws.
    a.ok(
        "update",
        json!({"table": "tasks", "id": "t3", "raw": {"title": "A title"}}),
    )
    .await;
    a.ok(
        "create",
        create("tasks", task("ta2", None, "second from A", false)),
    )
    .await;
    let held = a.send("sync", json!({"holdBeforePush": "push"})).await;
    a.event("gate", |e| e["gate"] == "push").await;
    sql.batch_execute("UPDATE tasks SET title = 'sql title', done = true WHERE id = 't3'")
        .await
        .expect("update by SQL");
    a.ok("release", json!({"gate": "push"})).await;
    let aborted = Sync::from(a.reply(held).await.expect("the sync command answers"));
    assert_eq!(aborted.pushes.len(), 1, "{:?}", aborted.pushes);
    assert_eq!(aborted.logged, Vec::<Value>::new());
    let refused = &aborted.pushes[0];
    assert_eq!(refused["status"], 409);
    assert_eq!(
        refused["body"],
        json!({"message": "1 pushed records changed on the server after last_pulled_at; \
                           nothing was written: pull, then push again",
               "conflicts": {"tasks": ["t3"]}})
    );
    let thrown: Value = serde_json::from_str(aborted.error.as_deref().expect("synchronize threw"))
        .expect("the error is the 409 body");
    assert_eq!(thrown, refused["body"]);
    assert_eq!(
        alices(&sql, "tasks").await,
        json!([
            task("t1", Some("p1"), "Buy oat milk", false),
            task("t3", Some("p1"), "sql title", true),
            task("ta1", Some("p1"), "from A", false)
        ]),
        "nothing of the refused push was written"
    );

    // A syncs again: it pulls the server's t3, keeps its own changed column (Watermelon's
    // rule), and the push lands.
    let retried = sync(&mut a).await;
    assert_eq!(retried.pushes, [json!({"status": 200, "body": {}})]);
    assert_eq!(
        alices(&sql, "tasks").await,
        json!([
            task("t1", Some("p1"), "Buy oat milk", false),
            task("t3", Some("p1"), "A title", true),
            task("ta1", Some("p1"), "from A", false),
            task("ta2", None, "second from A", false)
        ])
    );
    sync(&mut b).await;
    assert_device_equals_postgres(&mut a, &sql).await;
    assert_device_equals_postgres(&mut b, &sql).await;
    assert_eq!(a.ok("unsynced", json!({})).await, false);
}

#[tokio::test]
async fn a_watermelon_device_drops_rows_that_leave_its_read_rule_and_cannot_write_others() {
    let db = database("eco_watermelon_revoked", TASKS).await;
    let sql = db.connect().await;
    let rules = tempfile::tempdir().expect("rules dir");
    let proxy = auth_proxy(&db, &rules, TASKS_RULES, "projects,tasks").await;
    let mut a = watermelon(&proxy.url, &token("alice"), "a");
    sync(&mut a).await;
    assert_device_equals_postgres(&mut a, &sql).await;

    // t1 moves to bob: alice's next pull lists it as deleted, and the device drops it.
    sql.batch_execute("UPDATE tasks SET owner_id = 'bob' WHERE id = 't1'")
        .await
        .expect("update by SQL");
    let pulled = sync(&mut a).await;
    assert_eq!(
        pulled.pulls[0]["changes"]["tasks"],
        json!({"created": [], "updated": [], "deleted": ["t1"]}),
        "{}",
        pulled.pulls[0]
    );
    let ids: Vec<Value> = records(&mut a, "tasks")
        .await
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, [json!("t2"), json!("t3")]);
    assert_device_equals_postgres(&mut a, &sql).await;

    // A task created for bob is rejected by the rules; alice's own lands in the same push.
    a.ok(
        "create",
        json!({"table": "tasks", "raw": {"id": "tx", "owner_id": "bob", "project_id": null,
                                         "title": "for bob", "done": false}}),
    )
    .await;
    a.ok(
        "create",
        json!({"table": "tasks", "raw": task("ty", None, "mine", false)}),
    )
    .await;
    let pushed = sync(&mut a).await;
    assert_eq!(
        pushed.pushes,
        [json!({"status": 200, "body": {"experimentalRejectedIds": {"tasks": ["tx"]}}})]
    );
    assert_eq!(
        table_ids(&sql).await,
        ["t1", "t2", "t3", "t4", "ty"],
        "tx was not written"
    );
}

/// A device's own push comes back in its next pull (the pull's timestamp is taken before the
/// push). A record it created, pushed, and then deleted must stay deleted: the server must not
/// tell it to create that record again.
#[tokio::test]
async fn a_watermelon_device_keeps_deleting_a_record_it_created_and_pushed() {
    let db = database("eco_watermelon_echo", TASKS).await;
    let sql = db.connect().await;
    let (_rules, _proxy, mut a) = device_that_pushed_tn(&db).await;
    assert!(table_ids(&sql).await.contains(&"tn".to_owned()));
    a.ok("delete", json!({"table": "tasks", "id": "tn"})).await;
    let deleting = sync(&mut a).await;
    assert_eq!(
        table_ids(&sql).await,
        ["t1", "t2", "t3", "t4"],
        "the delete reached the server; pulls: {:?}",
        deleting.pulls
    );
    assert_device_equals_postgres(&mut a, &sql).await;
}

/// A record the device created and pushed, then deleted elsewhere before the device's next
/// pull, was inserted and deleted since its `last_pulled_at`: the device has it all the same,
/// so the pull must list it as deleted.
#[tokio::test]
async fn a_watermelon_device_drops_its_own_record_deleted_elsewhere() {
    let db = database("eco_watermelon_own_delete", TASKS).await;
    let sql = db.connect().await;
    let (_rules, _proxy, mut a) = device_that_pushed_tn(&db).await;
    sql.batch_execute("DELETE FROM tasks WHERE id = 'tn'")
        .await
        .expect("delete by SQL");
    let pulled = sync(&mut a).await;
    assert_eq!(
        pulled.pulls[0]["changes"]["tasks"]["deleted"],
        json!(["tn"]),
        "{}",
        pulled.pulls[0]
    );
    assert_device_equals_postgres(&mut a, &sql).await;
}

async fn table_ids(sql: &tokio_postgres::Client) -> Vec<String> {
    sql.query("SELECT id FROM tasks ORDER BY id COLLATE \"C\"", &[])
        .await
        .expect("task ids")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Alice's device, synced, after it created the task `tn` and pushed it: the rules directory
/// and proxy (kept alive by the caller) and the device.
async fn device_that_pushed_tn(
    db: &tests::TestDb,
) -> (
    tempfile::TempDir,
    tests::proxy_process::ProxyProcess,
    tests::ecosystems::NodeClient,
) {
    let rules = tempfile::tempdir().expect("rules dir");
    let proxy = auth_proxy(db, &rules, TASKS_RULES, "projects,tasks").await;
    let mut a = watermelon(&proxy.url, &token("alice"), "a");
    sync(&mut a).await;
    a.ok(
        "create",
        json!({"table": "tasks", "raw": task("tn", None, "short-lived", false)}),
    )
    .await;
    sync(&mut a).await;
    (rules, proxy, a)
}
