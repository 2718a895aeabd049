//! The write load of the convergence test: concurrent writers on Postgres, each with its own
//! seeded random generator and its own range of keys (so writers never wait on each other's
//! row locks, while their transactions still interleave in the WAL), and one bulk writer with a
//! 100k-row transaction.
//!
//! Writers survive Postgres restarts: any error drops the connection, and the writer reconnects
//! and re-reads which of its rows exist (a commit cut short by a restart may or may not have
//! happened; the test only trusts what Postgres holds at the end).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_postgres::Client;

pub const SCHEMA: &str = "
    CREATE TABLE items (id int PRIMARY KEY, owner text NOT NULL, n int NOT NULL, title text, body text);
    CREATE TABLE notes (id int PRIMARY KEY, owner text, n int NOT NULL, title text, body text,
                        deleted_at timestamptz);
    CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));";

const OWNERS: &[&str] = &["ann", "bob", "cid", "dan"];
const TITLES: &[&str] = &[
    "alpha",
    "apple",
    "beta",
    "a/b",
    "quo\"te",
    "it's",
    "ünïcödé ✓",
    "",
    "a%",
    "zeta",
];
/// Keys of writer `w` are `w * KEY_SPACE + k`.
const KEY_SPACE: i32 = 1_000_000;
/// Keys of the bulk rows start above this.
pub const BULK_BASE: i32 = 900_000_000;
/// Items, notes and pairs each writer starts with.
const INITIAL_ROWS: i32 = 40;

/// What a writer did, for the test's summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub committed: usize,
    pub rolled_back: usize,
    pub errors: usize,
}

/// Creates the tables and every writer's initial rows (some with TOASTed bodies).
pub async fn create_schema(client: &Client, writers: usize, rng: &mut StdRng) {
    client.batch_execute(SCHEMA).await.expect("create schema");
    let mut sql = String::new();
    for w in 0..writers as i32 {
        for k in 1..=INITIAL_ROWS {
            let id = w * KEY_SPACE + k;
            let owner = OWNERS.choose(rng).unwrap();
            let n = rng.random_range(0..100);
            let title = quote(TITLES.choose(rng).unwrap());
            let body = body_value(rng);
            sql.push_str(&format!(
                "INSERT INTO items VALUES ({id}, '{owner}', {n}, {title}, {body});
                 INSERT INTO notes VALUES ({id}, '{owner}', {n}, {title}, {body}, NULL);
                 INSERT INTO pairs VALUES ({w}, {}, {});",
                quote(&pair_key(k)),
                quote(&format!("v{n}"))
            ));
        }
    }
    client.batch_execute(&sql).await.expect("initial rows");
}

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Text keys with the characters keys must escape.
fn pair_key(k: i32) -> String {
    match k % 3 {
        0 => format!("k{k}"),
        1 => format!("x/y{k}"),
        _ => format!("q\"{k}"),
    }
}

/// NULL, a short text, or (a third of the time) 3,000 random letters: incompressible, so
/// Postgres stores it out of line (TOAST).
fn body_value(rng: &mut StdRng) -> String {
    match rng.random_range(0..3) {
        0 => "NULL".into(),
        1 => quote(&format!("short {}", rng.random_range(0..1000))),
        _ => quote(&big_text(rng)),
    }
}

fn big_text(rng: &mut StdRng) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..3000)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect()
}

/// Connects, retrying while Postgres is down or starting.
pub async fn connect_retrying(url: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match proxy::postgres::connect(url).await {
            Ok(client) => return client,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot reconnect to Postgres: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One writer: random transactions on its own keys until `until`.
pub struct Writer {
    w: i32,
    url: String,
    rng: StdRng,
    next_key: i32,
    items: Vec<i32>,
    notes: Vec<i32>,
    pairs: Vec<String>,
    pub stats: WriterStats,
}

impl Writer {
    pub fn new(w: usize, url: &str, seed: u64) -> Self {
        Self {
            w: w as i32,
            url: url.to_owned(),
            rng: StdRng::seed_from_u64(seed),
            next_key: INITIAL_ROWS + 1,
            items: Vec::new(),
            notes: Vec::new(),
            pairs: Vec::new(),
            stats: WriterStats::default(),
        }
    }

    pub async fn run(mut self, until: Instant) -> WriterStats {
        let mut client = connect_retrying(&self.url).await;
        self.resync(&client).await;
        while Instant::now() < until {
            let statements = self.transaction();
            let rollback = self.rng.random_bool(0.1);
            let clean = match execute(&mut client, &statements, rollback).await {
                Ok(()) if rollback => {
                    self.stats.rolled_back += 1;
                    false
                }
                Ok(()) => {
                    self.stats.committed += 1;
                    true
                }
                Err(_) => {
                    self.stats.errors += 1;
                    client = connect_retrying(&self.url).await;
                    false
                }
            };
            // The local key lists guessed the effects; after anything but a clean commit,
            // ask Postgres.
            if !clean {
                self.resync(&client).await;
            }
            let pause = self.rng.random_range(0..6);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.stats
    }

    async fn resync(&mut self, client: &Client) {
        let (lo, hi) = (self.w * KEY_SPACE, (self.w + 1) * KEY_SPACE);
        let ids = |rows: Vec<tokio_postgres::Row>| -> Vec<i32> {
            rows.iter().map(|r| r.get::<_, i32>(0)).collect()
        };
        let (Ok(items), Ok(notes), Ok(pairs)) = (
            client
                .query(
                    "SELECT id FROM items WHERE id >= $1 AND id < $2 ORDER BY id",
                    &[&lo, &hi],
                )
                .await,
            client
                .query(
                    "SELECT id FROM notes WHERE id >= $1 AND id < $2 ORDER BY id",
                    &[&lo, &hi],
                )
                .await,
            client
                .query("SELECT b FROM pairs WHERE a = $1 ORDER BY b", &[&self.w])
                .await,
        ) else {
            return;
        };
        self.items = ids(items);
        self.notes = ids(notes);
        self.pairs = pairs.iter().map(|r| r.get(0)).collect();
    }

    fn fresh_key(&mut self) -> i32 {
        self.next_key += 1;
        self.w * KEY_SPACE + self.next_key
    }

    /// The statements of one transaction: usually 1–4, sometimes 40.
    fn transaction(&mut self) -> Vec<String> {
        let count = if self.rng.random_bool(0.03) {
            40
        } else {
            self.rng.random_range(1..=4)
        };
        (0..count).map(|_| self.statement()).collect()
    }

    fn statement(&mut self) -> String {
        match self.rng.random_range(0..100) {
            0..50 => self.item_statement(),
            50..80 => self.note_statement(),
            _ => self.pair_statement(),
        }
    }

    fn item_statement(&mut self) -> String {
        let rng = &mut self.rng;
        let existing = self.items.choose(rng).copied();
        let choice = if existing.is_none() {
            0
        } else {
            rng.random_range(0..100)
        };
        let owner = OWNERS.choose(rng).unwrap();
        let n: i32 = rng.random_range(0..100);
        let title = quote(TITLES.choose(rng).unwrap());
        match (choice, existing) {
            (0..20, _) | (_, None) => {
                let body = body_value(&mut self.rng);
                let id = self.fresh_key();
                self.items.push(id);
                format!("INSERT INTO items VALUES ({id}, '{owner}', {n}, {title}, {body})")
            }
            (20..40, Some(id)) => format!("UPDATE items SET owner = '{owner}' WHERE id = {id}"),
            (40..52, Some(id)) => format!("UPDATE items SET n = {n} WHERE id = {id}"),
            (52..60, Some(id)) => {
                format!("UPDATE items SET title = {title}, n = {n} WHERE id = {id}")
            }
            (60..66, Some(id)) => {
                let body = body_value(&mut self.rng);
                format!("UPDATE items SET body = {body} WHERE id = {id}")
            }
            (66..70, Some(id)) => format!("UPDATE items SET n = n WHERE id = {id}"),
            (70..76, Some(id)) => {
                let lo = self.w * KEY_SPACE;
                format!(
                    "UPDATE items SET n = (n + 7) % 100 WHERE id >= {id} AND id < {id} + 15 AND id >= {lo}"
                )
            }
            (76..88, Some(id)) => {
                self.items.retain(|&i| i != id);
                format!("DELETE FROM items WHERE id = {id}")
            }
            (_, Some(id)) => {
                let new_id = self.fresh_key();
                self.items.retain(|&i| i != id);
                self.items.push(new_id);
                format!("UPDATE items SET id = {new_id}, owner = '{owner}' WHERE id = {id}")
            }
        }
    }

    fn note_statement(&mut self) -> String {
        let rng = &mut self.rng;
        let existing = self.notes.choose(rng).copied();
        let choice = if existing.is_none() {
            0
        } else {
            rng.random_range(0..100)
        };
        let owner = OWNERS.choose(rng).unwrap();
        let n: i32 = rng.random_range(0..100);
        let title = quote(TITLES.choose(rng).unwrap());
        match (choice, existing) {
            (0..20, _) | (_, None) => {
                let body = body_value(&mut self.rng);
                let id = self.fresh_key();
                self.notes.push(id);
                format!("INSERT INTO notes VALUES ({id}, '{owner}', {n}, {title}, {body}, NULL)")
            }
            (20..40, Some(id)) => {
                format!("UPDATE notes SET owner = '{owner}', n = {n} WHERE id = {id}")
            }
            (40..50, Some(id)) => {
                let body = body_value(&mut self.rng);
                format!("UPDATE notes SET body = {body}, title = {title} WHERE id = {id}")
            }
            // Tombstone: the row leaves every shape.
            (50..68, Some(id)) => format!(
                "UPDATE notes SET deleted_at = '2024-01-01 00:00:00+00', n = {n} WHERE id = {id}"
            ),
            // Clearing it brings the row back (as an insert).
            (68..84, Some(id)) => format!(
                "UPDATE notes SET deleted_at = NULL, title = {title} WHERE id = {id} AND deleted_at IS NOT NULL"
            ),
            (84..92, Some(id)) => {
                self.notes.retain(|&i| i != id);
                format!("DELETE FROM notes WHERE id = {id}")
            }
            (_, Some(id)) => {
                let new_id = self.fresh_key();
                self.notes.retain(|&i| i != id);
                self.notes.push(new_id);
                format!("UPDATE notes SET id = {new_id} WHERE id = {id}")
            }
        }
    }

    fn pair_statement(&mut self) -> String {
        let rng = &mut self.rng;
        let existing = self.pairs.choose(rng).cloned();
        let choice = if existing.is_none() {
            0
        } else {
            rng.random_range(0..100)
        };
        let v = quote(&format!("v{}", rng.random_range(0..30)));
        let a = self.w;
        match (choice, existing) {
            (0..30, _) | (_, None) => {
                let k = self.fresh_key() % KEY_SPACE;
                let b = pair_key(k);
                self.pairs.push(b.clone());
                format!("INSERT INTO pairs VALUES ({a}, {}, {v})", quote(&b))
            }
            (30..65, Some(b)) => {
                format!(
                    "UPDATE pairs SET v = {v} WHERE a = {a} AND b = {}",
                    quote(&b)
                )
            }
            (65..80, Some(b)) => {
                self.pairs.retain(|x| *x != b);
                format!("DELETE FROM pairs WHERE a = {a} AND b = {}", quote(&b))
            }
            (_, Some(b)) => {
                let k = self.fresh_key() % KEY_SPACE;
                let new_b = pair_key(k);
                self.pairs.retain(|x| *x != b);
                self.pairs.push(new_b.clone());
                format!(
                    "UPDATE pairs SET b = {}, v = {v} WHERE a = {a} AND b = {}",
                    quote(&new_b),
                    quote(&b)
                )
            }
        }
    }
}

async fn execute(
    client: &mut Client,
    statements: &[String],
    rollback: bool,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    for statement in statements {
        tx.batch_execute(statement).await?;
    }
    if rollback {
        tx.rollback().await
    } else {
        tx.commit().await
    }
}

/// The bulk writer: one transaction inserting `rows` rows (a tenth of them titled `apple …`,
/// so the `LIKE 'a%'` shape gets them too), then one updating and deleting a part of them.
/// Each step is retried until Postgres has it (the insert is idempotent).
pub async fn bulk(url: String, rows: i32, insert_at: Instant, change_at: Instant) {
    tokio::time::sleep_until(insert_at).await;
    let insert = format!(
        "INSERT INTO items
         SELECT {BULK_BASE} + g, 'bulk', 1000 + g % 7,
                CASE WHEN g % 10 = 0 THEN 'apple ' || g ELSE 'bulk ' || g END, NULL
         FROM generate_series(1, {rows}) g ON CONFLICT DO NOTHING"
    );
    retry(&url, &[insert]).await;
    tokio::time::sleep_until(change_at).await;
    let change = [
        format!(
            "UPDATE items SET n = n + 1, title = 'apple' WHERE id > {BULK_BASE} AND id % 97 = 0"
        ),
        format!("DELETE FROM items WHERE id > {BULK_BASE} AND id % 5 = 0"),
    ];
    retry(&url, &change).await;
}

async fn retry(url: &str, statements: &[String]) {
    loop {
        let mut client = connect_retrying(url).await;
        if execute(&mut client, statements, false).await.is_ok() {
            return;
        }
        // A restart may have cut the commit short; the statements are safe to repeat.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
