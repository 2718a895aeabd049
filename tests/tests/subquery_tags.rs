//! Electric's subquery headers on every row message of a subquery shape (snapshot, live
//! changes, moves): `tags` (one per disjunct of the `where`, slots joined by `/`, a subquery's
//! slot the MD5 of `shapesync` ‖ handle ‖ `v:` ‖ value), `active_conditions` (one per
//! position) and `removed_tags` on updates, checked against values computed here from the
//! rows themselves; and with `moves=events`, Electric's `move-out`/`move-in` events, which a
//! client following the tags as Electric's clients do turns into exactly Postgres' rows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::{Map, Value, json};
use tests::proxy_process::ProxyProcess;
use tests::subquery_world::{MOVE_STEPS, SCHEMA};
use tests::{TestDb, shapesync_bin};

const WHERE: &str = "project_id IN (SELECT project_id FROM members WHERE user_id = 'u1') OR done";

fn hash(handle: &str, value: &str) -> String {
    let digest = Md5::digest(format!("shapesync{handle}v:{value}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shape's rows as its messages left them, by key.
struct Mirror {
    handle: String,
    offset: String,
    rows: BTreeMap<String, Map<String, Value>>,
    checked: usize,
}

impl Mirror {
    /// The tags a row of the shape must carry: `["<h>/", "/1"]`.
    fn tags(&self, row: &Map<String, Value>) -> Vec<String> {
        let project = row["project_id"].as_str().expect("project_id selected");
        vec![format!("{}/", hash(&self.handle, project)), "/1".to_owned()]
    }

    /// Applies one message, checking its headers.
    fn apply(&mut self, message: &Value, step: &str) {
        let headers = &message["headers"];
        let Some(operation) = headers["operation"].as_str() else {
            return;
        };
        let key = message["key"].as_str().unwrap().to_owned();
        let value = message["value"].as_object().unwrap();
        let (row, old) = match operation {
            "insert" => (value.clone(), None),
            "update" => {
                let old = self.rows[&key].clone();
                let mut row = old.clone();
                row.extend(value.clone());
                (row, Some(old))
            }
            "delete" => (self.rows[&key].clone(), None),
            other => panic!("{step}: operation {other}"),
        };
        let tags = self.tags(&row);
        assert_eq!(headers["tags"], json!(tags), "{step}: {message}");
        let active = headers["active_conditions"].as_array().unwrap_or_else(|| {
            panic!("{step}: no active_conditions: {message}");
        });
        assert_eq!(active.len(), 2, "{step}: {message}");
        assert_eq!(
            active[1],
            json!(row["done"] == "t"),
            "{step}: the second position is `done`: {message}"
        );
        if operation != "delete" {
            assert!(
                active.iter().any(|a| a == true),
                "{step}: a row in the shape satisfies a disjunct: {message}"
            );
        }
        match old {
            Some(old) => {
                let before = self.tags(&old);
                let removed: Vec<&String> = before.iter().filter(|t| !tags.contains(t)).collect();
                assert_eq!(headers["removed_tags"], json!(removed), "{step}: {message}");
            }
            None => assert!(headers.get("removed_tags").is_none(), "{step}: {message}"),
        }
        if operation == "delete" {
            self.rows.remove(&key);
        } else {
            self.rows.insert(key, row);
        }
        self.checked += 1;
    }
}

/// Reads the shape until it is up to date and equal to Postgres.
async fn sync(proxy: &ProxyProcess, mirror: &mut Mirror, sql: &tokio_postgres::Client, step: &str) {
    let want = expected_for(sql, WHERE).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = read_once(
            proxy,
            WHERE,
            None,
            &mut mirror.handle,
            &mut mirror.offset,
            step,
        )
        .await;
        let mut up_to_date = false;
        for message in &body {
            mirror.apply(message, step);
            up_to_date |= message["headers"]["control"] == "up-to-date";
        }
        if up_to_date && mirror.rows == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: {:?} vs {want:?}",
            mirror.rows
        );
        if up_to_date {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn every_row_message_of_a_subquery_shape_carries_its_tags_and_active_conditions() {
    let db = TestDb::new("subquery_tags").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let mut mirror = Mirror {
        handle: String::new(),
        offset: "-1".to_owned(),
        rows: BTreeMap::new(),
        checked: 0,
    };
    sync(&proxy, &mut mirror, &sql, "the snapshot").await;
    assert!(mirror.checked > 20, "{} snapshot rows", mirror.checked);
    let mut steps: Vec<(&str, &str)> = MOVE_STEPS.to_vec();
    steps.extend([
        ("finish a todo", "UPDATE todos SET done = true WHERE id = 5"),
        ("retitle", "UPDATE todos SET title = 'new' WHERE id = 10"),
        (
            "finish and move a kept todo: in by `done` only, its tag changes",
            "UPDATE todos SET done = true, project_id = 3 WHERE id = 10",
        ),
        (
            "delete some",
            "DELETE FROM todos WHERE id IN (SELECT id FROM todos WHERE done LIMIT 3)",
        ),
        ("reopen everything", "UPDATE todos SET done = false"),
    ]);
    for (step, statement) in steps {
        let before = mirror.checked;
        sql.batch_execute(statement).await.expect(statement);
        sync(&proxy, &mut mirror, &sql, step).await;
        println!("{step}: {} messages checked", mirror.checked - before);
        let must_change = ["finish and move", "delete some", "reopen"];
        assert!(
            mirror.checked > before || !must_change.iter().any(|m| step.starts_with(m)),
            "{step}: no message"
        );
    }
}

#[tokio::test]
async fn a_where_with_more_than_100_disjuncts_is_refused_naming_the_limit() {
    let db = TestDb::new("subquery_tags_limit").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    // 2^7 = 128 disjuncts once the ORs are multiplied out.
    let mut where_ = "project_id IN (SELECT project_id FROM members)".to_owned();
    for i in 0..7 {
        where_.push_str(&format!(" AND (id = {} OR title = 't{i}')", i * 2));
    }
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/shape", proxy.url),
        &[("table", "todos"), ("where", &where_), ("offset", "-1")],
    )
    .unwrap();
    let response = proxy.http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"]["where"],
        json!(["where clause too complex for subquery tags: 128 disjuncts, at most 100"]),
        "{body}"
    );
}

/// A client of a `moves=events` shape that follows tags as Electric's clients do (TanStack
/// DB's collection, Electric's Elixir client): per row its tags and active conditions; a
/// `move-out` turns the named positions false and drops the rows no disjunct keeps; a
/// `move-in` turns them true.
#[derive(Default)]
struct TagFollower {
    handle: String,
    offset: String,
    rows: BTreeMap<String, Map<String, Value>>,
    tags: BTreeMap<String, BTreeSet<String>>,
    active: BTreeMap<String, Vec<bool>>,
    /// Each disjunct's positions, from the first tags seen.
    disjuncts: Option<Vec<Vec<usize>>>,
    events: Vec<Value>,
    deletes: usize,
}

impl TagFollower {
    fn apply(&mut self, message: &Value) {
        let headers = &message["headers"];
        if let Some(event) = headers["event"].as_str() {
            self.events.push(message.clone());
            let on = event == "move-in";
            for pattern in headers["patterns"].as_array().unwrap() {
                let pos = pattern["pos"].as_u64().unwrap() as usize;
                let value = pattern["value"].as_str().unwrap();
                let keys: Vec<String> = self
                    .tags
                    .iter()
                    .filter(|(_, tags)| tags.iter().any(|t| t.split('/').nth(pos) == Some(value)))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    let active = self.active.get_mut(&key).unwrap();
                    active[pos] = on;
                    let kept = self
                        .disjuncts
                        .as_ref()
                        .unwrap()
                        .iter()
                        .any(|d| d.iter().all(|&p| active[p]));
                    if !kept {
                        self.rows.remove(&key);
                        self.tags.remove(&key);
                        self.active.remove(&key);
                    }
                }
            }
            return;
        }
        let Some(operation) = headers["operation"].as_str() else {
            return;
        };
        let key = message["key"].as_str().unwrap().to_owned();
        if operation == "delete" {
            self.deletes += 1;
            self.rows.remove(&key);
            self.tags.remove(&key);
            self.active.remove(&key);
            return;
        }
        let value = message["value"].as_object().unwrap().clone();
        self.rows.entry(key.clone()).or_default().extend(value);
        let tags: Vec<String> = serde_json::from_value(headers["tags"].clone()).unwrap();
        if self.disjuncts.is_none() {
            self.disjuncts = Some(
                tags.iter()
                    .map(|t| {
                        t.split('/')
                            .enumerate()
                            .filter(|(_, s)| !s.is_empty())
                            .map(|(i, _)| i)
                            .collect()
                    })
                    .collect(),
            );
        }
        let set = self.tags.entry(key.clone()).or_default();
        set.extend(tags);
        if let Some(removed) = headers["removed_tags"].as_array() {
            for r in removed {
                set.remove(r.as_str().unwrap());
            }
        }
        let active: Vec<bool> = serde_json::from_value(headers["active_conditions"].clone())
            .unwrap_or_else(|_| panic!("no active_conditions: {message}"));
        self.active.insert(key, active);
    }

    /// Reads the shape until it is up to date and holds Postgres' rows for `where_`.
    async fn sync(
        &mut self,
        proxy: &ProxyProcess,
        sql: &tokio_postgres::Client,
        where_: &str,
        step: &str,
    ) {
        let want = expected_for(sql, where_).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = read_once(
                proxy,
                where_,
                Some("events"),
                &mut self.handle,
                &mut self.offset,
                step,
            )
            .await;
            let mut up_to_date = false;
            for message in &body {
                self.apply(message);
                up_to_date |= message["headers"]["control"] == "up-to-date";
            }
            if up_to_date && self.rows == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{where_}, {step}: {:?} vs {want:?}",
                self.rows.keys().collect::<Vec<_>>()
            );
            if up_to_date {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// One read of the shape of `where_` (with `moves`) from `offset` (and `handle`, once known),
/// which it moves on: the messages.
async fn read_once(
    proxy: &ProxyProcess,
    where_: &str,
    moves: Option<&str>,
    handle: &mut String,
    offset: &mut String,
    step: &str,
) -> Vec<Value> {
    let mut query = vec![
        ("table", "todos"),
        ("where", where_),
        ("offset", offset.as_str()),
    ];
    if let Some(moves) = moves {
        query.push(("moves", moves));
    }
    if !handle.is_empty() {
        query.push(("handle", handle.as_str()));
    }
    let url = reqwest::Url::parse_with_params(&format!("{}/v1/shape", proxy.url), &query).unwrap();
    let response = proxy.http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{step}");
    let headers = response.headers();
    *handle = headers["electric-handle"].to_str().unwrap().to_owned();
    *offset = headers["electric-offset"].to_str().unwrap().to_owned();
    response.json().await.unwrap()
}

/// Postgres' rows for `where_`, by key.
async fn expected_for(
    sql: &tokio_postgres::Client,
    where_: &str,
) -> BTreeMap<String, Map<String, Value>> {
    let query = format!(
        "SELECT json_build_object('id', id::text, 'project_id', project_id::text, \
         'title', title, 'done', format('%s', done))::text FROM todos WHERE {where_}"
    );
    sql.query(&query, &[])
        .await
        .unwrap()
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

#[tokio::test]
async fn with_moves_as_events_rows_leave_by_electrics_move_out_events_not_deletes() {
    let db = TestDb::new("subquery_move_events").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let one = "project_id IN (SELECT project_id FROM members WHERE user_id = 'u1')";
    let mut follower = TagFollower {
        offset: "-1".to_owned(),
        ..TagFollower::default()
    };
    follower.sync(&proxy, &sql, one, "the snapshot").await;
    let rows_of_1 = follower
        .rows
        .values()
        .filter(|r| r["project_id"] == "1")
        .count();
    assert!(rows_of_1 > 0);

    // Revoking project 1: one move-out event naming project 1's hash, no delete.
    sql.batch_execute("DELETE FROM members WHERE project_id = 1 AND user_id = 'u1'")
        .await
        .unwrap();
    let xid: i64 = sql
        .query_one("SELECT (txid_current() - 1)::int8", &[])
        .await
        .unwrap()
        .get(0);
    follower.sync(&proxy, &sql, one, "revoke 1").await;
    assert_eq!(follower.deletes, 0, "a move-out writes no delete");
    assert_eq!(
        follower.events,
        vec![json!({"headers": {
            "event": "move-out",
            "patterns": [{"pos": 0, "value": hash(&follower.handle, "1")}],
            "txids": [xid],
        }})]
    );

    // Granting project 4: a move-in event, the rows as inserts marked is_move_in, then the
    // snapshot they were read at.
    follower.events.clear();
    let body_before = follower.offset.clone();
    sql.batch_execute("INSERT INTO members VALUES (4, 'u1', 'dev')")
        .await
        .unwrap();
    follower.sync(&proxy, &sql, one, "grant 4").await;
    assert_eq!(follower.events.len(), 1);
    assert_eq!(follower.events[0]["headers"]["event"], "move-in");
    assert_eq!(
        follower.events[0]["headers"]["patterns"],
        json!([{"pos": 0, "value": hash(&follower.handle, "4")}])
    );
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/shape", proxy.url),
        &[
            ("table", "todos"),
            ("where", one),
            ("moves", "events"),
            ("handle", &follower.handle),
            ("offset", &body_before),
        ],
    )
    .unwrap();
    let body: Vec<Value> = proxy
        .http()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<String> = body
        .iter()
        .map(|m| {
            let h = &m["headers"];
            h["event"]
                .as_str()
                .or(h["control"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    assert_eq!(h["is_move_in"], true, "{m}");
                    h["operation"].as_str().unwrap().to_owned()
                })
        })
        .collect();
    let rows_of_4 = follower
        .rows
        .values()
        .filter(|r| r["project_id"] == "4")
        .count();
    let mut want = vec!["move-in".to_owned()];
    want.extend(std::iter::repeat_n("insert".to_owned(), rows_of_4));
    want.extend(["snapshot-end".to_owned(), "up-to-date".to_owned()]);
    assert_eq!(kinds, want);

    // Every step of the move world (from its start), for shapes whose subqueries are all
    // positive.
    sql.batch_execute(
        "DELETE FROM members WHERE project_id = 4 AND user_id = 'u1';
         INSERT INTO members VALUES (1, 'u1', 'dev');",
    )
    .await
    .unwrap();
    let wheres = [
        one,
        "project_id IN (SELECT project_id FROM members WHERE user_id = 'u1') OR done",
        "project_id IN (SELECT id FROM projects WHERE NOT archived AND org_id IN \
         (SELECT org_id FROM org_members WHERE user_id = 'u2'))",
        "EXISTS (SELECT 1 FROM members m WHERE m.project_id = todos.project_id \
         AND m.user_id = 'u2') AND NOT done",
    ];
    let mut followers: Vec<TagFollower> = wheres
        .iter()
        .map(|_| TagFollower {
            offset: "-1".to_owned(),
            ..TagFollower::default()
        })
        .collect();
    for (f, w) in followers.iter_mut().zip(wheres) {
        f.sync(&proxy, &sql, w, "the snapshot").await;
    }
    for (step, statement) in MOVE_STEPS {
        sql.batch_execute(statement).await.expect(statement);
        for (f, w) in followers.iter_mut().zip(wheres) {
            f.sync(&proxy, &sql, w, step).await;
        }
    }
    let events: usize = followers.iter().map(|f| f.events.len()).sum();
    assert!(events > 10, "{events} events");
}

#[tokio::test]
async fn moves_as_events_are_refused_where_electrics_events_cannot_say_the_truth() {
    let db = TestDb::new("subquery_move_events_refused").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let refused = |where_: &'static str, moves: &'static str| {
        let proxy = &proxy;
        async move {
            let url = reqwest::Url::parse_with_params(
                &format!("{}/v1/shape", proxy.url),
                &[
                    ("table", "todos"),
                    ("where", where_),
                    ("moves", moves),
                    ("offset", "-1"),
                ],
            )
            .unwrap();
            let response = proxy.http().get(url).send().await.unwrap();
            assert_eq!(response.status(), 400, "{where_}");
            let body: Value = response.json().await.unwrap();
            body["errors"]["moves"][0].as_str().unwrap().to_owned()
        }
    };
    let not_in = refused(
        "project_id NOT IN (SELECT project_id FROM members WHERE user_id = 'u1')",
        "events",
    )
    .await;
    assert!(
        not_in.starts_with("moves=events needs every subquery to be a positive IN"),
        "{not_in}"
    );
    let plain = refused("done", "events").await;
    assert!(
        plain.starts_with("moves=events applies to shapes whose where has subqueries"),
        "{plain}"
    );
    let unknown = refused("done", "sometimes").await;
    assert!(
        unknown.starts_with("Invalid value for moves: \"sometimes\""),
        "{unknown}"
    );
}

/// A restart reads a `moves=events` shape's log as its clients read it: rows a `move-out`
/// event took out are not held, so when they are back at the restart they are sent again.
#[tokio::test]
async fn after_a_restart_rows_a_move_out_event_took_out_come_back_when_they_move_in() {
    let db = TestDb::new("subquery_move_events_restart").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let mut proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let one = "project_id IN (SELECT project_id FROM members WHERE user_id = 'u1')";
    let mut follower = TagFollower {
        offset: "-1".to_owned(),
        ..TagFollower::default()
    };
    follower.sync(&proxy, &sql, one, "the snapshot").await;
    sql.batch_execute("DELETE FROM members WHERE project_id = 1 AND user_id = 'u1'")
        .await
        .unwrap();
    follower.sync(&proxy, &sql, one, "revoke 1").await;
    assert_eq!(follower.events.len(), 1, "a move-out event");
    proxy.kill9().await;
    sql.batch_execute("INSERT INTO members VALUES (1, 'u1', 'dev')")
        .await
        .unwrap();
    proxy.restart().await;
    follower
        .sync(&proxy, &sql, one, "granted again while the proxy was down")
        .await;
    assert!(
        follower.rows.values().any(|r| r["project_id"] == "1"),
        "project 1's rows are back"
    );
}
