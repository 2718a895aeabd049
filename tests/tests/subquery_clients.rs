//! Client libraries on shapes whose `where` has subqueries, rows moving in and out live:
//! TanStack DB's electric collection (from npm, unchanged) holds exactly the rows Postgres
//! gives for the same `where` after every membership change, and the SQLite client keeps an
//! exact mirror through moves, sent as rows or (`moves=events`) as Electric's move events it
//! follows by the rows' tags, its offline writes sent when it is back and none lost.

use std::time::Duration;

use client_sqlite::{Client, ClientConfig, Moves, ShapeSpec};
use serde_json::{Map, Value, json};
use tests::proxy_process::ProxyProcess;
use tests::subquery_world::{MOVE_STEPS, SCHEMA};
use tests::todo_clients::{TodosCollection, WAIT, pg_todos_text, sqlite_config, sqlite_todos};
use tests::{TestDb, shapesync_bin};

#[tokio::test]
async fn tanstack_db_collections_follow_rows_moving_in_and_out() {
    let db = TestDb::new("subquery_tanstack").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let mut shapes = vec![
        TodosCollection::start(
            &proxy.url,
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
            &["u1"],
        ),
        TodosCollection::start(
            &proxy.url,
            "project_id NOT IN (SELECT project_id FROM members WHERE role = $1) OR done",
            &["owner"],
        ),
        // Three levels: todos of live projects of the organisations the user belongs to.
        TodosCollection::start(
            &proxy.url,
            "project_id IN (SELECT id FROM projects WHERE NOT archived AND org_id IN \
             (SELECT org_id FROM org_members WHERE user_id = $1))",
            &["u2"],
        ),
        TodosCollection::start(
            &proxy.url,
            "EXISTS (SELECT 1 FROM members m WHERE m.project_id = todos.project_id \
             AND m.user_id = $1) AND NOT done",
            &["u2"],
        ),
    ];
    follow_move_steps(&sql, &mut shapes).await;
}

/// Every collection holds Postgres' rows at the start, after each of [`MOVE_STEPS`], and once
/// nothing more arrives (nothing late takes a collection away from them).
async fn follow_move_steps(sql: &tokio_postgres::Client, shapes: &mut [TodosCollection]) {
    for shape in shapes.iter_mut() {
        shape.converges(sql, "the start").await;
    }
    for (step, statement) in MOVE_STEPS {
        sql.batch_execute(statement).await.expect(statement);
        for shape in shapes.iter_mut() {
            shape.converges(sql, step).await;
        }
    }
    for shape in shapes.iter_mut() {
        shape.collection.settle(Duration::from_millis(500)).await;
        shape.converges(sql, "the last step, settled").await;
    }
}

/// With `moves=events`, rows that move out are not deleted in the log: the collection drops
/// them itself from Electric's `move-out` events and the rows' tags, unchanged.
#[tokio::test]
async fn tanstack_db_collections_follow_electric_move_events() {
    let db = TestDb::new("subquery_tanstack_events").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let events = |where_: &str, params: &[&str]| {
        TodosCollection::start_with(&proxy.url, where_, params, "events")
    };
    let mut shapes = vec![
        events(
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
            &["u1"],
        ),
        events(
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1) OR done",
            &["u1"],
        ),
        events(
            "project_id IN (SELECT id FROM projects WHERE NOT archived AND org_id IN \
             (SELECT org_id FROM org_members WHERE user_id = $1))",
            &["u2"],
        ),
        events(
            "EXISTS (SELECT 1 FROM members m WHERE m.project_id = todos.project_id \
             AND m.user_id = $1) AND NOT done",
            &["u2"],
        ),
    ];
    follow_move_steps(&sql, &mut shapes).await;
}

const MINE: &str = "project_id IN (SELECT project_id FROM members WHERE user_id = $1)";

/// Waits until the client has sent every write, every shape is up to date, and the mirror is
/// Postgres' rows for the `where`, with no overlay left.
async fn mirror_converges(client: &Client, sql: &tokio_postgres::Client, step: &str) {
    client.wait_synced(WAIT).await.expect(step);
    client.sync_now().await.expect(step);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = sqlite_todos(client, "todos").await;
        let overlays: i64 = client
            .read(|c| c.query_row("SELECT count(*) FROM _shapesync_overlays", [], |r| r.get(0)))
            .await
            .unwrap();
        let want = pg_todos_text(sql, MINE, &["u1".to_owned()]).await;
        if overlays == 0 && client.status().pending == 0 && got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{step}: the mirror is not Postgres' rows ({overlays} overlays, status {:?})\n \
             mirror {got:?}\n postgres {want:?}",
            client.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A proxy on a fresh world, and the configuration of a SQLite client of u1's todos.
struct SqliteWorld {
    _db: TestDb,
    sql: tokio_postgres::Client,
    proxy: ProxyProcess,
    _dir: tempfile::TempDir,
    config: ClientConfig,
    /// The shape's handle and offset once first synced.
    handle: Option<String>,
    first_offset: String,
}

impl SqliteWorld {
    /// Starts the world and a client of `spec`, synced; returns the client too.
    async fn start(name: &str, spec: ShapeSpec) -> (Self, Client) {
        let db = TestDb::new(name).await;
        let sql = db.connect().await;
        sql.batch_execute(SCHEMA).await.unwrap();
        let proxy = ProxyProcess::start(
            shapesync_bin!(),
            &db,
            &["--writable", "todos", "--long-poll-timeout", "2s"],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = sqlite_config(&proxy.url, dir.path().join("a.db"), spec);
        config.ack_grace = Duration::from_secs(5);
        let client = Client::open(config.clone()).await.expect("open the client");
        mirror_converges(&client, &sql, "the start").await;
        let synced = client.shapes().await.unwrap().remove(0);
        assert!(synced.handle.is_some());
        let world = Self {
            _db: db,
            sql,
            proxy,
            _dir: dir,
            config,
            handle: synced.handle,
            first_offset: synced.offset,
        };
        (world, client)
    }
}

/// u1's todos, `$1` = u1, moves sent as `moves`.
fn mine(moves: Moves) -> ShapeSpec {
    let mut spec = ShapeSpec::new("todos", "todos").with_where(MINE);
    spec.params = vec!["u1".into()];
    spec.moves = moves;
    spec
}

/// Rows moving in and out while the client writes online, offline, and while it is closed:
/// every write reaches Postgres and the mirror is Postgres' rows after each part, with no
/// refetch. Returns the client opened again.
async fn offline_writes_through_moves(world: &SqliteWorld, client: Client) -> Client {
    // Online: rows move in and out, and a local write goes through.
    world
        .sql
        .batch_execute(
            "INSERT INTO members VALUES (3, 'u1', 'dev');
         DELETE FROM members WHERE project_id = 1 AND user_id = 'u1';",
        )
        .await
        .unwrap();
    client
        .update("todos", key(10), values(json!({"title": "online edit"})))
        .await
        .expect("queued");
    mirror_converges(&client, &world.sql, "moves while online").await;

    // Offline: local writes to rows of the shape, while memberships change on the server.
    // u1 holds projects 2 and 3 (todos 1, 10, 19… and 2, 11, 20…).
    client.set_online(false);
    client
        .update("todos", key(19), values(json!({"title": "stays in"})))
        .await
        .unwrap();
    // Project 3 is revoked meanwhile: the write is applied, the row leaves the mirror.
    client
        .update("todos", key(11), values(json!({"title": "moved out"})))
        .await
        .unwrap();
    client
        .insert(
            "todos",
            values(json!({"id": 200, "project_id": 2, "title": "new in 2"})),
        )
        .await
        .unwrap();
    client
        .insert(
            "todos",
            values(json!({"id": 201, "project_id": 3, "title": "new in 3"})),
        )
        .await
        .unwrap();
    client.delete("todos", key(28)).await.unwrap();
    // Into project 5, granted meanwhile: it stays.
    client
        .update("todos", key(37), values(json!({"project_id": 5})))
        .await
        .unwrap();
    // Out of project 3 (revoked meanwhile) into 2: it stays.
    client
        .update(
            "todos",
            key(20),
            values(json!({"project_id": 2, "done": true})),
        )
        .await
        .unwrap();
    let shown = sqlite_todos(&client, "todos").await;
    let id = |n: &str| shown.iter().find(|r| r[0].as_deref() == Some(n)).cloned();
    assert_eq!(
        id("19").unwrap()[2].as_deref(),
        Some("stays in"),
        "shown at once"
    );
    assert!(
        id("201").is_some() && id("28").is_none(),
        "shown at once: {shown:?}"
    );
    assert_eq!(client.status().pending, 7);
    world
        .sql
        .batch_execute(
            "DELETE FROM members WHERE project_id = 3 AND user_id = 'u1';
         INSERT INTO members VALUES (5, 'u1', 'dev');
         UPDATE todos SET title = 'server edit' WHERE id IN (13, 46);
         BEGIN; DELETE FROM members WHERE project_id = 2 AND user_id = 'u1';
         UPDATE todos SET done = true WHERE id = 55;
         INSERT INTO members VALUES (2, 'u1', 'owner'); COMMIT;",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.status().pending, 7, "nothing sent while offline");
    client.set_online(true);
    mirror_converges(&client, &world.sql, "back online").await;

    // Every write was applied, the moved-out ones too (they left the mirror with their rows).
    let applied = |q: &'static str| {
        let sql = &world.sql;
        async move { sql.query_one(q, &[]).await.expect(q).get::<_, i64>(0) }
    };
    assert_eq!(
        applied(
            "SELECT count(*) FROM todos WHERE (id = 19 AND title = 'stays in') \
             OR (id = 11 AND title = 'moved out' AND project_id = 3) \
             OR (id = 200 AND project_id = 2) OR (id = 201 AND project_id = 3) \
             OR (id = 37 AND project_id = 5) OR (id = 20 AND project_id = 2 AND done) \
             OR (id = 10 AND title = 'online edit')"
        )
        .await,
        7
    );
    assert_eq!(applied("SELECT count(*) FROM todos WHERE id = 28").await, 0);
    let shown = sqlite_todos(&client, "todos").await;
    assert!(
        !shown
            .iter()
            .any(|r| ["11", "201", "2"].contains(&r[0].as_deref().unwrap())),
        "project 3's rows left: {shown:?}"
    );

    // Stopped: writes made with the client closed (another process, `open_offline`), while
    // memberships change, are sent when it opens again.
    client.close().await;
    let offline = Client::open_offline(&world.config)
        .await
        .expect("open offline");
    offline
        .update("todos", key(46), values(json!({"title": "while closed"})))
        .await
        .unwrap();
    offline
        .update(
            "todos",
            key(4),
            values(json!({"title": "revoked while closed"})),
        )
        .await
        .unwrap();
    offline.close().await;
    world
        .sql
        .batch_execute(
            "DELETE FROM members WHERE project_id = 5 AND user_id = 'u1';
         INSERT INTO members VALUES (6, 'u1', 'dev');",
        )
        .await
        .unwrap();
    let client = Client::open(world.config.clone())
        .await
        .expect("open again");
    mirror_converges(&client, &world.sql, "opened again").await;
    assert_eq!(
        applied(
            "SELECT count(*) FROM todos WHERE (id = 46 AND title = 'while closed') \
             OR (id = 4 AND title = 'revoked while closed')"
        )
        .await,
        2
    );
    assert_eq!(
        client.shapes().await.unwrap()[0].handle,
        world.handle,
        "no refetch"
    );
    assert_eq!(client.status().refetches, 0);
    assert!(client.conflicts(true).await.unwrap().is_empty());
    client
}

#[tokio::test]
async fn the_sqlite_client_keeps_an_exact_mirror_through_moves_and_its_offline_writes() {
    let (world, client) = SqliteWorld::start("subquery_sqlite_client", mine(Moves::Rows)).await;
    let client = offline_writes_through_moves(&world, client).await;
    tag_state_matches_the_mirror(&client, "the end").await;
    client.close().await;
}

/// The same with `moves=events`: rows that leave come as Electric's `move-out` events, not
/// deletes, and the client works out from their tags which rows to drop; then every step of
/// [`MOVE_STEPS`] from the memberships of the start.
#[tokio::test]
async fn the_sqlite_client_keeps_an_exact_mirror_through_move_events_and_its_offline_writes() {
    let (world, client) = SqliteWorld::start("subquery_sqlite_events", mine(Moves::Events)).await;
    let client = offline_writes_through_moves(&world, client).await;
    tag_state_matches_the_mirror(&client, "offline writes").await;
    // Back to u1's memberships of the start (2 revoked and granted again in one transaction).
    world
        .sql
        .batch_execute(
            "DELETE FROM members WHERE user_id = 'u1';
             INSERT INTO members VALUES (1, 'u1', 'dev'), (2, 'u1', 'owner');",
        )
        .await
        .unwrap();
    mirror_converges(&client, &world.sql, "memberships of the start").await;
    for (step, statement) in MOVE_STEPS {
        world.sql.batch_execute(statement).await.expect(statement);
        mirror_converges(&client, &world.sql, step).await;
        tag_state_matches_the_mirror(&client, step).await;
    }
    assert_eq!(client.shapes().await.unwrap()[0].handle, world.handle);
    assert_eq!(client.status().refetches, 0);
    assert!(client.conflicts(true).await.unwrap().is_empty());
    client.close().await;
    // The rows left by events: the shape's log since the snapshot has move-outs.
    let log = shape_log(&world, &mine(Moves::Events)).await;
    let events = |kind: &str| log.iter().filter(|m| m["headers"]["event"] == kind).count();
    assert!(events("move-out") > 0 && events("move-in") > 0, "{log:?}");
}

/// Every server row of the mirror has tag state, and nothing else has.
async fn tag_state_matches_the_mirror(client: &Client, step: &str) {
    let (tagged, rows): (i64, i64) = client
        .read(|c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM _shapesync_row_tags WHERE shape = 'todos'),
                        (SELECT count(*) FROM todos)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
        .unwrap();
    assert_eq!(tagged, rows, "{step}: rows with tag state");
}

/// The shape's log after its first up-to-date, as the client's handle has it.
async fn shape_log(world: &SqliteWorld, spec: &ShapeSpec) -> Vec<Value> {
    let mut offset = world.first_offset.clone();
    let mut log = Vec::new();
    loop {
        let mut query = spec.query_pairs();
        query.push(("offset".into(), offset.clone()));
        query.push(("handle".into(), world.handle.clone().unwrap()));
        let url = reqwest::Url::parse_with_params(&format!("{}/v1/shape", world.proxy.url), &query)
            .unwrap();
        let response = world.proxy.http().get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        offset = response.headers()["electric-offset"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Vec<Value> = response.json().await.unwrap();
        let up_to_date = body.iter().any(|m| m["headers"]["control"] == "up-to-date");
        log.extend(body);
        if up_to_date {
            return log;
        }
    }
}

fn key(id: i64) -> Map<String, Value> {
    values(json!({ "id": id }))
}

fn values(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}
