//! The ecosystem tests' world: a database with the test tables, a proxy in front of it, the
//! clients, and tokens.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tests::ecosystems::{NodeClient, table_rows};
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

/// How long a client may take to see a change: generous, nothing here measures speed.
pub const WAIT: Duration = Duration::from_secs(30);

/// The RxDB tests' table and rows.
pub const ITEMS: &str = "
    CREATE TABLE items (id text PRIMARY KEY, title text NOT NULL,
                        done boolean NOT NULL DEFAULT false, rank integer NOT NULL DEFAULT 0);
    INSERT INTO items VALUES ('i1', 'one', false, 1), ('i2', 'two', false, 2),
                             ('i3', 'three', false, 3);
";

/// `items` as an RxDB schema; RxDB adds `additionalProperties: false`, and the clients
/// validate every document (ajv), so the server's JSON must have exactly these types.
pub fn items_schema() -> Value {
    json!({
        "version": 0,
        "primaryKey": "id",
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 100},
            "title": {"type": "string"},
            "done": {"type": "boolean"},
            "rank": {"type": "integer"}
        },
        "required": ["id", "title", "done", "rank"]
    })
}

/// A database with `schema` applied.
pub async fn database(name: &str, schema: &str) -> TestDb {
    let db = TestDb::new(name).await;
    db.connect()
        .await
        .batch_execute(schema)
        .await
        .expect("create the test tables");
    db
}

/// A proxy without auth that lets clients write `writable`.
pub async fn open_proxy(db: &TestDb, writable: &str) -> ProxyProcess {
    ProxyProcess::start(shapesync_bin!(), db, &["--writable", writable]).await
}

/// An RxDB client in Node with the memory storage, replicating `items`.
pub fn rxdb_node(url: &str, name: &str) -> NodeClient {
    rxdb_node_with_token(url, name, None)
}

/// [`rxdb_node`] sending `token` as `Authorization: Bearer`.
pub fn rxdb_node_with_token(url: &str, name: &str, token: Option<&str>) -> NodeClient {
    NodeClient::start(
        &format!("rxdb {name}"),
        "rxdb-node.mjs",
        &json!({"url": url, "table": "items", "name": name, "schema": items_schema(),
                "token": token}),
    )
}

/// An RxDB client in headless Chromium with the Dexie (IndexedDB) storage, sending `token`
/// as `Authorization: Bearer` (and as `?token=` on its EventSource, which cannot set headers).
pub fn rxdb_browser(url: &str, name: &str, token: &str) -> NodeClient {
    NodeClient::start(
        &format!("rxdb in chromium {name}"),
        "rxdb-browser.mjs",
        &json!({"url": url, "table": "items", "name": name, "schema": items_schema(),
                "token": token}),
    )
}

/// Starts replication and waits for its first round.
pub async fn start(client: &mut NodeClient) {
    client.ok("start", json!({})).await;
}

/// Waits until the client's documents equal `expected`.
pub async fn wait_docs(client: &mut NodeClient, expected: &Value) {
    client
        .ok(
            "waitDocs",
            json!({"expected": expected, "timeoutMs": WAIT.as_millis() as u64}),
        )
        .await;
}

pub async fn items(sql: &tokio_postgres::Client) -> Value {
    table_rows(sql, "items", "true").await
}

pub fn item(id: &str, title: &str, done: bool, rank: i64) -> Value {
    json!({"id": id, "title": title, "done": done, "rank": rank})
}

// WatermelonDB.

pub const SECRET: &str = "ecosystems-server-s3cret";
pub const JWT_KEY: &str = "ecosystems-hs256-key";
pub const ISSUER: &str = "https://id.test";
pub const AUDIENCE: &str = "shapesync";

/// Two tables with Watermelon's text `id`; rows of alice and of bob.
pub const TASKS: &str = "
    CREATE TABLE projects (id text PRIMARY KEY, owner_id text NOT NULL, name text NOT NULL);
    CREATE TABLE tasks (id text PRIMARY KEY, owner_id text NOT NULL, project_id text,
                        title text NOT NULL, done boolean NOT NULL DEFAULT false);
    INSERT INTO projects VALUES ('p1', 'alice', 'Home'), ('p2', 'bob', 'Work');
    INSERT INTO tasks VALUES ('t1', 'alice', 'p1', 'Buy milk', false),
                             ('t2', 'alice', NULL, 'Call mum', false),
                             ('t3', 'alice', 'p1', 'Water plants', true),
                             ('t4', 'bob', 'p2', 'Bob task 7731', false);
";

/// Every token reads and writes every item.
pub const ITEMS_RULES: &str = r#"
[tables.items]
read = "true"
write = ["insert", "update", "delete"]
"#;

/// Each user reads and writes their own projects and tasks.
pub const TASKS_RULES: &str = r#"
[tables.projects]
read = "owner_id = $claims.sub"
write = ["insert", "update", "delete"]

[tables.tasks]
read = "owner_id = $claims.sub"
write = ["insert", "update", "delete"]
"#;

/// A proxy with the secret, HS256 tokens and `rules`; `writable` writable.
pub async fn auth_proxy(
    db: &TestDb,
    rules_dir: &tempfile::TempDir,
    rules: &str,
    writable: &str,
) -> ProxyProcess {
    let text = rules;
    let rules = rules_dir.path().join("rules.toml");
    std::fs::write(&rules, text).expect("write the rules");
    let rules = rules.display().to_string();
    ProxyProcess::start(
        shapesync_bin!(),
        db,
        &[
            "--secret",
            SECRET,
            "--jwt-secret",
            JWT_KEY,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--rules",
            &rules,
            "--writable",
            writable,
        ],
    )
    .await
}

/// A token of `sub` good for an hour.
pub fn token(sub: &str) -> String {
    let claims = json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE,
                        "exp": jsonwebtoken::get_current_timestamp() + 3600});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_KEY.as_bytes()),
    )
    .expect("sign a token")
}

/// A WatermelonDB device (LokiJS adapter) of the user of `token`, syncing both tables.
pub fn watermelon(url: &str, token: &str, name: &str) -> NodeClient {
    let text = |name: &str| json!({"name": name, "type": "string"});
    NodeClient::start(
        &format!("watermelon {name}"),
        "watermelon-node.mjs",
        &json!({
            "url": url,
            "token": token,
            "name": name,
            "tables": {
                "projects": [text("owner_id"), text("name")],
                "tasks": [
                    text("owner_id"),
                    {"name": "project_id", "type": "string", "isOptional": true},
                    text("title"),
                    {"name": "done", "type": "boolean"}
                ]
            }
        }),
    )
}

/// One `synchronize()`: the error it threw, the pull and push responses, and the errors
/// WatermelonDB logged (how it reports a server that breaks its protocol).
pub struct Sync {
    pub error: Option<String>,
    pub pulls: Vec<Value>,
    pub pushes: Vec<Value>,
    pub logged: Vec<Value>,
}

impl Sync {
    pub fn from(result: Value) -> Self {
        let list = |name: &str| result[name].as_array().cloned().unwrap_or_default();
        Self {
            error: result["error"].as_str().map(str::to_owned),
            pulls: list("pulls"),
            pushes: list("pushes"),
            logged: list("logged"),
        }
    }
}

/// A synchronize() that must succeed without WatermelonDB complaining about the server.
pub async fn sync(device: &mut NodeClient) -> Sync {
    let sync = Sync::from(device.ok("sync", json!({})).await);
    assert_eq!(sync.error, None, "synchronize() failed");
    assert_eq!(
        sync.logged,
        Vec::<Value>::new(),
        "WatermelonDB logged errors; pulls: {:?}",
        sync.pulls
    );
    sync
}

pub async fn records(device: &mut NodeClient, table: &str) -> Value {
    device.ok("records", json!({"table": table})).await
}

/// `table`'s rows that alice may read, as Postgres has them.
pub async fn alices(sql: &tokio_postgres::Client, table: &str) -> Value {
    table_rows(sql, table, "owner_id = 'alice'").await
}

/// Both tables of `device` equal alice's rows in Postgres.
pub async fn assert_device_equals_postgres(device: &mut NodeClient, sql: &tokio_postgres::Client) {
    for table in ["projects", "tasks"] {
        assert_eq!(
            records(device, table).await,
            alices(sql, table).await,
            "{table} on the device and in Postgres"
        );
    }
}
