//! Shapes whose `where` has subqueries: rows move in and out live as the inner tables change
//! (memberships granted and revoked, projects moved between organisations), without a
//! refetch, and every client ends with exactly the rows Postgres gives for the same `where`.

use std::collections::BTreeMap;
use std::time::Duration;

use client_sqlite::Moves;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::subquery_world::{MOVE_STEPS, SCHEMA};
use tests::todo_clients::{SqliteMirror, TodosCollection, is_cut_response, rows_diff};
use tests::{TestDb, shapesync_bin, wait_for};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// A shape followed by our consumer, by the official client, and by whichever TanStack DB
/// collections and SQLite clients were added, and the `where` Postgres evaluates to say what
/// they all must hold.
struct Followed {
    name: String,
    where_: String,
    params: Vec<String>,
    consumer: ShapeConsumer,
    official: ElectricClient,
    collections: Vec<TodosCollection>,
    mirrors: Vec<SqliteMirror>,
    /// The proxy was killed while they followed: see [`is_cut_response`].
    proxy_killed: bool,
}

impl Followed {
    fn start(
        proxy: &ProxyProcess,
        where_: &str,
        params: &[&str],
        stop: &CancellationToken,
    ) -> Self {
        let consumer = ShapeConsumer::new(
            &proxy.url,
            ShapeSpec::table("todos", &["id"]).filter(where_, params),
            ConsumerOptions::default(),
        );
        consumer.spawn(stop.clone());
        let param_map: Map<String, Value> = params
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1).to_string(), json!(p)))
            .collect();
        let official = ElectricClient::start(
            &proxy.url,
            json!({"params": {"table": "todos", "where": where_, "params": param_map}, "raw": true}),
        );
        Self {
            name: format!("{where_} {params:?}"),
            where_: where_.to_owned(),
            params: params.iter().map(|p| (*p).to_owned()).collect(),
            consumer,
            official,
            collections: Vec::new(),
            mirrors: Vec::new(),
            proxy_killed: false,
        }
    }

    /// The proxy was killed (and restarted) while the clients followed the shape.
    fn proxy_killed(&mut self) {
        self.proxy_killed = true;
        for collection in &mut self.collections {
            collection.proxy_killed = true;
        }
    }

    /// Also followed by a TanStack DB collection asking its moves as `moves` (rows, events).
    fn with_collection(mut self, proxy: &ProxyProcess, moves: &str) -> Self {
        let params: Vec<&str> = self.params.iter().map(String::as_str).collect();
        self.collections.push(TodosCollection::start_with(
            &proxy.url,
            &self.where_,
            &params,
            moves,
        ));
        self
    }

    /// Also followed by a SQLite client of its own asking its moves as `moves`.
    async fn with_mirror(mut self, proxy: &ProxyProcess, moves: Moves) -> Self {
        let params: Vec<&str> = self.params.iter().map(String::as_str).collect();
        self.mirrors
            .push(SqliteMirror::start(&proxy.url, &self.where_, &params, moves).await);
        self
    }

    /// Waits until each client has had its first up-to-date (the rows may have moved on since).
    async fn first_sync(&mut self) {
        let name = &self.name;
        wait_for(
            &format!("{name}: our consumer's first sync"),
            WAIT,
            || async {
                self.consumer
                    .with_state(|state| state.up_to_date)
                    .then_some(())
            },
        )
        .await;
        self.official.wait_rows(WAIT, |_| true).await;
        for collection in &mut self.collections {
            collection.first_sync().await;
        }
        for mirror in &self.mirrors {
            mirror.first_sync().await;
        }
    }

    /// Postgres' rows for the shape, by message key.
    async fn expected(&self, sql: &tokio_postgres::Client) -> BTreeMap<String, Map<String, Value>> {
        let query = format!(
            "SELECT json_build_object('id', id::text, 'project_id', project_id::text, \
             'title', title, 'done', format('%s', done))::text FROM todos WHERE {}",
            self.where_
        );
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = self
            .params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let statement = sql
            .prepare_typed(
                &query,
                &vec![tokio_postgres::types::Type::TEXT; params.len()],
            )
            .await
            .expect(&query);
        sql.query(&statement, &params)
            .await
            .expect(&query)
            .iter()
            .map(|row| {
                let object: Value = serde_json::from_str(row.get(0)).unwrap();
                let object = object.as_object().unwrap().clone();
                let key = format!(
                    "\"public\".\"todos\"/\"{}\"",
                    object["id"].as_str().unwrap()
                );
                (key, object)
            })
            .collect()
    }

    /// Waits until every client holds exactly Postgres' rows; no refetch on the way.
    async fn converges(&mut self, sql: &tokio_postgres::Client, step: &str) {
        self.converges_within(sql, step, WAIT).await;
    }

    /// [`Followed::converges`], waiting at most `wait`.
    async fn converges_within(&mut self, sql: &tokio_postgres::Client, step: &str, wait: Duration) {
        let expected = self.expected(sql).await;
        let name = &self.name;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let holds = self.consumer.with_state(|state| {
                assert!(
                    state.violations.is_empty(),
                    "{name}: {:?}",
                    state.violations
                );
                state.up_to_date && state.rows == expected
            });
            if holds {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let state = self.consumer.state();
                panic!(
                    "{name}: our consumer does not hold Postgres' rows {WAIT:?} after {step} \
                     (up to date: {}, offset {:?}, {} changes applied)\n{}",
                    state.up_to_date,
                    state.offset,
                    state.changes,
                    rows_diff(&state.rows, &expected)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refetches = self.consumer.with_state(|state| state.refetches);
        assert_eq!(refetches, 0, "{name}: refetched after {step}");
        let mut want: Vec<String> = expected
            .values()
            .map(|row| row["id"].as_str().unwrap().to_owned())
            .collect();
        want.sort();
        let holds = |rows: &Map<String, Value>| {
            let mut got: Vec<String> = rows
                .values()
                .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
                .collect();
            got.sort();
            got == want
        };
        // The client reports its rows when they change: the last report may already be it.
        let last = self
            .official
            .history
            .iter()
            .rev()
            .find(|e| e["type"] == "rows")
            .and_then(|e| e["rows"].as_object().cloned());
        if !last.is_some_and(|rows| holds(&rows)) {
            self.official.wait_rows(WAIT, holds).await;
        }
        let errors: Vec<Value> = self
            .official
            .errors()
            .into_iter()
            .filter(|e| !(self.proxy_killed && is_cut_response(e)))
            .collect();
        assert!(
            errors.is_empty(),
            "{name}: official client errors {errors:?}"
        );
        // Every client is looked at before failing: which of them hold the wrong rows tells
        // whether the shape's log or a client is wrong.
        let mut failures = Vec::new();
        for collection in &mut self.collections {
            failures.extend(collection.check_converges(sql, step).await.err());
        }
        for mirror in &self.mirrors {
            failures.extend(mirror.check_converges(sql, step).await.err());
        }
        assert!(
            failures.is_empty(),
            "{} of the clients of {name} do not hold Postgres' rows:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

#[tokio::test]
async fn memberships_move_rows_in_and_out_live_without_a_refetch() {
    let db = TestDb::new("subquery_moves").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let stop = CancellationToken::new();
    let mut shapes = vec![
        Followed::start(
            &proxy,
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
            &["u1"],
            &stop,
        ),
        Followed::start(
            &proxy,
            "project_id NOT IN (SELECT project_id FROM members WHERE role = $1) AND NOT done",
            &["owner"],
            &stop,
        ),
        // Three levels: todos of projects of the organisations the user belongs to.
        Followed::start(
            &proxy,
            "project_id IN (SELECT id FROM projects WHERE NOT archived AND org_id IN \
             (SELECT org_id FROM org_members WHERE user_id = $1))",
            &["u2"],
            &stop,
        ),
        Followed::start(
            &proxy,
            "done OR EXISTS (SELECT 1 FROM members WHERE members.project_id = todos.project_id \
             AND members.user_id = $1)",
            &["u2"],
            &stop,
        ),
    ];
    for shape in &mut shapes {
        shape.converges(&sql, "the start").await;
    }
    let steps = MOVE_STEPS;
    for (step, statement) in steps {
        sql.batch_execute(statement).await.expect(statement);
        for shape in &mut shapes {
            shape.converges(&sql, step).await;
        }
    }
    stop.cancel();
}

#[tokio::test]
async fn random_membership_churn_converges_with_postgres() {
    let seed: u64 = std::env::var("SHAPESYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("subquery churn: seed {seed} (replay with SHAPESYNC_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let db = TestDb::new("subquery_churn").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let stop = CancellationToken::new();
    let mut shapes = vec![
        Followed::start(
            &proxy,
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1) OR title = $2",
            &["u1", "todo 3"],
            &stop,
        ),
        Followed::start(
            &proxy,
            "(project_id, done) IN (SELECT id, archived FROM projects WHERE org_id <> 3)",
            &[],
            &stop,
        ),
        Followed::start(
            &proxy,
            "project_id IN (SELECT id FROM projects WHERE org_id IN \
             (SELECT org_id FROM org_members WHERE user_id = $1)) AND project_id NOT IN \
             (SELECT project_id FROM members WHERE user_id = $1)",
            &["u2"],
            &stop,
        ),
    ];
    for shape in &mut shapes {
        shape.converges(&sql, "the start").await;
    }
    let users = ["u1", "u2", "u3"];
    for round in 0..12 {
        let mut statements = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            let project = rng.random_range(1..10);
            let user = users[rng.random_range(0..users.len())];
            statements.push(match rng.random_range(0..7) {
                0 => format!(
                    "INSERT INTO members VALUES ({project}, '{user}', '{}') ON CONFLICT DO NOTHING",
                    if rng.random_bool(0.5) { "owner" } else { "dev" }
                ),
                1 => format!(
                    "DELETE FROM members WHERE project_id = {project} AND user_id = '{user}'"
                ),
                2 => format!(
                    "UPDATE todos SET project_id = {project} WHERE id = {}",
                    rng.random_range(1..61)
                ),
                3 => format!(
                    "UPDATE todos SET done = NOT done WHERE id = {}",
                    rng.random_range(1..61)
                ),
                4 => format!(
                    "INSERT INTO org_members VALUES ({}, '{user}') ON CONFLICT DO NOTHING",
                    rng.random_range(1..4)
                ),
                5 => format!(
                    "UPDATE projects SET org_id = {} WHERE id = {project}",
                    rng.random_range(1..4)
                ),
                _ => format!(
                    "DELETE FROM org_members WHERE user_id = '{user}' AND org_id = {}",
                    rng.random_range(1..4)
                ),
            });
        }
        let batch = if rng.random_bool(0.5) {
            format!("BEGIN; {}; COMMIT", statements.join("; "))
        } else {
            statements.join("; ")
        };
        sql.batch_execute(&batch).await.expect(&batch);
        for shape in &mut shapes {
            shape
                .converges(&sql, &format!("round {round} (seed {seed}): {batch}"))
                .await;
        }
    }
    stop.cancel();
}

#[tokio::test]
async fn a_restart_brings_subquery_shapes_back_without_a_refetch() {
    let db = TestDb::new("subquery_restart").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let mut proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let stop = CancellationToken::new();
    let mut shapes = vec![
        Followed::start(
            &proxy,
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
            &["u1"],
            &stop,
        ),
        Followed::start(
            &proxy,
            "project_id IN (SELECT id FROM projects WHERE org_id IN \
             (SELECT org_id FROM org_members WHERE user_id = $1))",
            &["u2"],
            &stop,
        ),
    ];
    for shape in &mut shapes {
        shape.converges(&sql, "the start").await;
    }
    let handles: Vec<String> = shapes
        .iter()
        .map(|s| s.consumer.state().handle.unwrap())
        .collect();
    sql.batch_execute("INSERT INTO members VALUES (5, 'u1', 'dev')")
        .await
        .unwrap();
    for shape in &mut shapes {
        shape.converges(&sql, "a grant before the crash").await;
    }
    proxy.kill9().await;
    // While it is down: grants, revocations and row changes its levels never saw.
    sql.batch_execute(
        "DELETE FROM members WHERE project_id = 1 AND user_id = 'u1';
         INSERT INTO members VALUES (6, 'u1', 'dev');
         UPDATE todos SET title = 'changed while down' WHERE project_id IN (2, 6);
         INSERT INTO org_members VALUES (3, 'u2');
         UPDATE projects SET org_id = 1 WHERE id = 2;",
    )
    .await
    .unwrap();
    proxy.restart().await;
    for shape in &mut shapes {
        shape.converges(&sql, "the restart").await;
    }
    sql.batch_execute(
        "DELETE FROM members WHERE project_id = 5;
         UPDATE todos SET project_id = 6 WHERE id = 10;
         DELETE FROM org_members WHERE org_id = 3;",
    )
    .await
    .unwrap();
    for shape in &mut shapes {
        shape.converges(&sql, "changes after the restart").await;
    }
    for (shape, handle) in shapes.iter().zip(handles) {
        assert_eq!(
            shape.consumer.state().handle.unwrap(),
            handle,
            "{}",
            shape.name
        );
    }
    stop.cancel();
}

/// What the concurrent churn does to the database besides its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disturbance {
    None,
    KillProxy,
    RestartPostgres,
}

/// One random write of the churn (membership granted or revoked, rows moving between
/// projects, projects moving between organisations, a big move).
fn churn_statement(rng: &mut StdRng) -> String {
    let users = ["u1", "u2", "u3"];
    let project = rng.random_range(1..10);
    let user = users[rng.random_range(0..users.len())];
    match rng.random_range(0..9) {
        0 | 1 => format!(
            "INSERT INTO members VALUES ({project}, '{user}', '{}') ON CONFLICT DO NOTHING",
            if rng.random_bool(0.5) { "owner" } else { "dev" }
        ),
        2 => format!("DELETE FROM members WHERE project_id = {project} AND user_id = '{user}'"),
        3 => format!(
            "UPDATE todos SET project_id = {project}, title = title || '.' WHERE id = {}",
            rng.random_range(1..61)
        ),
        4 => format!(
            "BEGIN; UPDATE members SET user_id = '{user}' WHERE project_id = {project}; \
             UPDATE todos SET done = NOT done WHERE project_id = {project}; COMMIT"
        ),
        5 => format!(
            "INSERT INTO org_members VALUES ({}, '{user}') ON CONFLICT DO NOTHING",
            rng.random_range(1..4)
        ),
        6 => format!(
            "UPDATE projects SET org_id = {} WHERE id = {project}",
            rng.random_range(1..4)
        ),
        7 => format!(
            "DELETE FROM org_members WHERE user_id = '{user}' AND org_id = {}",
            rng.random_range(1..4)
        ),
        // Many rows move at once: all of a project's todos into another.
        _ => format!(
            "UPDATE todos SET project_id = {project} WHERE project_id = {}",
            rng.random_range(1..10)
        ),
    }
}

async fn churn_converges(name: &str, disturbance: Disturbance) {
    let seed: u64 = std::env::var("SHAPESYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{name}: seed {seed} (replay with SHAPESYNC_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut db = TestDb::new(name).await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    // Enough rows that a big move is a big transaction.
    sql.batch_execute(
        "INSERT INTO todos SELECT g, 1 + g % 9, 'bulk ' || g, false FROM generate_series(1000, 3000) g",
    )
    .await
    .unwrap();
    let mut proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let stop = CancellationToken::new();
    let wheres: [(&str, &[&str]); 5] = [
        (
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
            &["u1"],
        ),
        (
            "project_id NOT IN (SELECT project_id FROM members WHERE role = $1) OR done",
            &["owner"],
        ),
        (
            "project_id IN (SELECT id FROM projects WHERE org_id IN \
             (SELECT org_id FROM org_members WHERE user_id = $1))",
            &["u2"],
        ),
        (
            "EXISTS (SELECT 1 FROM members m WHERE m.project_id = todos.project_id \
             AND m.user_id = $1) AND NOT done",
            &["u3"],
        ),
        (
            "(project_id, done) IN (SELECT id, archived FROM projects WHERE org_id <> 3)",
            &[],
        ),
    ];
    let followed =
        |(where_, params): (&str, &[&str])| Followed::start(&proxy, where_, params, &stop);
    // TanStack DB and the SQLite client on shapes that live through the disturbance, asking
    // their moves as rows or as events (events only where every subquery is positive).
    let mut shapes = vec![
        followed(wheres[0]).with_mirror(&proxy, Moves::Events).await,
        followed(wheres[1])
            .with_collection(&proxy, "rows")
            .with_mirror(&proxy, Moves::Rows)
            .await,
        // Two clients on one events shape: when one is wrong, the other tells whether the log
        // was.
        followed(wheres[2])
            .with_collection(&proxy, "events")
            .with_mirror(&proxy, Moves::Events)
            .await,
    ];
    // Every client of these is live before the churn: they follow it, and the disturbance.
    for shape in &mut shapes {
        shape.converges(&sql, "the start").await;
    }
    // Writers run while shapes are created and the database or proxy is disturbed.
    let writing = CancellationToken::new();
    let mut writers = Vec::new();
    for w in 0..2 {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w));
        let writing = writing.clone();
        let url = db.url.clone();
        writers.push(tokio::spawn(async move {
            let mut written = 0;
            while !writing.is_cancelled() {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(connection);
                while !writing.is_cancelled() {
                    let statement = churn_statement(&mut rng);
                    if let Err(e) = client.batch_execute(&statement).await {
                        if client.is_closed() {
                            break;
                        }
                        // Deadlocks between the two writers are expected; roll back.
                        let _ = client.batch_execute("ROLLBACK").await;
                        let _ = e;
                    } else {
                        written += 1;
                    }
                    // A pace the proxy (a debug build here, on a busy machine) catches up
                    // with well within WAIT once the writers stop.
                    tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
                }
            }
            written
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Its snapshot is taken in the middle of the churn, its first sync done before the
    // disturbance (a first request cut by it is retried from scratch, not a refetch).
    let mut mid_churn = followed(wheres[3]).with_collection(&proxy, "events");
    mid_churn.first_sync().await;
    shapes.push(mid_churn);
    match disturbance {
        Disturbance::None => {}
        Disturbance::KillProxy => {
            proxy.kill9().await;
            for shape in &mut shapes {
                shape.proxy_killed();
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
            proxy.restart().await;
        }
        Disturbance::RestartPostgres => {
            tokio::task::block_in_place(|| db.cluster.stop());
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
            tokio::task::block_in_place(|| db.cluster.start()).expect("restart Postgres");
        }
    }
    shapes.push(Followed::start(&proxy, wheres[4].0, wheres[4].1, &stop));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    writing.cancel();
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    eprintln!("{name}: {written} statements written");
    let sql = db.connect().await;
    for shape in &mut shapes {
        shape
            .converges(&sql, &format!("the churn (seed {seed})"))
            .await;
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_churn_converges() {
    churn_converges("subquery_churn_plain", Disturbance::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_churn_converges_across_a_proxy_kill() {
    churn_converges("subquery_churn_kill", Disturbance::KillProxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_churn_converges_across_a_postgres_restart() {
    churn_converges("subquery_churn_pg", Disturbance::RestartPostgres).await;
}

#[tokio::test]
async fn a_subset_of_a_subquery_shape_is_its_rows_narrowed_and_a_subquery_in_the_subset_is_refused()
{
    let db = TestDb::new("subquery_subset").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let shape = [
        ("table", "todos"),
        (
            "where",
            "project_id IN (SELECT project_id FROM members WHERE user_id = 'u1')",
        ),
    ];
    let url = |extra: &[(&str, &str)]| {
        let mut query: Vec<(&str, &str)> = shape.to_vec();
        query.extend_from_slice(extra);
        reqwest::Url::parse_with_params(&format!("{}/v1/shape", proxy.url), &query).unwrap()
    };
    let first = proxy
        .http()
        .get(url(&[("offset", "-1")]))
        .send()
        .await
        .unwrap();
    let handle = first.headers()["electric-handle"]
        .to_str()
        .unwrap()
        .to_owned();
    // Rows of the shape (projects 1 and 2) that are not done, newest first, three of them.
    let subset = proxy
        .http()
        .get(url(&[
            ("handle", &handle),
            ("offset", "0_0"),
            ("subset__where", "NOT done"),
            ("subset__order_by", "id DESC"),
            ("subset__limit", "3"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(subset.status(), 200);
    let body: Value = subset.json().await.unwrap();
    let got: Vec<String> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"]["id"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = sql
        .query(
            "SELECT id::text FROM todos WHERE project_id IN (SELECT project_id FROM members \
             WHERE user_id = 'u1') AND NOT done ORDER BY todos.id DESC LIMIT 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 3);
    // As Electric: the subset's own `where` may not have a subquery.
    let refused = proxy
        .http()
        .get(url(&[
            ("handle", &handle),
            ("offset", "0_0"),
            ("subset__where", "id IN (SELECT project_id FROM members)"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body = refused.text().await.unwrap();
    assert!(body.contains("subset"), "{body}");
}

#[tokio::test]
async fn tombstoned_rows_never_move_in() {
    let db = TestDb::new("subquery_tombstones").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE members (project_id int, user_id text, PRIMARY KEY (project_id, user_id));
         CREATE TABLE tasks (id int PRIMARY KEY, project_id int, deleted_at timestamptz);
         INSERT INTO members VALUES (1, 'u1');
         INSERT INTO tasks VALUES (1, 1, NULL), (2, 2, now()), (3, 2, NULL), (4, 2, NULL);",
    )
    .await
    .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &["--tombstones", "tasks"]).await;
    let stop = CancellationToken::new();
    let consumer = ShapeConsumer::new(
        &proxy.url,
        ShapeSpec::table("tasks", &["id"]).filter(
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
            &["u1"],
        ),
        ConsumerOptions::default(),
    );
    consumer.spawn(stop.clone());
    let ids = |want: &'static [&'static str]| {
        let consumer = consumer.clone();
        async move {
            wait_for(&format!("tasks {want:?}"), WAIT, || {
                let state = consumer.state();
                assert!(state.violations.is_empty(), "{:?}", state.violations);
                let got: Vec<String> = state
                    .rows
                    .values()
                    .map(|r| r["id"].as_str().unwrap().to_owned())
                    .collect();
                async move { (state.up_to_date && got == want).then_some(()) }
            })
            .await;
        }
    };
    ids(&["1"]).await;
    // Granted: the tombstoned task 2 stays out.
    sql.batch_execute("INSERT INTO members VALUES (2, 'u1')")
        .await
        .unwrap();
    ids(&["1", "3", "4"]).await;
    sql.batch_execute(
        "UPDATE tasks SET deleted_at = now() WHERE id = 3;
         UPDATE tasks SET deleted_at = NULL WHERE id = 2;",
    )
    .await
    .unwrap();
    ids(&["1", "2", "4"]).await;
    sql.batch_execute("DELETE FROM members WHERE project_id = 2")
        .await
        .unwrap();
    ids(&["1"]).await;
    // Granted again with a tombstoned row in the project: it never arrives, nor its delete.
    sql.batch_execute("BEGIN; UPDATE tasks SET deleted_at = now() WHERE id = 4; INSERT INTO members VALUES (2, 'u1'); COMMIT")
        .await
        .unwrap();
    ids(&["1", "2"]).await;
    assert_eq!(consumer.state().refetches, 0);
    stop.cancel();
}

/// A transaction that moves rows, cut off mid-stream (its walsender killed while the proxy
/// reads it): the proxy drops it, reads the shape's levels again and converges when Postgres
/// sends it again, without a refetch.
#[tokio::test]
async fn a_moving_transaction_cut_off_mid_stream_is_read_again() {
    let db = TestDb::new("subquery_cut_off").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start_logging(shapesync_bin!(), &db, &[]).await;
    let stop = CancellationToken::new();
    let mut shape = Followed::start(
        &proxy,
        "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
        &["u1"],
        &stop,
    );
    shape.converges(&sql, "the start").await;
    for attempt in 0..5 {
        // A grant first (it changes the shape's levels), then many rows of a project the shape
        // does not read, so that the stream is cut inside the transaction.
        sql.batch_execute(&format!(
            "BEGIN;
             INSERT INTO members VALUES ({p}, 'u1', 'dev') ON CONFLICT DO NOTHING;
             UPDATE todos SET title = title || '!' WHERE project_id = {p};
             INSERT INTO todos SELECT g, 9, 'filler', false
               FROM generate_series({from}, {from} + 199999) g;
             COMMIT;",
            p = 4 + attempt % 2,
            from = 1000 + attempt * 200_000,
        ))
        .await
        .unwrap();
        // Cut the stream once the proxy has read part of the transaction.
        let read_so_far = changes_read(&proxy).await;
        let deadline = std::time::Instant::now() + WAIT;
        while changes_read(&proxy).await < read_so_far + 20_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the transaction never came"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sql.batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
            .await
            .unwrap();
        // A shape read again shows what it read once the stream passed the read's snapshot:
        // after Postgres sent the 200,000 rows again (slow on a loaded machine).
        shape
            .converges_within(&sql, &format!("cut-off transaction {attempt}"), 3 * WAIT)
            .await;
        if proxy
            .log()
            .contains("read again after a dropped transaction")
        {
            stop.cancel();
            return;
        }
    }
    panic!(
        "no transaction was cut off inside the proxy in 5 attempts:\n{}",
        proxy.log()
    );
}

/// The changes the proxy has read from the stream.
async fn changes_read(proxy: &ProxyProcess) -> u64 {
    proxy.metric("shapesync_changes_total").await as u64
}
