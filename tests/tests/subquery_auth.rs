//! Auth rules with subqueries: a token reads the todos of the projects it is a member of
//! (`read = "project_id IN (SELECT project_id FROM members WHERE user_id = $claims.sub)"`).
//! Revoking a membership moves that user's rows out live, and no later change of them reaches
//! the token; granting one moves them in. A client's own subquery over a table the token may
//! not read is a 403, and over a table it may read partly it sees only those rows (never a
//! way to probe the others).

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

const KEY: &str = "subquery-auth-test-key-of-32-bytes!!";
const WAIT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
    CREATE TABLE projects (id int PRIMARY KEY, name text);
    CREATE TABLE members (project_id int, user_id text, PRIMARY KEY (project_id, user_id));
    CREATE TABLE todos (id int PRIMARY KEY, project_id int, title text);
    INSERT INTO projects SELECT g, 'project ' || g FROM generate_series(1, 4) g;
    INSERT INTO members VALUES (1, 'u1'), (2, 'u1'), (3, 'u2');
    INSERT INTO todos SELECT g, 1 + g % 4, 'todo ' || g FROM generate_series(1, 40) g;";

const RULES: &str = r#"
[tables.todos]
read = "project_id IN (SELECT project_id FROM members WHERE user_id = $claims.sub)"

[tables.members]
read = "user_id = $claims.sub"
"#;

fn token(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 3600});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(KEY.as_bytes()),
    )
    .expect("sign")
}

async fn start() -> (TestDb, ProxyProcess, tempfile::TempDir) {
    let db = TestDb::new("subquery_auth").await;
    db.connect().await.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let proxy = ProxyProcess::start(
        shapesync_bin!(),
        &db,
        &["--jwt-secret", KEY, "--rules", rules.to_str().unwrap()],
    )
    .await;
    (db, proxy, dir)
}

/// A long-polling reader of one shape with a token, keeping every message it received.
struct Reader {
    http: reqwest::Client,
    url: String,
    token: String,
    query: Vec<(String, String)>,
    handle: Option<String>,
    offset: String,
    rows: BTreeMap<String, Value>,
    /// Every message, with the number of the response it came in.
    received: Vec<(usize, Value)>,
    responses: usize,
}

impl Reader {
    fn new(proxy: &ProxyProcess, token: String, query: &[(&str, &str)]) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: format!("{}/v1/shape", proxy.url),
            token,
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            handle: None,
            offset: "-1".into(),
            rows: BTreeMap::new(),
            received: Vec::new(),
            responses: 0,
        }
    }

    /// One request; returns the status.
    async fn step(&mut self) -> (u16, Value) {
        let mut query = self.query.clone();
        query.push(("offset".into(), self.offset.clone()));
        if let Some(handle) = &self.handle {
            query.push(("handle".into(), handle.clone()));
            query.push(("live".into(), "true".into()));
        }
        let url = reqwest::Url::parse_with_params(&self.url, &query).expect("shape URL");
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_millis(1500))
            .send()
            .await;
        let Ok(response) = response else {
            return (0, Value::Null);
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            return (status, body);
        }
        self.responses += 1;
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert!(
            self.handle.is_none() || self.handle == header("electric-handle"),
            "the shape was refetched"
        );
        self.handle = header("electric-handle");
        self.offset = header("electric-offset").expect("an offset");
        for message in body.as_array().into_iter().flatten() {
            self.received.push((self.responses, message.clone()));
            let Some(key) = message["key"].as_str() else {
                continue;
            };
            match message["headers"]["operation"].as_str() {
                Some("insert") => {
                    self.rows.insert(key.to_owned(), message["value"].clone());
                }
                Some("update") => {
                    if let Some(row) = self.rows.get_mut(key) {
                        for (k, v) in message["value"].as_object().unwrap() {
                            row[k] = v.clone();
                        }
                    }
                }
                Some("delete") => {
                    self.rows.remove(key);
                }
                _ => {}
            }
        }
        (status, body)
    }

    fn projects(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .rows
            .values()
            .map(|r| r["project_id"].as_str().unwrap().to_owned())
            .collect();
        p.sort();
        p.dedup();
        p
    }

    /// Reads until the rows are those of `projects` (by their todos' count in Postgres).
    async fn until_projects(&mut self, sql: &tokio_postgres::Client, projects: &[i32]) {
        let want: i64 = sql
            .query_one(
                "SELECT count(*) FROM todos WHERE project_id = ANY($1)",
                &[&projects.to_vec()],
            )
            .await
            .unwrap()
            .get(0);
        let want_projects: Vec<String> = projects.iter().map(i32::to_string).collect();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.step().await;
            assert!(status == 200 || status == 0, "{status}: {body}");
            if self.rows.len() as i64 == want && self.projects() == want_projects {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rows of projects {:?}, want {want_projects:?}",
                self.projects()
            );
        }
    }
}

#[tokio::test]
async fn revoking_a_membership_moves_rows_out_live_and_nothing_later_reaches_the_token() {
    let (db, proxy, _dir) = start().await;
    let sql = db.connect().await;
    let mut u1 = Reader::new(&proxy, token("u1"), &[("table", "todos")]);
    u1.until_projects(&sql, &[1, 2]).await;
    let mut u2 = Reader::new(&proxy, token("u2"), &[("table", "todos")]);
    u2.until_projects(&sql, &[3]).await;

    sql.batch_execute("INSERT INTO members VALUES (4, 'u1')")
        .await
        .unwrap();
    u1.until_projects(&sql, &[1, 2, 4]).await;

    sql.batch_execute("DELETE FROM members WHERE project_id = 2 AND user_id = 'u1'")
        .await
        .unwrap();
    u1.until_projects(&sql, &[1, 4]).await;
    let revoked_at = u1.responses;
    // Changes of the revoked project's rows after the revocation never reach u1.
    sql.batch_execute(
        "UPDATE todos SET title = 'secret after revoke' WHERE project_id = 2;
         INSERT INTO todos VALUES (100, 2, 'new secret');
         UPDATE todos SET title = 'visible' WHERE project_id = 1;",
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !u1
        .rows
        .values()
        .filter(|r| r["project_id"] == "1")
        .all(|r| r["title"] == "visible")
    {
        u1.step().await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "u1 never saw project 1's change"
        );
    }
    for (response, message) in &u1.received {
        if *response <= revoked_at {
            continue;
        }
        let leaked = message["value"]["project_id"] == "2"
            || message["value"]["title"]
                .as_str()
                .is_some_and(|t| t.contains("secret"));
        assert!(!leaked, "u1 received {message} after its revocation");
    }
    // u2 never saw u1's projects.
    u2.until_projects(&sql, &[3]).await;
    for (_, message) in &u2.received {
        let project = message["value"]["project_id"].as_str();
        assert!(project.is_none_or(|p| p == "3"), "u2 received {message}");
    }
}

#[tokio::test]
async fn a_client_subquery_reads_only_what_the_token_may_read() {
    let (db, proxy, _dir) = start().await;
    let sql = db.connect().await;
    // `projects` has no rules: a subquery over it is refused, whatever it asks.
    let mut probe = Reader::new(
        &proxy,
        token("u1"),
        &[
            ("table", "todos"),
            (
                "where",
                "project_id IN (SELECT id FROM projects WHERE name = 'project 3')",
            ),
        ],
    );
    let (status, body) = probe.step().await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.to_string().contains(
            r#"has a subquery reading table \"public\".\"projects\", which this token may not read"#
        ),
        "{body}"
    );
    // `members` is readable in part (own rows): a subquery over it sees only those, so asking
    // for u2's projects gives nothing, not u2's memberships.
    let mut other = Reader::new(
        &proxy,
        token("u1"),
        &[
            ("table", "todos"),
            (
                "where",
                "project_id IN (SELECT project_id FROM members WHERE user_id = 'u2')",
            ),
        ],
    );
    other.until_projects(&sql, &[]).await;
    let mut own = Reader::new(
        &proxy,
        token("u1"),
        &[
            ("table", "todos"),
            (
                "where",
                "project_id IN (SELECT project_id FROM members WHERE project_id > 1)",
            ),
        ],
    );
    own.until_projects(&sql, &[2]).await;
    sql.batch_execute("INSERT INTO members VALUES (3, 'u1')")
        .await
        .unwrap();
    own.until_projects(&sql, &[2, 3]).await;
}

/// Posts one mutation with u1's token; returns its result (`status`, and `error.code`).
async fn write(proxy: &ProxyProcess, sub: &str, mut mutation: Value) -> Value {
    mutation["timestamp"] = json!("2026-12-07T10:00:00.000Z");
    let body = json!({"client_id": "subquery-auth", "mutations": [mutation]});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/mutations", proxy.url))
        .bearer_auth(token(sub))
        .json(&body)
        .send()
        .await
        .expect("mutations");
    let answer: Value = response.json().await.expect("json");
    answer["results"][0].clone()
}

#[tokio::test]
async fn a_write_check_with_a_subquery_is_decided_in_the_write_transaction() {
    let db = TestDb::new("subquery_auth_writes").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!("{RULES}write = [\"insert\", \"update\", \"delete\"]\n").replace(
            "[tables.members]",
            "write = [\"insert\", \"update\", \"delete\"]\n\n[tables.members]",
        ),
    )
    .unwrap();
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    assert!(
        rules_text.contains("[tables.todos]\nread = \"project_id IN"),
        "{rules_text}"
    );
    let proxy = ProxyProcess::start(
        shapesync_bin!(),
        &db,
        &[
            "--jwt-secret",
            KEY,
            "--rules",
            rules.to_str().unwrap(),
            "--writable",
            "todos",
        ],
    )
    .await;
    let insert = |id: i32, project: i32| {
        json!({"id": format!("m{id}"), "table": "todos", "op": "insert",
               "key": {"id": id}, "values": {"project_id": project, "title": "new"}})
    };
    // A member's project: written. Another's: refused, and nothing written.
    let applied = write(&proxy, "u1", insert(200, 1)).await;
    assert_eq!(applied["status"], "applied", "{applied}");
    let refused = write(&proxy, "u1", insert(201, 3)).await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    // Moving a row out of the user's projects fails the check on the row after the write.
    let moved = write(
        &proxy,
        "u1",
        json!({"id": "m3", "table": "todos", "op": "update", "key": {"id": 200},
               "values": {"project_id": 3}}),
    )
    .await;
    assert_eq!(moved["error"]["code"], "forbidden", "{moved}");
    // Revoked by a committed transaction: the next write sees it at once.
    sql.batch_execute("DELETE FROM members WHERE project_id = 1 AND user_id = 'u1'")
        .await
        .unwrap();
    let after_revoke = write(
        &proxy,
        "u1",
        json!({"id": "m4", "table": "todos", "op": "update", "key": {"id": 200},
               "values": {"title": "after revoke"}}),
    )
    .await;
    assert_eq!(after_revoke["error"]["code"], "forbidden", "{after_revoke}");
    let rows: Vec<(i32, i32, String)> = sql
        .query(
            "SELECT id, project_id, title FROM todos WHERE id >= 200 ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows, vec![(200, 1, "new".to_owned())]);
    // Granted: writable again.
    sql.batch_execute("INSERT INTO members VALUES (1, 'u1')")
        .await
        .unwrap();
    let granted = write(
        &proxy,
        "u1",
        json!({"id": "m5", "table": "todos", "op": "update", "key": {"id": 200},
               "values": {"title": "granted"}}),
    )
    .await;
    assert_eq!(granted["status"], "applied", "{granted}");
}
