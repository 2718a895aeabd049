//! Electric's subquery headers on every row message of a subquery shape (snapshot, live
//! changes, moves): `tags` (one per disjunct of the `where`, slots joined by `/`, a subquery's
//! slot the MD5 of `shapesync` ‖ handle ‖ `v:` ‖ value), `active_conditions` (one per
//! position) and `removed_tags` on updates, checked against values computed here from the
//! rows themselves.

use std::collections::BTreeMap;
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

/// Postgres' rows of the shape, by key.
async fn expected(sql: &tokio_postgres::Client) -> BTreeMap<String, Map<String, Value>> {
    let query = format!(
        "SELECT json_build_object('id', id::text, 'project_id', project_id::text, \
         'title', title, 'done', format('%s', done))::text FROM todos WHERE {WHERE}"
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

/// Reads the shape until it is up to date and equal to Postgres.
async fn sync(proxy: &ProxyProcess, mirror: &mut Mirror, sql: &tokio_postgres::Client, step: &str) {
    let want = expected(sql).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut query = vec![
            ("table", "todos"),
            ("where", WHERE),
            ("offset", &mirror.offset),
        ];
        if !mirror.handle.is_empty() {
            query.push(("handle", &mirror.handle));
        }
        let url =
            reqwest::Url::parse_with_params(&format!("{}/v1/shape", proxy.url), &query).unwrap();
        let response = proxy.http().get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{step}");
        let headers = response.headers().clone();
        mirror.handle = headers["electric-handle"].to_str().unwrap().to_owned();
        mirror.offset = headers["electric-offset"].to_str().unwrap().to_owned();
        let body: Vec<Value> = response.json().await.unwrap();
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
