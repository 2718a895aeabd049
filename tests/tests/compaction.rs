//! Background compaction of shape logs against a real Postgres and proxy process: after a
//! history of updates, inserts, deletes and key changes is compacted, clients resuming from
//! every chunk boundary and from random offsets they held before the compaction (the
//! official Electric client, and the raw protocol from every single entry offset), a new
//! client from `-1`, and the Rust SQLite client (resumed and new) all end with exactly
//! `SELECT … FROM items`; a client from `-1` or from where a response ends reads a clean
//! history (no insert of a row it holds, no delete of one it does not), without the rows that
//! lived and died in the compacted part; live changes flow during and after it; the log
//! shrinks. A proxy
//! killed at every stage of a compaction restarts with a log serving exactly the rows, and a
//! standby follows a compacted log.
//!
//! Each run prints its seed; `SHAPESYNC_SEED=<seed>` replays the same history.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use client_sqlite::rusqlite::types::Value as SqlValue;
use client_sqlite::{Client, ClientConfig, ShapeSpec, SyncOptions};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::shape_http;
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(60);
const QUERY: &str = "table=items";
const CRASH_HOOK: &str = "SHAPESYNC_TEST_COMPACTION_CRASH";

/// Rows by primary key (`id` as text), each column as text.
type Rows = BTreeMap<String, Map<String, Value>>;

fn seed(test: &str) -> u64 {
    let seed = match std::env::var("SHAPESYNC_SEED") {
        Ok(text) => text.trim().parse().expect("SHAPESYNC_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {seed} (replay with SHAPESYNC_SEED={seed})");
    seed
}

/// How a reader takes the messages it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// From `-1` or from where a response ended: the messages must read as a clean history
    /// (no insert of a row it holds, no update or delete of a row it does not).
    Clean,
    /// From a position held before a compaction, possibly inside a merge window: an insert
    /// replaces a row and a delete of a row it does not hold is a no-op, as in Electric's
    /// client and ours.
    Resumed,
}

/// What a client does with a change message; `Err` for what a clean history never holds
/// (`Reading::Clean`).
fn apply(rows: &mut Rows, message: &Value, reading: Reading) -> Result<(), String> {
    let Some(operation) = message["headers"]["operation"].as_str() else {
        return Ok(());
    };
    let value = message["value"].as_object().cloned().unwrap_or_default();
    let id = value["id"].as_str().expect("the key column").to_owned();
    let clean = reading == Reading::Clean;
    match operation {
        "insert" => {
            if rows.insert(id, value).is_some() && clean {
                return Err(format!("insert of a row the client holds: {message}"));
            }
        }
        "update" => {
            let row = rows
                .get_mut(&id)
                .unwrap_or_else(|| panic!("update of a row the client does not hold: {message}"));
            row.extend(value);
        }
        _ => {
            if rows.remove(&id).is_none() && clean {
                return Err(format!(
                    "delete of a row the client does not hold: {message}"
                ));
            }
        }
    }
    Ok(())
}

async fn table_rows(sql: &tokio_postgres::Client) -> Rows {
    let rows = sql
        .query("SELECT id::text, title, n::text, note FROM items", &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let id: String = r.get(0);
            let row = ["id", "title", "n", "note"]
                .iter()
                .enumerate()
                .map(|(i, c)| (c.to_string(), json!(r.get::<_, Option<String>>(i))))
                .collect();
            (id, row)
        })
        .collect()
}

/// A position a client held, and its rows there.
#[derive(Debug, Clone)]
struct Held {
    offset: String,
    rows: Rows,
    /// A response ended here (a chunk boundary of the log as it was).
    boundary: bool,
    /// The change just applied (operation, id), at a position after an entry.
    change: Option<(String, String)>,
}

/// Reads the shape from (`handle`, `offset`: `-1` or where a response ended) to up-to-date
/// with plain requests, applying every change to `rows` as a clean history; returns the
/// handle and every position passed (after each entry, and where each response ended). A
/// walk that a compaction overtook (its offsets are then of the old layout, maybe inside a
/// merge window of the new one) is walked again.
async fn walk(
    proxy: &ProxyProcess,
    handle: Option<&str>,
    offset: &str,
    rows: &mut Rows,
) -> (String, Vec<Held>) {
    loop {
        let compacted = compactions(proxy);
        let mut walked = rows.clone();
        let (handle, held, unclean) =
            walk_shape(proxy, QUERY, handle, offset, &mut walked, Reading::Clean).await;
        if unclean.is_empty() {
            *rows = walked;
            return (handle, held);
        }
        assert_ne!(
            compactions(proxy),
            compacted,
            "from {offset}, not a clean history: {unclean:#?}"
        );
    }
}

/// [`walk`] from a position held before a compaction (a response's end then is maybe inside a
/// merge window now).
async fn walk_resumed(proxy: &ProxyProcess, handle: &str, held: &Held) -> Rows {
    let mut rows = held.rows.clone();
    walk_shape(
        proxy,
        QUERY,
        Some(handle),
        &held.offset,
        &mut rows,
        Reading::Resumed,
    )
    .await;
    rows
}

/// [`walk`] of the shape `shape` (its query string without handle and offset).
async fn walk_shape(
    proxy: &ProxyProcess,
    shape: &str,
    handle: Option<&str>,
    offset: &str,
    rows: &mut Rows,
    reading: Reading,
) -> (String, Vec<Held>, Vec<String>) {
    let mut handle = handle.map(str::to_owned);
    let mut offset = offset.to_owned();
    let mut passed = Vec::new();
    let mut unclean = Vec::new();
    loop {
        let query = match &handle {
            Some(h) => format!("{shape}&handle={h}&offset={offset}"),
            None => format!("{shape}&offset={offset}"),
        };
        let reply = shape_http::get(proxy.http(), &proxy.url, &query).await;
        assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
        for change in reply.changes() {
            if let Err(err) = apply(rows, &change, reading) {
                unclean.push(err);
            }
            let headers = &change["headers"];
            if let (Some(lsn), Some(op)) =
                (headers["lsn"].as_str(), headers["op_position"].as_u64())
            {
                passed.push(Held {
                    offset: format!("{lsn}_{op}"),
                    rows: rows.clone(),
                    boundary: false,
                    change: Some((
                        headers["operation"].as_str().unwrap_or_default().to_owned(),
                        change["value"]["id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )),
                });
            }
        }
        handle = Some(reply.header("electric-handle").unwrap().to_owned());
        offset = reply.header("electric-offset").unwrap().to_owned();
        passed.push(Held {
            offset: offset.clone(),
            rows: rows.clone(),
            boundary: true,
            change: None,
        });
        if reply.controls().contains(&"up-to-date".to_owned()) {
            return (handle.unwrap(), passed, unclean);
        }
    }
}

/// The ids a walk from `-1` saw inserted and then deleted, of rows not in the snapshot (the
/// rows held where the first log entry comes): rows that lived and died in the log.
fn short_lived(walk: &[Held]) -> BTreeSet<&str> {
    let first_entry = walk.iter().position(|h| h.change.is_some());
    let snapshot = first_entry
        .and_then(|i| i.checked_sub(1))
        .map(|i| &walk[i].rows);
    let mut inserted = BTreeSet::new();
    let mut gone = BTreeSet::new();
    let changes = walk.iter().filter_map(|h| h.change.as_ref());
    for (operation, id) in changes.filter(|(_, id)| snapshot.is_none_or(|s| !s.contains_key(id))) {
        match operation.as_str() {
            "insert" => {
                inserted.insert(id.as_str());
            }
            "delete" if inserted.contains(id.as_str()) => {
                gone.insert(id.as_str());
            }
            _ => {}
        }
    }
    gone
}

/// The official client resuming from `held` (not live): its messages applied to the rows
/// held there.
async fn electric_resume(proxy: &ProxyProcess, handle: &str, held: &Held) -> Rows {
    let mut client = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "raw": true, "subscribe": false,
               "offset": held.offset, "handle": handle}),
    );
    let mut rows = held.rows.clone();
    loop {
        let event = client.next_event(WAIT).await;
        assert_ne!(event["type"], "error", "from {}: {event}", held.offset);
        if event["type"] != "messages" {
            continue;
        }
        let messages = event["messages"].as_array().cloned().unwrap_or_default();
        for message in &messages {
            apply(&mut rows, message, Reading::Resumed).expect("lenient");
        }
        if shape_http::controls(&event["messages"]).contains(&"up-to-date".to_owned()) {
            return rows;
        }
    }
}

/// One transaction of random changes: updates of a few columns, inserts, deletes, rows
/// deleted and inserted again, key changes.
async fn random_transaction(sql: &tokio_postgres::Client, rng: &mut StdRng, next_id: &mut i32) {
    let mut statements = vec!["BEGIN".to_owned()];
    for _ in 0..rng.random_range(1..5) {
        let id = rng.random_range(1..=40);
        let statement = match rng.random_range(0..20) {
            0..=9 => format!("UPDATE items SET n = n + 1 WHERE id = {id}"),
            10..=12 => format!(
                "UPDATE items SET title = 'title {}', n = n + 1 WHERE id = {id}",
                rng.random_range(0..1000)
            ),
            13 => format!("DELETE FROM items WHERE id = {id}"),
            14..=15 => format!(
                "INSERT INTO items VALUES ({id}, 'back', 0, repeat('r', 40)) ON CONFLICT DO NOTHING"
            ),
            16 => {
                *next_id += 1;
                format!("UPDATE items SET id = {next_id} WHERE id = {id}")
            }
            17 => {
                *next_id += 1;
                format!("INSERT INTO items VALUES ({next_id}, 'short-lived', 0, 'gone soon')")
            }
            _ => format!("DELETE FROM items WHERE id > 1000 AND id <= {next_id} AND id % 2 = 0"),
        };
        statements.push(statement);
    }
    statements.push("COMMIT".to_owned());
    sql.batch_execute(&statements.join(";")).await.unwrap();
}

async fn history(sql: &tokio_postgres::Client, rng: &mut StdRng, next_id: &mut i32, txns: usize) {
    for _ in 0..txns {
        random_transaction(sql, rng, next_id).await;
    }
}

async fn setup(name: &str, flags: &[&str]) -> (TestDb, tokio_postgres::Client, ProxyProcess) {
    let db = TestDb::new(name).await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text, n int NOT NULL, note text);
         INSERT INTO items SELECT g, 'row ' || g, 0, repeat('n', 40) FROM generate_series(1, 40) g;",
    )
    .await
    .unwrap();
    let mut args = vec!["--chunk-bytes", "2048", "--long-poll-timeout", "2s"];
    args.extend_from_slice(flags);
    let proxy = ProxyProcess::start_logging(shapesync_bin!(), &db, &args).await;
    (db, sql, proxy)
}

fn changes_log(proxy: &ProxyProcess, handle: &str) -> PathBuf {
    proxy
        .storage_dir()
        .join("v1/shapes")
        .join(handle)
        .join("changes.log")
}

fn compactions(proxy: &ProxyProcess) -> usize {
    proxy.log().matches("shape log compacted").count()
}

async fn wait_compactions(proxy: &ProxyProcess, at_least: usize) {
    wait_for("a compaction", WAIT, || async {
        (compactions(proxy) >= at_least).then_some(())
    })
    .await;
}

fn sqlite_config(proxy: &ProxyProcess, dir: &tempfile::TempDir, file: &str) -> ClientConfig {
    let mut config = ClientConfig::new(&proxy.url, dir.path().join(file));
    config.shapes = vec![ShapeSpec::table("items")];
    config.sync = SyncOptions {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..SyncOptions::default()
    };
    config
}

/// The client's rows; `None` until it made its mirror table.
async fn sqlite_rows(client: &Client) -> Option<Rows> {
    client
        .read(|conn| {
            let mut stmt = conn.prepare("SELECT id, title, n, note FROM items")?;
            let rows = stmt
                .query_map([], |r| {
                    let text = |i: usize| {
                        r.get::<_, SqlValue>(i).map(|v| match v {
                            SqlValue::Null => Value::Null,
                            SqlValue::Integer(n) => json!(n.to_string()),
                            SqlValue::Real(f) => json!(f.to_string()),
                            SqlValue::Text(t) => json!(t),
                            SqlValue::Blob(_) => json!("<blob>"),
                        })
                    };
                    let mut row = Map::new();
                    for (i, c) in ["id", "title", "n", "note"].iter().enumerate() {
                        row.insert(c.to_string(), text(i)?);
                    }
                    Ok(row)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .ok()
        .map(|rows| {
            rows.into_iter()
                .map(|row| (row["id"].as_str().unwrap().to_owned(), row))
                .collect()
        })
}

async fn sqlite_converges(client: &Client, sql: &tokio_postgres::Client, what: &str) {
    let expected = table_rows(sql).await;
    wait_for(what, WAIT, || async {
        (sqlite_rows(client).await.as_ref() == Some(&expected)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn clients_resuming_from_any_offset_after_compaction_end_with_the_tables_rows() {
    let mut rng = StdRng::seed_from_u64(seed("compaction resume"));
    let (db, sql, mut proxy) = setup("compaction_resume", &["--compact-after", "off"]).await;
    let dir = tempfile::tempdir().unwrap();
    let early = Client::open(sqlite_config(&proxy, &dir, "early.db"))
        .await
        .unwrap();
    early.wait_synced(WAIT).await.expect("synced");
    let mut next_id = 1000;
    history(&sql, &mut rng, &mut next_id, 40).await;
    sqlite_converges(&early, &sql, "the early SQLite client follows").await;
    early.close().await;
    history(&sql, &mut rng, &mut next_id, 80).await;
    // Rows that surely live and die before the compaction, each in transactions of its own.
    for id in 50_000..50_010 {
        sql.batch_execute(&format!(
            "INSERT INTO items VALUES ({id}, 'brief', 0, 'x');
             UPDATE items SET n = 1 WHERE id = {id}"
        ))
        .await
        .unwrap();
        sql.batch_execute(&format!("DELETE FROM items WHERE id = {id}"))
            .await
            .unwrap();
        random_transaction(&sql, &mut rng, &mut next_id).await;
    }

    // Every position a client may hold before the compaction, with its rows there.
    let mut rows = Rows::new();
    let (handle, held) = walk(&proxy, None, "-1", &mut rows).await;
    assert_eq!(rows, table_rows(&sql).await);
    let log_before = std::fs::metadata(changes_log(&proxy, &handle))
        .unwrap()
        .len();
    let boundaries: Vec<Held> = held.iter().filter(|h| h.boundary).cloned().collect();
    assert!(boundaries.len() > 10, "many chunks: {}", boundaries.len());
    let random: Vec<Held> = held
        .iter()
        .filter(|h| !h.boundary)
        .collect::<Vec<_>>()
        .choose_multiple(&mut rng, 8)
        .map(|h| (*h).clone())
        .collect();

    // Compaction on; a live official client and live writes while it runs.
    proxy.set_flag("--compact-after", "8kB");
    proxy.restart().await;
    let mut live = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "raw": true}),
    );
    let writer = {
        let db_sql = db.connect().await;
        let mut rng = StdRng::seed_from_u64(rng.random());
        let mut next_id = next_id + 10_000;
        tokio::spawn(async move {
            for _ in 0..30 {
                random_transaction(&db_sql, &mut rng, &mut next_id).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    wait_compactions(&proxy, 1).await;
    writer.await.unwrap();
    let log_after = std::fs::metadata(changes_log(&proxy, &handle))
        .unwrap()
        .len();
    assert!(
        log_after < log_before / 2,
        "the log shrinks: {log_before} → {log_after} bytes"
    );
    history(&sql, &mut rng, &mut next_id, 10).await;
    let expected = table_rows(&sql).await;

    for (i, point) in held.iter().enumerate() {
        let rows = walk_resumed(&proxy, &handle, point).await;
        assert_eq!(rows, expected, "resuming #{i} from {}", point.offset);
    }
    for point in boundaries.iter().chain(&random) {
        let rows = electric_resume(&proxy, &handle, point).await;
        assert_eq!(rows, expected, "the Electric client from {}", point.offset);
    }
    // The new layout's boundaries too, and a new client from -1: it reads a clean history,
    // without the rows that were inserted and deleted in the compacted part.
    let mut fresh = Rows::new();
    let (_, after) = walk(&proxy, None, "-1", &mut fresh).await;
    assert_eq!(fresh, expected, "a new client");
    let short_lived = short_lived(&held);
    let mentioned: BTreeSet<&str> = after
        .iter()
        .filter_map(|h| Some(h.change.as_ref()?.1.as_str()))
        .collect();
    let still_sent: Vec<&&str> = short_lived
        .iter()
        .filter(|id| mentioned.contains(**id))
        .collect();
    eprintln!(
        "rows inserted and deleted before the compaction: {}; still sent to a new client: {}",
        short_lived.len(),
        still_sent.len()
    );
    assert!(
        short_lived.len() >= 5 && still_sent.len() * 4 <= short_lived.len(),
        "rows inserted and deleted before the compaction: {}, still sent to a new client \
         (their changes are in the kept tail): {still_sent:?}",
        short_lived.len()
    );
    for point in after.iter().filter(|h| h.boundary) {
        let rows = electric_resume(&proxy, &handle, point).await;
        assert_eq!(rows, expected, "the Electric client from {}", point.offset);
    }
    let shaped = |rows: &Map<String, Value>| {
        rows.values()
            .filter_map(|r| Some((r["id"].as_str()?.to_owned(), r.as_object()?.clone())))
            .collect::<Rows>()
    };
    live.wait_rows(WAIT, |rows| shaped(rows) == expected).await;
    let mut newcomer = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "raw": true}),
    );
    newcomer
        .wait_rows(WAIT, |rows| shaped(rows) == expected)
        .await;

    // The Rust client: one that synced before the compaction resumes, one starts now.
    let early = Client::open(sqlite_config(&proxy, &dir, "early.db"))
        .await
        .unwrap();
    sqlite_converges(&early, &sql, "the early SQLite client resumes").await;
    let late = Client::open(sqlite_config(&proxy, &dir, "late.db"))
        .await
        .unwrap();
    sqlite_converges(&late, &sql, "a new SQLite client").await;
    // Live changes after the compaction reach everyone.
    history(&sql, &mut rng, &mut next_id, 5).await;
    let expected = table_rows(&sql).await;
    sqlite_converges(&early, &sql, "live after compaction").await;
    live.wait_rows(WAIT, |rows| shaped(rows) == expected).await;

    let metrics = proxy
        .http()
        .get(format!("{}/metrics", proxy.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("shapesync_compactions_total"), "{metrics}");
    assert!(metrics.contains("shapesync_compaction_bytes_after_total"));
    let log = proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("shape log compacted"))
        .unwrap();
    for field in [
        "bytes_before",
        "bytes_after",
        "entries_before",
        "entries_after",
        "duration_ms",
    ] {
        assert!(line.contains(field), "{line}");
    }
}

#[tokio::test]
async fn a_proxy_killed_at_any_stage_of_a_compaction_restarts_serving_exactly_the_rows() {
    let mut rng = StdRng::seed_from_u64(seed("compaction crash"));
    let (db, sql, mut proxy) = setup("compaction_crash", &["--compact-after", "off"]).await;
    let mut next_id = 1000;
    let mut rows = Rows::new();
    let (handle, _) = walk(&proxy, None, "-1", &mut rows).await;
    for stage in ["built", "renamed", "installed"] {
        history(&sql, &mut rng, &mut next_id, 120).await;
        let mut rows = Rows::new();
        let (_, held) = walk(&proxy, Some(&handle), "-1", &mut rows).await;
        let held: Vec<Held> = held.choose_multiple(&mut rng, 6).cloned().collect();

        proxy.set_env(CRASH_HOOK, Some(stage));
        proxy.set_flag("--compact-after", "8kB");
        proxy.restart().await;
        let status = proxy.wait_exit(WAIT).await;
        assert!(!status.success(), "aborted at {stage}: {status}");
        assert!(
            proxy
                .log()
                .contains(&format!("aborting at compaction stage {stage}"))
        );

        // Restarted without the hook and without compaction: what the crash left.
        proxy.set_env(CRASH_HOOK, None);
        proxy.set_flag("--compact-after", "off");
        proxy.restart().await;
        let changes = changes_log(&proxy, &handle);
        assert!(
            !changes.with_extension("log.compact").exists(),
            "no unfinished file after {stage}"
        );
        history(&sql, &mut rng, &mut next_id, 3).await;
        let expected = table_rows(&sql).await;
        let mut rows = Rows::new();
        walk(&proxy, None, "-1", &mut rows).await;
        assert_eq!(rows, expected, "a new client after a crash at {stage}");
        for point in &held {
            let rows = walk_resumed(&proxy, &handle, point).await;
            assert_eq!(
                rows, expected,
                "from {} after a crash at {stage}",
                point.offset
            );
        }
        let point = held.first().unwrap();
        assert_eq!(electric_resume(&proxy, &handle, point).await, expected);
    }
    drop(db);
}

#[tokio::test]
async fn a_subquery_shape_is_not_compacted_and_serves_its_rows() {
    let mut rng = StdRng::seed_from_u64(seed("compaction subquery"));
    let (_db, sql, proxy) = setup("compaction_subquery", &["--compact-after", "8kB"]).await;
    sql.batch_execute(
        "CREATE TABLE picks (id int PRIMARY KEY);
         INSERT INTO picks SELECT generate_series(1, 40);",
    )
    .await
    .unwrap();
    // Every row of items, through a subquery (`n` is never negative).
    let subquery = "table=items&where=n%20%3E%3D%200%20OR%20id%20IN%20(SELECT%20id%20FROM%20picks)";
    let mut plain_rows = Rows::new();
    let (plain, _) = walk(&proxy, None, "-1", &mut plain_rows).await;
    let mut rows = Rows::new();
    let (handle, held, unclean) =
        walk_shape(&proxy, subquery, None, "-1", &mut rows, Reading::Clean).await;
    assert_eq!(unclean, Vec::<String>::new());
    let mut next_id = 1000;
    // Both logs are due more than once: the compactor passes over both shapes each time the
    // plain one is compacted.
    for _ in 0..20 {
        if compactions(&proxy) >= 2 {
            break;
        }
        history(&sql, &mut rng, &mut next_id, 60).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    wait_compactions(&proxy, 2).await;
    let log = proxy.log();
    let compacted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shape log compacted"))
        .collect();
    assert!(
        compacted.iter().all(|l| l.contains(&plain)),
        "only the plain shape ({plain}) is compacted, not the subquery shape ({handle}): {compacted:#?}"
    );
    let expected = table_rows(&sql).await;
    let mut resumed = held.last().unwrap().rows.clone();
    let offset = held.last().unwrap().offset.clone();
    walk_shape(
        &proxy,
        subquery,
        Some(&handle),
        &offset,
        &mut resumed,
        Reading::Clean,
    )
    .await;
    assert_eq!(resumed, expected, "the subquery shape, resumed");
    let mut fresh = Rows::new();
    let (_, _, unclean) =
        walk_shape(&proxy, subquery, None, "-1", &mut fresh, Reading::Clean).await;
    assert_eq!(unclean, Vec::<String>::new());
    assert_eq!(fresh, expected, "the subquery shape, from -1");
}

#[tokio::test]
async fn a_standby_follows_a_compacted_log() {
    let mut rng = StdRng::seed_from_u64(seed("compaction standby"));
    let (_db, sql, proxy) = setup("compaction_standby", &["--compact-after", "8kB"]).await;
    let mut next_id = 1000;
    let mut rows = Rows::new();
    let (handle, _) = walk(&proxy, None, "-1", &mut rows).await;
    let standby = proxy.start_beside(&[], false).await;
    let mut on_standby = Rows::new();
    let (_, held) = walk(&standby, Some(&handle), "-1", &mut on_standby).await;
    history(&sql, &mut rng, &mut next_id, 120).await;
    wait_compactions(&proxy, 1).await;
    history(&sql, &mut rng, &mut next_id, 5).await;
    let expected = table_rows(&sql).await;
    // The standby swaps files when it notices the compaction, maybe in the middle of a walk:
    // its walks are read as resumed ones.
    wait_for("the standby follows", WAIT, || async {
        let mut rows = Rows::new();
        walk_shape(
            &standby,
            QUERY,
            Some(&handle),
            "-1",
            &mut rows,
            Reading::Resumed,
        )
        .await;
        (rows == expected).then_some(())
    })
    .await;
    let rows = walk_resumed(&standby, &handle, held.last().unwrap()).await;
    assert_eq!(rows, expected, "resuming on the standby");
    assert!(
        !standby.log().contains("cannot follow"),
        "{}",
        standby.log()
    );
}
