//! Four kinds of client on one table at once: an RxDB app (Node, memory storage), a
//! WatermelonDB device, an Electric app (reads through `@electric-sql/client`, writes through
//! `POST /v1/mutations` as Electric apps do) and the Rust SQLite client, each writing its own
//! rows by a seeded plan while the proxy restarts under them. At the end Postgres holds
//! exactly what the plan says, a trigger's log shows no write applied twice or out of order
//! (and each mutation of the Electric app and the Rust client applied exactly once), and every
//! client equals Postgres. Replay a run with `SHAPESYNC_SEED=<seed>` (printed at the start).
//!
//! Rows are disjoint per writer on purpose: the four protocols resolve a conflict on the same
//! row each by its own rule (master wins, pull-and-retry, last write wins per column), which
//! the other tests of this binary cover one by one.

use std::collections::BTreeMap;
use std::time::Duration;

use client_sqlite::rusqlite::types::Value as SqlValue;
use client_sqlite::{Client, ClientConfig, ShapeSpec, SyncOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tests::ecosystems::{NodeClient, table_rows};
use tests::electric::ElectricClient;

use crate::support::*;

/// `applied` logs every change of `entries` that changes something, in commit order.
const ENTRIES: &str = "
    CREATE TABLE entries (id text PRIMARY KEY, author text NOT NULL, n integer NOT NULL,
                          note text NOT NULL);
    CREATE TABLE applied (seq bigserial PRIMARY KEY, op text NOT NULL, id text NOT NULL,
                          n integer NOT NULL);
    CREATE FUNCTION log_entry() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO applied (op, id, n) VALUES (TG_OP, OLD.id, OLD.n);
        ELSE
            INSERT INTO applied (op, id, n) VALUES (TG_OP, NEW.id, NEW.n);
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER entries_insert_delete AFTER INSERT OR DELETE ON entries
        FOR EACH ROW EXECUTE FUNCTION log_entry();
    CREATE TRIGGER entries_update AFTER UPDATE ON entries
        FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION log_entry();
";

const ROUNDS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Writer {
    Rxdb,
    Watermelon,
    Electric,
    Rust,
}

const WRITERS: [Writer; 4] = [
    Writer::Rxdb,
    Writer::Watermelon,
    Writer::Electric,
    Writer::Rust,
];

impl Writer {
    fn name(self) -> &'static str {
        match self {
            Writer::Rxdb => "rxdb",
            Writer::Watermelon => "watermelon",
            Writer::Electric => "electric",
            Writer::Rust => "rust",
        }
    }

    /// Whether every write reaches the server as its own mutation. RxDB and Watermelon push
    /// the state a row has when they sync, so writes between two syncs arrive as one.
    fn sends_every_write(self) -> bool {
        matches!(self, Writer::Electric | Writer::Rust)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert { id: String },
    Update { id: String, n: i64 },
    Delete { id: String },
}

/// What happens after a round.
#[derive(Debug, Clone, Copy)]
enum Restart {
    None,
    /// At once, while the clients are still pushing and pulling.
    Immediately,
    /// Once every writer has pushed.
    Settled,
}

struct Plan {
    rounds: Vec<(BTreeMap<Writer, Vec<Op>>, Restart)>,
}

fn entry(writer: Writer, id: &str, n: i64) -> Value {
    json!({"id": id, "author": writer.name(), "n": n, "note": format!("{id} v{n}")})
}

impl Plan {
    fn new(rng: &mut StdRng) -> Self {
        // Per writer: rows created so far, and the version of each live row.
        let mut created: BTreeMap<Writer, usize> = BTreeMap::new();
        let mut live: BTreeMap<Writer, BTreeMap<String, i64>> = BTreeMap::new();
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            let mut ops = BTreeMap::new();
            for writer in WRITERS {
                let rows = live.entry(writer).or_default();
                let mut list = Vec::new();
                for _ in 0..rng.random_range(2..=4) {
                    let choice = rng.random_range(0..10);
                    if rows.is_empty() || choice < 4 {
                        let k = created.entry(writer).or_default();
                        *k += 1;
                        let id = format!("{}-{k}", writer.name());
                        rows.insert(id.clone(), 1);
                        list.push(Op::Insert { id });
                    } else {
                        let at = rng.random_range(0..rows.len());
                        let id = rows.keys().nth(at).cloned().unwrap_or_default();
                        if choice < 9 {
                            let n = rows[&id] + 1;
                            rows.insert(id.clone(), n);
                            list.push(Op::Update { id, n });
                        } else {
                            rows.remove(&id);
                            list.push(Op::Delete { id });
                        }
                    }
                }
                ops.insert(writer, list);
            }
            let restart = match (round, rng.random_range(0..3)) {
                (1, _) => Restart::Immediately,
                (_, 0) => Restart::None,
                (_, 1) => Restart::Immediately,
                _ => Restart::Settled,
            };
            rounds.push((ops, restart));
        }
        Self { rounds }
    }

    /// The rows at the end, sorted by id.
    fn end(&self) -> Value {
        let mut rows: BTreeMap<String, Value> = BTreeMap::new();
        for (ops, _) in &self.rounds {
            for (writer, list) in ops {
                for op in list {
                    match op {
                        Op::Insert { id } => {
                            rows.insert(id.clone(), entry(*writer, id, 1));
                        }
                        Op::Update { id, n } => {
                            rows.insert(id.clone(), entry(*writer, id, *n));
                        }
                        Op::Delete { id } => {
                            rows.remove(id);
                        }
                    }
                }
            }
        }
        Value::Array(rows.into_values().collect())
    }

    /// Each row's writes in order, as the `applied` log shows them: (op, n).
    fn writes(&self) -> BTreeMap<String, (Writer, Vec<(String, i64)>)> {
        let mut writes: BTreeMap<String, (Writer, Vec<(String, i64)>)> = BTreeMap::new();
        let mut version: BTreeMap<String, i64> = BTreeMap::new();
        for (ops, _) in &self.rounds {
            for (writer, list) in ops {
                for op in list {
                    let (id, op, n) = match op {
                        Op::Insert { id } => (id, "INSERT", 1),
                        Op::Update { id, n } => (id, "UPDATE", *n),
                        Op::Delete { id } => (id, "DELETE", version[id]),
                    };
                    version.insert(id.clone(), n);
                    writes
                        .entry(id.clone())
                        .or_insert((*writer, Vec::new()))
                        .1
                        .push((op.to_owned(), n));
                }
            }
        }
        writes
    }
}

fn seed() -> u64 {
    match std::env::var("SHAPESYNC_SEED") {
        Ok(text) => text.trim().parse().expect("SHAPESYNC_SEED must be a u64"),
        Err(_) => rand::random(),
    }
}

fn entries_schema() -> Value {
    json!({
        "version": 0,
        "primaryKey": "id",
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 100},
            "author": {"type": "string"},
            "n": {"type": "integer"},
            "note": {"type": "string"}
        },
        "required": ["id", "author", "n", "note"]
    })
}

/// The Electric app: its reader, and its writes through `/v1/mutations`.
struct ElectricApp {
    reader: ElectricClient,
    http: reqwest::Client,
    next: u64,
}

impl ElectricApp {
    /// Sends one mutation, again and again while the proxy is away (the same id each time:
    /// the server applies it once); it must be applied.
    async fn write(&mut self, url: &str, op: &Op) {
        self.next += 1;
        let (kind, id, values) = match op {
            Op::Insert { id } => ("insert", id, Some(entry(Writer::Electric, id, 1))),
            Op::Update { id, n } => ("update", id, Some(entry(Writer::Electric, id, *n))),
            Op::Delete { id } => ("delete", id, None),
        };
        let mut mutation = json!({
            "id": format!("electric-{}", self.next),
            "table": "entries",
            "op": kind,
            "key": {"id": id},
            "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        });
        if let Some(Value::Object(mut values)) = values {
            values.remove("id");
            mutation["values"] = Value::Object(values);
        }
        let body = json!({"client_id": "electric-app", "mutations": [mutation]});
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let sent = self
                .http
                .post(format!("{url}/v1/mutations"))
                .json(&body)
                .send()
                .await;
            if let Ok(response) = sent
                && response.status() == 200
            {
                let answer: Value = response.json().await.expect("the mutations answer");
                assert_eq!(
                    answer["results"][0]["status"], "applied",
                    "{body} → {answer}"
                );
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy never took {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn key(id: &str) -> Map<String, Value> {
    let mut key = Map::new();
    key.insert("id".into(), json!(id));
    key
}

fn values(row: Value) -> Map<String, Value> {
    match row {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

async fn rxdb_round(client: &mut NodeClient, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Insert { id } => {
                client
                    .ok("insert", json!({"doc": entry(Writer::Rxdb, id, 1)}))
                    .await
            }
            Op::Update { id, n } => {
                client
                    .ok(
                        "patch",
                        json!({"id": id, "patch": {"n": n, "note": format!("{id} v{n}")}}),
                    )
                    .await
            }
            Op::Delete { id } => client.ok("remove", json!({"id": id})).await,
        };
    }
}

/// Writes, then one synchronize(), which may fail while the proxy restarts.
async fn watermelon_round(device: &mut NodeClient, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Insert { id } => {
                device
                    .ok(
                        "create",
                        json!({"table": "entries", "raw": entry(Writer::Watermelon, id, 1)}),
                    )
                    .await
            }
            Op::Update { id, n } => {
                device
                    .ok(
                        "update",
                        json!({"table": "entries", "id": id,
                               "raw": {"n": n, "note": format!("{id} v{n}")}}),
                    )
                    .await
            }
            Op::Delete { id } => {
                device
                    .ok("delete", json!({"table": "entries", "id": id}))
                    .await
            }
        };
    }
    let sync = Sync::from(device.ok("sync", json!({})).await);
    assert_eq!(
        sync.logged,
        Vec::<Value>::new(),
        "WatermelonDB logged errors"
    );
}

async fn electric_round(app: &mut ElectricApp, url: &str, ops: &[Op]) {
    for op in ops {
        app.write(url, op).await;
    }
}

async fn rust_round(client: &Client, ops: &[Op]) {
    for op in ops {
        let queued = match op {
            Op::Insert { id } => {
                client
                    .insert("entries", values(entry(Writer::Rust, id, 1)))
                    .await
            }
            Op::Update { id, n } => {
                client
                    .update(
                        "entries",
                        key(id),
                        values(json!({"n": n, "note": format!("{id} v{n}")})),
                    )
                    .await
            }
            Op::Delete { id } => client.delete("entries", key(id)).await,
        };
        queued.expect("the Rust client takes the write");
    }
}

/// Every writer's writes are in Postgres.
async fn settle(rxdb: &mut NodeClient, watermelon: &mut NodeClient, rust: &Client) {
    rxdb.ok("inSync", json!({})).await;
    // A live SSE request made after a restart leaves the status `offline` until the next
    // change of the table arrives; a sync-now asks at once.
    tokio::time::timeout(WAIT, rust.sync_now())
        .await
        .expect("the Rust client's sync-now answers")
        .expect("the Rust client syncs now");
    if let Err(err) = rust.wait_synced(WAIT).await {
        panic!("the Rust client did not sync: {err}; {:#?}", rust.status());
    }
    for attempt in 1.. {
        let sync = Sync::from(watermelon.ok("sync", json!({})).await);
        assert_eq!(
            sync.logged,
            Vec::<Value>::new(),
            "WatermelonDB logged errors"
        );
        if sync.error.is_none() && watermelon.ok("unsynced", json!({})).await == false {
            break;
        }
        assert!(
            attempt < 50,
            "the Watermelon device never synced: {:?}",
            sync.error
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Rust client's rows, in the form of [`table_rows`].
async fn rust_rows(client: &Client) -> Value {
    let rows = client
        .read(|conn| {
            let mut stmt = conn.prepare("SELECT id, author, n, note FROM entries ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| {
                    let text = |i: usize| match r.get::<_, SqlValue>(i) {
                        Ok(SqlValue::Text(t)) => Ok(json!(t)),
                        Ok(SqlValue::Integer(n)) => Ok(json!(n)),
                        Ok(other) => Ok(json!(format!("{other:?}"))),
                        Err(err) => Err(err),
                    };
                    Ok(json!({"id": text(0)?, "author": text(1)?, "n": text(2)?,
                              "note": text(3)?}))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .expect("read the Rust client's database");
    Value::Array(rows)
}

/// Postgres' rows with every value as text, as the Electric client (raw) holds them.
fn as_text(rows: &Value) -> Value {
    let rows = rows.as_array().expect("rows");
    Value::Array(
        rows.iter()
            .map(|row| {
                let row = row.as_object().expect("a row");
                Value::Object(
                    row.iter()
                        .map(|(k, v)| {
                            let text = match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            (k.clone(), json!(text))
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

fn electric_rows(rows: &Map<String, Value>) -> Value {
    let mut rows: Vec<Value> = rows.values().cloned().collect();
    rows.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_owned());
    Value::Array(rows)
}

/// The `applied` log per row.
async fn applied(sql: &tokio_postgres::Client) -> BTreeMap<String, Vec<(String, i64)>> {
    let mut log: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for row in sql
        .query("SELECT op, id, n FROM applied ORDER BY seq", &[])
        .await
        .expect("read the applied log")
    {
        log.entry(row.get(1))
            .or_default()
            .push((row.get(0), i64::from(row.get::<_, i32>(2))));
    }
    log
}

/// What the log shows of one row is what its writer wrote: each mutation once for writers
/// that send every write; for the others, the versions that reached the server, each once
/// and in order, ending with the last write.
fn check_log(
    id: &str,
    writer: Writer,
    planned: &[(String, i64)],
    logged: &[(String, i64)],
) -> Option<String> {
    if writer.sends_every_write() {
        return (planned != logged)
            .then(|| format!("{id} ({writer:?}): planned {planned:?}, applied {logged:?}"));
    }
    // Versions that reached the server: one INSERT first, strictly rising versions, and a
    // DELETE (of the version the server had) only at the end.
    let writes = match logged.split_last() {
        Some(((op, n), before)) if op == "DELETE" => before
            .last()
            .is_some_and(|(_, last)| last == n)
            .then_some(before),
        _ => Some(logged),
    };
    let well_formed = writes.is_some_and(|writes| {
        writes
            .iter()
            .enumerate()
            .all(|(i, (op, _))| (op == "INSERT") == (i == 0))
            && writes.windows(2).all(|w| w[0].1 < w[1].1)
    });
    let ends_right = match planned.last() {
        // Created and deleted between two syncs, it may never have reached the server.
        Some((op, _)) if op == "DELETE" => {
            logged.is_empty() || logged.last().is_some_and(|(op, _)| op == "DELETE")
        }
        Some((_, n)) => logged
            .last()
            .is_some_and(|(op, m)| op != "DELETE" && m == n),
        None => logged.is_empty(),
    };
    let ok = (logged.is_empty() || well_formed) && ends_right;
    (!ok).then(|| format!("{id} ({writer:?}): planned {planned:?}, applied {logged:?}"))
}

#[tokio::test]
async fn rxdb_watermelon_electric_and_rust_clients_converge_through_proxy_restarts() {
    let seed = seed();
    eprintln!("ecosystems mixed: seed {seed} (replay with SHAPESYNC_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = Plan::new(&mut rng);

    let db = database("eco_mixed", ENTRIES).await;
    let sql = db.connect().await;
    let mut proxy = open_proxy(&db, "entries").await;
    let url = proxy.url.clone();
    let mut rxdb = NodeClient::start(
        "rxdb",
        "rxdb-node.mjs",
        &json!({"url": url, "table": "entries", "name": "mixed", "schema": entries_schema()}),
    );
    let mut watermelon = NodeClient::start(
        "watermelon",
        "watermelon-node.mjs",
        &json!({"url": url, "name": "mixed", "tables": {"entries": [
            {"name": "author", "type": "string"},
            {"name": "n", "type": "number"},
            {"name": "note", "type": "string"}
        ]}}),
    );
    let mut electric = ElectricApp {
        reader: ElectricClient::start(&url, json!({"params": {"table": "entries"}, "raw": true})),
        http: reqwest::Client::new(),
        next: 0,
    };
    let dir = tempfile::tempdir().expect("client dir");
    let mut config =
        ClientConfig::new(&url, dir.path().join("rust.db")).shape(ShapeSpec::table("entries"));
    config.sync = SyncOptions {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..SyncOptions::default()
    };
    let rust = Client::open(config).await.expect("open the Rust client");
    start(&mut rxdb).await;

    for (ops, restart) in &plan.rounds {
        tokio::join!(
            rxdb_round(&mut rxdb, &ops[&Writer::Rxdb]),
            watermelon_round(&mut watermelon, &ops[&Writer::Watermelon]),
            electric_round(&mut electric, &url, &ops[&Writer::Electric]),
            rust_round(&rust, &ops[&Writer::Rust]),
        );
        match restart {
            Restart::None => {}
            Restart::Immediately => proxy.restart().await,
            Restart::Settled => {
                settle(&mut rxdb, &mut watermelon, &rust).await;
                proxy.restart().await;
            }
        }
    }
    settle(&mut rxdb, &mut watermelon, &rust).await;

    let rows = table_rows(&sql, "entries", "true").await;
    if rows != plan.end() {
        // What the RxDB handlers saw and the applied log tell which writer lost what.
        eprintln!("rxdb saw: {:#}", rxdb.ok("seen", json!({})).await);
        eprintln!("rxdb docs: {}", rxdb.ok("docs", json!({})).await);
        eprintln!("applied: {:?}", applied(&sql).await);
    }
    assert_eq!(
        rows,
        plan.end(),
        "Postgres holds what the plan wrote (seed {seed})"
    );
    let log = applied(&sql).await;
    let problems: Vec<String> = plan
        .writes()
        .iter()
        .filter_map(|(id, (writer, planned))| {
            check_log(id, *writer, planned, log.get(id).map_or(&[], Vec::as_slice))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "writes applied other than once (seed {seed}):\n{}",
        problems.join("\n")
    );

    wait_docs(&mut rxdb, &rows).await;
    let watermelon_rows = records(&mut watermelon, "entries").await;
    assert_eq!(watermelon_rows, rows, "the Watermelon device (seed {seed})");
    let text = as_text(&rows);
    electric
        .reader
        .wait_rows(WAIT, |r| electric_rows(r) == text)
        .await;
    tests::wait_for("the Rust client equals Postgres", WAIT, || {
        let rust = &rust;
        let rows = &rows;
        async move { (rust_rows(rust).await == *rows).then_some(()) }
    })
    .await;
    rust.close().await;
}
