//! 8 writers hammering 20 rows of a tombstoned table with random timestamps, column subsets
//! and deletes: every final column is the value of the newest (timestamp, client id) write of
//! it, a row is deleted exactly when its newest write is a delete, and the same mutations,
//! shuffled, give the same rows in a fresh table. Timestamps come from a small pool, so
//! writers often tie and the client id decides. Seeded: `SHAPESYNC_SEED` replays a run.

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
        let timestamp = format!(
            "{}.{:06}Z",
            &at(self.micros / 1_000_000)[..19],
            self.micros % 1_000_000
        );
        let op = if self.is_delete() { "delete" } else { "upsert" };
        json!({"id": id, "table": table, "op": op, "key": {"id": todo_id(self.row)},
               "values": self.values, "timestamp": timestamp})
    }

    fn is_delete(&self) -> bool {
        self.values.is_empty()
    }
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
    })
    .await;
    h.client
        .batch_execute("CREATE TABLE todos_replay (LIKE todos INCLUDING ALL)")
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
}
