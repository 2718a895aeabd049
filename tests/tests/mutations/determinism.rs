//! 8 writers hammering 20 rows with random timestamps and column subsets: every final column
//! is the value of the newest (timestamp, client id) write of it, and the same mutations,
//! shuffled, give the same rows in a fresh table. Seeded: `SHAPESYNC_SEED` replays a run.

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

#[derive(Debug, Clone)]
struct Write {
    client: String,
    row: u32,
    micros: i64,
    values: BTreeMap<&'static str, String>,
}

impl Write {
    fn mutation(&self, id: String, table: &str) -> Value {
        let timestamp = format!(
            "{}.{:06}Z",
            &at(self.micros / 1_000_000)[..19],
            self.micros % 1_000_000
        );
        json!({"id": id, "table": table, "op": "upsert", "key": {"id": todo_id(self.row)},
               "values": self.values, "timestamp": timestamp})
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
    let mut used = HashSet::new();
    (0..WRITERS)
        .map(|w| {
            (0..BATCHES_PER_WRITER)
                .map(|_| {
                    (0..rng.random_range(1..=6))
                        .map(|_| {
                            let micros = loop {
                                let m = rng.random_range(1_000_000..86_400_000_000_i64);
                                if used.insert(m) {
                                    break m;
                                }
                            };
                            let mut values = BTreeMap::new();
                            while values.is_empty() {
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
