//! 8 writers hammering 20 rows of a tombstoned table with random timestamps, column subsets
//! and deletes: every final column is the value of the newest (timestamp, client id) write of
//! it, a row is deleted exactly when its newest write is a delete, and the same mutations,
//! shuffled, give the same rows in a fresh table. Timestamps come from a small pool, so
//! writers often tie and the client id decides. Then the same mutations, shuffled again, with
//! plain SQL `UPDATE`s of some columns in the mix (through the example app's trigger), in a
//! third table, twice in different orders: per column the newest write wins, a mutation or
//! SQL. Seeded: `SHAPESYNC_SEED` replays a run.

use std::collections::{BTreeMap, HashSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::{at, harness_with, send, status, todo_id};

const WRITERS: u32 = 8;
const ROWS: u32 = 20;
const BATCHES_PER_WRITER: usize = 12;
const COLUMNS: [&str; 3] = ["title", "done", "position"];
/// Distinct timestamps (whole seconds) the writers draw from: fewer than the writes of all
/// writers together, so that different writers often share one.
const INSTANTS: i64 = 96;
/// Plain SQL `UPDATE`s in the mix of the last replays.
const SQL_WRITES: i64 = 30;
/// 2026-01-01T00:00:00Z, where `at(0)` is, in µs.
const BASE_MICROS: i64 = 1_767_225_600_000_000;

#[derive(Debug, Clone)]
struct Write {
    client: String,
    row: u32,
    micros: i64,
    /// Empty for a delete.
    values: BTreeMap<&'static str, String>,
}

impl Write {
    fn mutation(&self, id: String, table: &str) -> Value {
        let timestamp = timestamp(self.micros);
        let op = if self.is_delete() { "delete" } else { "upsert" };
        json!({"id": id, "table": table, "op": op, "key": {"id": todo_id(self.row)},
               "values": self.values, "timestamp": timestamp})
    }

    /// This write as a plain SQL `UPDATE` dated by its clock (a SQL writer's).
    async fn sql_update(&self, client: &tokio_postgres::Client, table: &str) {
        let sets: Vec<String> = self
            .values
            .iter()
            .map(|(column, value)| format!("{column} = '{value}'"))
            .collect();
        let sql = format!(
            "UPDATE {table} SET {}, updated_at = '{}' WHERE id = '{}'",
            sets.join(", "),
            timestamp(self.micros),
            todo_id(self.row)
        );
        client.batch_execute(&sql).await.expect(&sql);
    }

    fn is_delete(&self) -> bool {
        self.values.is_empty()
    }
}

/// RFC 3339 with microseconds of `micros` after `at(0)`.
fn timestamp(micros: i64) -> String {
    format!(
        "{}.{:06}Z",
        &at(micros / 1_000_000)[..19],
        micros % 1_000_000
    )
}

fn seed() -> u64 {
    let seed = std::env::var("SHAPESYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("determinism seed: {seed} (replay with SHAPESYNC_SEED={seed})");
    seed
}

fn random_writes(rng: &mut StdRng) -> Vec<Vec<Vec<Write>>> {
    (0..WRITERS)
        .map(|w| {
            // A writer never uses an instant twice: its equal clocks would be ordered by
            // arrival, which the shuffled replay does not keep.
            let mut used = HashSet::new();
            (0..BATCHES_PER_WRITER)
                .map(|_| {
                    (0..rng.random_range(1..=6))
                        .map(|_| {
                            let micros = loop {
                                let m = rng.random_range(1..=INSTANTS) * 1_000_000;
                                if used.insert(m) {
                                    break m;
                                }
                            };
                            let mut values = BTreeMap::new();
                            // About one write in six is a delete.
                            while values.is_empty() && !rng.random_bool(1.0 / 6.0) {
                                for column in COLUMNS {
                                    if rng.random_bool(0.5) {
                                        values.insert(column, random_value(rng, column));
                                    }
                                }
                            }
                            Write {
                                client: format!("writer-{w}"),
                                row: rng.random_range(1..=ROWS),
                                micros,
                                values,
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn random_value(rng: &mut StdRng, column: &str) -> String {
    match column {
        "title" => format!("title {}", rng.random_range(0..1000)),
        "done" => ["true", "false"][rng.random_range(0..2)].to_owned(),
        _ => rng.random_range(0..1000).to_string(),
    }
}

/// Per row and column, the value of the newest (timestamp, client) write.
fn expected(writes: &[Write]) -> BTreeMap<(u32, &'static str), String> {
    let mut newest: BTreeMap<(u32, &'static str), (i64, String, String)> = BTreeMap::new();
    for write in writes {
        for (column, value) in &write.values {
            let clock = (write.micros, write.client.clone());
            let entry = newest.entry((write.row, column)).or_insert((
                i64::MIN,
                String::new(),
                String::new(),
            ));
            if clock > (entry.0, entry.1.clone()) {
                *entry = (clock.0, clock.1, value.clone());
            }
        }
    }
    newest.into_iter().map(|(k, (_, _, v))| (k, v)).collect()
}

/// Per row, (`updated_at`, `deleted_at`) in µs since `at(0)`: the newest clock of any write
/// of the row, and the time of that write if it is a delete.
fn expected_times(writes: &[Write]) -> BTreeMap<u32, (i64, Option<i64>)> {
    let mut newest: BTreeMap<u32, &Write> = BTreeMap::new();
    for write in writes {
        let entry = newest.entry(write.row).or_insert(write);
        if (write.micros, &write.client) > (entry.micros, &entry.client) {
            *entry = write;
        }
    }
    newest
        .into_iter()
        .map(|(row, w)| (row, (w.micros, w.is_delete().then_some(w.micros))))
        .collect()
}

/// Pairs of writes from different writers to one row at one instant.
fn ties(writes: &[Write]) -> usize {
    let mut seen: BTreeMap<(u32, i64), usize> = BTreeMap::new();
    for write in writes.iter().filter(|w| w.client != "seed") {
        *seen.entry((write.row, write.micros)).or_default() += 1;
    }
    seen.values().map(|n| n * (n - 1) / 2).sum()
}

/// Per row of `table` (by id), (`updated_at`, `deleted_at`) in µs since `at(0)`.
async fn times(client: &tokio_postgres::Client, table: &str) -> Vec<(i64, Option<i64>)> {
    let sql = format!(
        "SELECT (extract(epoch FROM updated_at) * 1000000)::int8 - $1,
                (extract(epoch FROM deleted_at) * 1000000)::int8 - $1
         FROM {table} WHERE owner_id = 'sim' ORDER BY id"
    );
    client
        .query(&sql, &[&BASE_MICROS])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn rows(client: &tokio_postgres::Client, table: &str) -> Vec<Vec<Option<String>>> {
    let sql = format!(
        "SELECT ARRAY[id::text, title, done::text, position::text, updated_at::text, deleted_at::text] \
         FROM {table} WHERE owner_id = 'sim' ORDER BY id"
    );
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn concurrent_writers_converge_to_the_newest_write_of_every_column_in_any_order() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let h = harness_with("mut_determinism", |config| {
        config.writes.writable = proxy::mutations::config::Writable::All;
        config.tombstones.push("todos_replay".parse().unwrap());
        config.tombstones.push("todos_sql_a".parse().unwrap());
        config.tombstones.push("todos_sql_b".parse().unwrap());
    })
    .await;
    h.client
        .batch_execute(
            "CREATE TABLE todos_replay (LIKE todos INCLUDING ALL);
             CREATE TABLE todos_sql_a (LIKE todos INCLUDING ALL);
             CREATE TABLE todos_sql_b (LIKE todos INCLUDING ALL);
             CREATE TRIGGER todos_sql_a_touch BEFORE UPDATE ON todos_sql_a
                 FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
             CREATE TRIGGER todos_sql_b_touch BEFORE UPDATE ON todos_sql_b
                 FOR EACH ROW EXECUTE FUNCTION touch_updated_at();",
        )
        .await
        .unwrap();
    // Every row exists first, written long before the random writes.
    let seed_rows: Vec<Write> = (1..=ROWS)
        .map(|row| Write {
            client: "seed".into(),
            row,
            micros: 0,
            values: [
                ("title", "seed".to_owned()),
                ("done", "false".into()),
                ("position", "0".into()),
            ]
            .into(),
        })
        .collect();
    let insert_seed = |table: &'static str| {
        seed_rows
            .iter()
            .map(|w| {
                // Ids are per client: the replay's seed needs its own.
                let mut m = w.mutation(format!("seed-{table}-{}", w.row), table);
                m["values"]["owner_id"] = json!("sim");
                m
            })
            .collect::<Vec<_>>()
    };
    send(&h.router, "seed", false, insert_seed("todos")).await;

    let writers = random_writes(&mut rng);
    let mut tasks = Vec::new();
    for (w, batches) in writers.clone().into_iter().enumerate() {
        let router = h.router.clone();
        tasks.push(tokio::spawn(async move {
            for (b, batch) in batches.into_iter().enumerate() {
                let client = batch[0].client.clone();
                let mutations = batch
                    .iter()
                    .enumerate()
                    .map(|(i, write)| write.mutation(format!("{w}-{b}-{i}"), "todos"))
                    .collect();
                let response = send(&router, &client, false, mutations).await;
                for result in response["results"].as_array().into_iter().flatten() {
                    assert!(matches!(status(result), "applied" | "conflict"), "{result}");
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let all: Vec<Write> = seed_rows
        .iter()
        .cloned()
        .chain(writers.into_iter().flatten().flatten())
        .collect();
    assert!(
        ties(&all) > 0,
        "no two writers wrote a row at the same instant (seed {seed})"
    );
    assert!(all.iter().any(Write::is_delete), "no deletes (seed {seed})");
    let expected_times = expected_times(&all);
    let got_times = times(&h.client, "todos").await;
    for (n, got) in (1..=ROWS).zip(&got_times) {
        assert_eq!(
            *got, expected_times[&n],
            "row {n} (updated_at, deleted_at) (seed {seed})"
        );
    }
    let expected = expected(&all);
    let actual = rows(&h.client, "todos").await;
    assert_eq!(actual.len(), ROWS as usize);
    for (n, row) in (1..=ROWS).zip(&actual) {
        for (c, column) in COLUMNS.iter().enumerate() {
            let want = &expected[&(n, *column)];
            let got = row[c + 1].clone().unwrap_or_default();
            let want = if *column == "done" {
                want[..1].to_owned()
            } else {
                want.clone()
            };
            let got = if *column == "done" {
                got[..1].to_owned()
            } else {
                got
            };
            assert_eq!(got, want, "row {n} column {column} (seed {seed})");
        }
    }

    // The same writes, shuffled, one at a time, into a fresh table.
    let seeded = send(&h.router, "seed", false, insert_seed("todos_replay")).await;
    assert_eq!(status(&seeded["results"][0]), "applied", "{seeded}");
    let mut replay: Vec<Write> = all.into_iter().filter(|w| w.client != "seed").collect();
    replay.shuffle(&mut rng);
    for (i, write) in replay.iter().enumerate() {
        send(
            &h.router,
            &write.client,
            false,
            vec![write.mutation(format!("replay-{i}"), "todos_replay")],
        )
        .await;
    }
    assert_eq!(rows(&h.client, "todos_replay").await, actual, "seed {seed}");

    // With plain SQL writers: each happens at its time (`updated_at` set to it), so every
    // mutation with a later clock arrives after it; the others anywhere.
    let sql = random_sql_writes(&mut rng);
    let mut with_sql = replay.clone();
    with_sql.extend(sql.iter().cloned());
    let want = self::expected(&with_sql);
    let want_times = expected_times_with_sql(&with_sql);
    let mut runs = Vec::new();
    for table in ["todos_sql_a", "todos_sql_b"] {
        let seeded = send(&h.router, "seed", false, insert_seed(table)).await;
        assert_eq!(status(&seeded["results"][0]), "applied", "{seeded}");
        for (i, event) in interleave(&replay, &sql, &mut rng).into_iter().enumerate() {
            if event.client.is_empty() {
                event.sql_update(&h.client, table).await;
            } else {
                send(
                    &h.router,
                    &event.client,
                    false,
                    vec![event.mutation(format!("{table}-{i}"), table)],
                )
                .await;
            }
        }
        let got = rows(&h.client, table).await;
        for (n, row) in (1..=ROWS).zip(&got) {
            for (c, column) in COLUMNS.iter().enumerate() {
                let want = &want[&(n, *column)];
                let got = row[c + 1].clone().unwrap_or_default();
                let (got, want) = if *column == "done" {
                    (got[..1].to_owned(), want[..1].to_owned())
                } else {
                    (got, want.clone())
                };
                assert_eq!(got, want, "{table} row {n} column {column} (seed {seed})");
            }
        }
        let got_times = times(&h.client, table).await;
        for (n, got) in (1..=ROWS).zip(&got_times) {
            assert_eq!(
                *got, want_times[&n],
                "{table} row {n} (updated_at, deleted_at) (seed {seed})"
            );
        }
        runs.push(got);
    }
    assert_eq!(runs[0], runs[1], "two orders, one result (seed {seed})");
}

/// Plain SQL writes: distinct values (a write that sets a value already there is no write),
/// at half seconds (never tied with a mutation), of the title and/or position. A row never
/// gets two at one instant: the second would set `updated_at` to the value it already has,
/// which the trigger cannot tell from not setting it (it sees values, not the statement), so
/// it dates that write `now()`, newer than every clock here; and two writes with one clock
/// would be ordered by arrival, which the model does not know.
fn random_sql_writes(rng: &mut StdRng) -> Vec<Write> {
    let mut used = HashSet::new();
    (0..SQL_WRITES)
        .map(|k| {
            let (row, micros) = loop {
                let row = rng.random_range(1..=ROWS);
                let micros = rng.random_range(1..=INSTANTS) * 1_000_000 - 500_000;
                if used.insert((row, micros)) {
                    break (row, micros);
                }
            };
            let mut values = BTreeMap::new();
            while values.is_empty() {
                if rng.random_bool(0.5) {
                    values.insert("title", format!("sql {k}"));
                }
                if rng.random_bool(0.5) {
                    values.insert("position", (2000 + k).to_string());
                }
            }
            Write {
                client: String::new(),
                row,
                micros,
                values,
            }
        })
        .collect()
}

#[test]
fn plain_sql_writes_never_share_an_instant_on_one_row() {
    for seed in 0..1000 {
        let sql = random_sql_writes(&mut StdRng::seed_from_u64(seed));
        let mut seen = HashSet::new();
        for write in &sql {
            assert!(
                seen.insert((write.row, write.micros)),
                "row {} gets two plain SQL writes at {} µs (seed {seed})",
                write.row,
                write.micros
            );
        }
    }
}

/// A random order of `mutations` and `sql` (plain SQL writes, in time order) that could happen:
/// a mutation arrives after every plain SQL write older than it.
fn interleave(mutations: &[Write], sql: &[Write], rng: &mut StdRng) -> Vec<Write> {
    let mut sql: Vec<Write> = sql.to_vec();
    sql.sort_by_key(|w| w.micros);
    let mut buckets: Vec<Vec<Write>> = vec![Vec::new(); sql.len() + 1];
    for write in mutations {
        let earliest = sql.iter().filter(|s| s.micros < write.micros).count();
        buckets[rng.random_range(earliest..=sql.len())].push(write.clone());
    }
    let mut order = Vec::new();
    for (b, mut bucket) in buckets.into_iter().enumerate() {
        if b > 0 {
            order.push(sql[b - 1].clone());
        }
        bucket.shuffle(rng);
        order.extend(bucket);
    }
    order
}

/// Like [`expected_times`], where plain SQL writes move `updated_at` but never existence.
fn expected_times_with_sql(writes: &[Write]) -> BTreeMap<u32, (i64, Option<i64>)> {
    let mut out = BTreeMap::new();
    for row in 1..=ROWS {
        let of_row = || writes.iter().filter(move |w| w.row == row);
        let newest = |w: &&Write| (w.micros, w.client.clone());
        let updated = of_row().max_by_key(newest).map_or(0, |w| w.micros);
        let existence = of_row().filter(|w| !w.client.is_empty()).max_by_key(newest);
        let deleted = existence.filter(|w| w.is_delete()).map(|w| w.micros);
        out.insert(row, (updated, deleted));
    }
    out
}
