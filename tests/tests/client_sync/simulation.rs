//! The seeded simulation (proxy/ARCHITECTURE.md, "Conventions"): three devices with their
//! own SQLite files, random
//! writes on Postgres and through the devices, random disconnects, device restarts and two
//! proxy restarts at steps drawn from the seed (one kill -9, one SIGTERM); one device stays
//! offline the whole run and comes back with at least [`MIN_QUEUED_OFFLINE`] queued writes.
//! Plain SQL writes the devices' rows too, with `updated_at` taken from the devices' clock, so
//! last-write-wins between SQL and device writes is exercised. At the end every mirror equals
//! the shape evaluated on Postgres, every outbox, overlay and answered-write list is empty,
//! every mutation was applied exactly once, and the rows the devices wrote hold the
//! last-write-wins winners the model says.
//!
//! `SHAPESYNC_SEED=<n>` replays a run's schedule (the seed is printed at the start and the
//! end; rows a device picks come from its mirror, so timing can still vary a replay);
//! `SHAPESYNC_SIM_STEPS` changes its length.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use client_sqlite::{Client, ShapeSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::{CLIENT_TODOS, Env, PG_TODOS, object, rows, uuid};

/// Writes the offline device queues before it comes back (it usually queues more).
const MIN_QUEUED_OFFLINE: usize = 100;

/// A register: the clock (µs) of the write that set it, and the value.
type Register = (i64, Value);

/// Last-write-wins model of one row written by devices (proxy/ARCHITECTURE.md, "The write
/// path").
#[derive(Debug, Default)]
struct RowModel {
    live: Option<(i64, bool)>,
    columns: BTreeMap<&'static str, Register>,
}

impl RowModel {
    fn write(&mut self, at: i64, live: bool, values: &[(&'static str, Value)]) {
        if self.live.is_none_or(|(t, _)| at >= t) {
            self.live = Some((at, live));
        }
        self.write_columns(at, values);
    }

    /// A write of some columns that leaves existence alone (a plain SQL UPDATE that does not
    /// change the tombstone).
    fn write_columns(&mut self, at: i64, values: &[(&'static str, Value)]) {
        for (column, value) in values {
            let register = self
                .columns
                .entry(column)
                .or_insert((i64::MIN, Value::Null));
            if at >= register.0 {
                *register = (at, value.clone());
            }
        }
    }
}

struct Device {
    name: &'static str,
    client: Option<Client>,
    online: bool,
    /// Offline from the start until the end of the run.
    away: bool,
    writes: usize,
}

struct Sim {
    rng: StdRng,
    env: Env,
    clock: Arc<AtomicI64>,
    devices: Vec<Device>,
    model: BTreeMap<String, RowModel>,
    next_row: u32,
    server_rows: Vec<u32>,
    shape: ShapeSpec,
    proxy_restarts: usize,
    /// Plain SQL writes that hit a device-written row.
    sql_device_writes: usize,
}

pub async fn run(name: &str) {
    let seed = std::env::var("SHAPESYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let steps: usize = std::env::var("SHAPESYNC_SIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    eprintln!("client simulation: SHAPESYNC_SEED={seed} ({steps} steps)");
    let mut sim = Sim::new(name, seed).await;
    sim.seed_rows().await;
    for i in 0..sim.devices.len() {
        sim.open_device(i).await;
    }
    for i in 0..sim.devices.len() {
        let client = sim.devices[i].client.as_ref().expect("open");
        client
            .wait_synced(crate::support::WAIT)
            .await
            .expect("initial sync");
        if sim.devices[i].away {
            client.set_online(false);
            sim.devices[i].online = false;
        }
    }
    // Two proxy restarts per run, at steps drawn from the seed: one crash (kill -9), one clean
    // stop.
    let crash_at = sim.rng.random_range(0..steps.max(2));
    let stop_at = loop {
        let step = sim.rng.random_range(0..steps.max(2));
        if step != crash_at {
            break step;
        }
    };
    for step in 0..steps {
        if step == crash_at || step == stop_at {
            sim.restart_proxy(step == crash_at).await;
        }
        sim.step().await;
    }
    while sim.devices[2].writes < MIN_QUEUED_OFFLINE {
        sim.device_write(2).await;
    }
    let queued_offline = sim.queued(2).await;
    assert_eq!(
        queued_offline, sim.devices[2].writes,
        "every write of the offline device is queued"
    );
    assert!(queued_offline >= MIN_QUEUED_OFFLINE, "{queued_offline}");
    sim.converge().await;
    let writes: Vec<String> = sim
        .devices
        .iter()
        .map(|d| format!("{}: {}", d.name, d.writes))
        .collect();
    eprintln!(
        "client simulation: SHAPESYNC_SEED={seed} converged; writes {writes:?} ({queued_offline} queued offline by c); {} plain SQL writes of device rows; proxy restarts at steps {crash_at} (kill -9) and {stop_at}",
        sim.sql_device_writes
    );
    assert_eq!(sim.proxy_restarts, 2.min(steps));
}

impl Sim {
    async fn new(name: &str, seed: u64) -> Self {
        let env = crate::support::env(name).await;
        let start = chrono_now_micros() - 20_000_000;
        let devices = ["a", "b", "c"]
            .into_iter()
            .map(|name| Device {
                name,
                client: None,
                online: true,
                away: name == "c",
                writes: 0,
            })
            .collect();
        Self {
            rng: StdRng::seed_from_u64(seed),
            env,
            clock: Arc::new(AtomicI64::new(start)),
            devices,
            model: BTreeMap::new(),
            next_row: 0,
            server_rows: Vec::new(),
            shape: ShapeSpec::table("todos").with_where("owner_id <> 'hidden'"),
            proxy_restarts: 0,
            sql_device_writes: 0,
        }
    }

    /// Rows for devices to write (owner `c`, written at a clock older than every device
    /// write) and rows only plain SQL touches (owner `srv`).
    async fn seed_rows(&mut self) {
        let at = self.clock.load(Ordering::SeqCst) - 10_000_000;
        let stamp = micros_to_text(at);
        let mut sql = String::from("BEGIN;");
        for _ in 0..20 {
            let n = self.next_row();
            sql.push_str(&format!(
                "INSERT INTO todos (id, owner_id, title, done, position, updated_at)
                 VALUES ('{}', 'c', 'seed {n}', false, {n}, {stamp});",
                uuid(n)
            ));
            self.model.entry(uuid(n)).or_default().write(
                at,
                true,
                &[
                    ("title", json!(format!("seed {n}"))),
                    ("done", json!(false)),
                    ("position", json!(n)),
                ],
            );
        }
        for _ in 0..20 {
            let n = self.next_row();
            self.server_rows.push(n);
            sql.push_str(&format!(
                "INSERT INTO todos (id, owner_id, title, position) VALUES ('{}', 'srv', 'server {n}', {n});",
                uuid(n)
            ));
        }
        sql.push_str("COMMIT;");
        self.env.sql(&sql).await;
    }

    fn next_row(&mut self) -> u32 {
        self.next_row += 1;
        self.next_row
    }

    async fn open_device(&mut self, i: usize) {
        let device = &self.devices[i];
        let shapes = [self.shape.clone(), ShapeSpec::table("notes")];
        let mut config = self.env.config(&format!("{}.db", device.name), &shapes);
        config.client_id = Some(format!("sim-{}", device.name));
        config.online = device.online;
        config.sync.sse = i != 1; // one device long-polls
        let clock = self.clock.clone();
        config.clock = Some(Arc::new(move || device_tick(&clock)));
        let client = Client::open(config).await.expect("open a device");
        self.devices[i].client = Some(client);
    }

    async fn restart_proxy(&mut self, crash: bool) {
        let pause = self.rng.random_range(0..300);
        if crash {
            self.env.proxy.kill9().await;
        }
        tokio::time::sleep(Duration::from_millis(pause)).await;
        self.env.proxy.restart().await;
        self.proxy_restarts += 1;
    }

    async fn step(&mut self) {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..40 => {
                let i = self.pick_device();
                let burst = if self.devices[i].away {
                    self.rng.random_range(1..12)
                } else {
                    1
                };
                for _ in 0..burst {
                    self.device_write(i).await;
                }
            }
            40..54 => self.sql_write().await,
            54..62 => self.sql_write_device_row().await,
            62..74 => {
                let i = self.rng.random_range(0..2);
                let online = !self.devices[i].online;
                self.devices[i].online = online;
                if let Some(c) = &self.devices[i].client {
                    c.set_online(online);
                }
            }
            74..78 => {
                let i = self.rng.random_range(0..self.devices.len());
                if let Some(client) = self.devices[i].client.take() {
                    client.close().await;
                }
                self.open_device(i).await;
            }
            _ => {
                let ms = self.rng.random_range(0..40);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }

    fn pick_device(&mut self) -> usize {
        // The away device writes as much as both others.
        if self.rng.random_bool(0.5) {
            2
        } else {
            self.rng.random_range(0..2)
        }
    }

    async fn device_write(&mut self, i: usize) {
        let client = self.devices[i].client.take().expect("open");
        self.write_through(&client).await;
        self.devices[i].client = Some(client);
        self.devices[i].writes += 1;
    }

    async fn write_through(&mut self, client: &Client) {
        let visible: Vec<String> = rows(
            client,
            "SELECT id FROM todos WHERE owner_id = 'c' ORDER BY id",
        )
        .await
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
        let kind = self.rng.random_range(0..10);
        let at = self.clock.load(Ordering::SeqCst) + 1_000;
        let write = if kind < 2 || visible.is_empty() {
            let n = self.next_row();
            let values = vec![
                ("title", json!(format!("new {n}"))),
                ("done", json!(false)),
                ("position", json!(n)),
            ];
            self.model
                .entry(uuid(n))
                .or_default()
                .write(at, true, &values);
            client.insert("todos", object(json!({"id": uuid(n), "owner_id": "c", "title": format!("new {n}"), "done": false, "position": n}))).await
        } else {
            let id = visible[self.rng.random_range(0..visible.len())].clone();
            let key = object(json!({"id": id}));
            if kind == 2 {
                self.model
                    .entry(id.clone())
                    .or_default()
                    .write(at, false, &[]);
                client.delete("todos", key).await
            } else {
                let mut values = Vec::new();
                if self.rng.random_bool(0.6) {
                    values.push((
                        "title",
                        json!(format!("t{}", self.rng.random_range(0..1000))),
                    ));
                }
                if self.rng.random_bool(0.5) {
                    values.push(("done", json!(self.rng.random_bool(0.5))));
                }
                if values.is_empty() || self.rng.random_bool(0.3) {
                    values.push(("position", json!(self.rng.random_range(0..100))));
                }
                self.model
                    .entry(id.clone())
                    .or_default()
                    .write(at, true, &values);
                let map = values
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                client.update("todos", key, map).await
            }
        };
        write.expect("a local write is queued");
    }

    /// One transaction of plain SQL on the server-only rows: inserts, updates, moves out of
    /// and back into the shape, hard and tombstone deletes, and now and then a bigger one.
    async fn sql_write(&mut self) {
        let mut sql = String::from("BEGIN;");
        // The devices' second shape: notes, written only here (its batches interleave with
        // the todos shape's in each device's database).
        if self.rng.random_bool(0.3) {
            let n = self.rng.random_range(0..30);
            sql.push_str(&format!(
                "INSERT INTO notes (id, owner_id, title) VALUES ('{}', 'srv', 'note')
                 ON CONFLICT (id) DO UPDATE SET title = 'note ' || {}, deleted_at = NULL;
                 DELETE FROM notes WHERE id = '{}';",
                uuid(n),
                self.rng.random_range(0..1000),
                uuid(self.rng.random_range(0..30))
            ));
        }
        for _ in 0..self.rng.random_range(1..4) {
            let kind = self.rng.random_range(0..10);
            if kind < 2 || self.server_rows.is_empty() {
                let n = self.next_row();
                self.server_rows.push(n);
                sql.push_str(&format!(
                    "INSERT INTO todos (id, owner_id, title, position) VALUES ('{}', 'srv', 'server {n}', {n});",
                    uuid(n)
                ));
                continue;
            }
            let n = self.server_rows[self.rng.random_range(0..self.server_rows.len())];
            let id = uuid(n);
            let statement = match kind {
                2 => format!(
                    "UPDATE todos SET owner_id = CASE owner_id WHEN 'srv' THEN 'hidden' ELSE 'srv' END WHERE id = '{id}';"
                ),
                3 => format!("DELETE FROM todos WHERE id = '{id}';"),
                4 => format!(
                    "UPDATE todos SET deleted_at = CASE WHEN deleted_at IS NULL THEN now() END WHERE id = '{id}';"
                ),
                5 => {
                    "UPDATE todos SET position = position + 1 WHERE owner_id IN ('srv', 'hidden');"
                        .to_owned()
                }
                _ => format!(
                    "UPDATE todos SET title = 'server {}', done = NOT done WHERE id = '{id}';",
                    self.rng.random_range(0..1000)
                ),
            };
            sql.push_str(&statement);
        }
        sql.push_str("COMMIT;");
        self.env.sql(&sql).await;
    }

    /// Plain SQL on a row the devices write, setting every column the model follows and the
    /// tombstone, at an `updated_at` from the devices' clock: it counts as a write, at that
    /// time, of the columns it changes (and of existence if it changes the tombstone) on rows
    /// a mutation wrote, of every column and existence on others (proxy/ARCHITECTURE.md, "The
    /// write path"). (A device write made later has a later clock and beats it; one made
    /// earlier loses the columns it changed.)
    async fn sql_write_device_row(&mut self) {
        // Rows still only in an offline device's outbox are not on the server yet: a few tries.
        for _ in 0..3 {
            if self.sql_write_device_row_once().await {
                return;
            }
        }
    }

    /// Whether the row picked was on the server.
    async fn sql_write_device_row_once(&mut self) -> bool {
        if self.model.is_empty() {
            return false;
        }
        let id = self
            .model
            .keys()
            .nth(self.rng.random_range(0..self.model.len()))
            .cloned()
            .expect("a row");
        let at = self.clock.fetch_add(1_000, Ordering::SeqCst) + 1_000;
        let title = format!("sql {}", self.rng.random_range(0..1000));
        let done = self.rng.random_bool(0.5);
        let position = self.rng.random_range(0..100);
        let live = !self.rng.random_bool(0.15);
        let stamp = micros_to_text(at);
        let deleted_at = if live {
            "NULL".to_owned()
        } else {
            stamp.clone()
        };
        // The values before the UPDATE, and whether the trigger (migrations/0004) recorded
        // which columns it changed, which it does for rows a mutation wrote: then the UPDATE
        // writes only the columns it changes, and existence only if `deleted_at` changes.
        // Otherwise (a row only plain SQL wrote so far) it writes every column and existence.
        let rows = self
            .env
            .pg_rows(&format!(
                "BEGIN;
                 WITH old AS (SELECT id, title, done, position, deleted_at FROM todos
                              WHERE id = '{id}' FOR UPDATE)
                 UPDATE todos t SET title = '{title}', done = {done}, position = {position},
                        deleted_at = {deleted_at}, updated_at = {stamp}
                 FROM old WHERE t.id = old.id
                 RETURNING old.title, old.done, old.position::float8, old.deleted_at IS NULL;
                 SELECT count(*) FROM shapesync.plain_writes
                 WHERE key = to_json(ARRAY['{id}'])::text;
                 COMMIT;"
            ))
            .await;
        let [old, recorded] = rows.as_slice() else {
            return false;
        };
        let text = |i: usize| old.get(i).cloned().flatten();
        let per_column = recorded.first().cloned().flatten().as_deref() != Some("0");
        let mut values = Vec::new();
        if !per_column || text(0).as_deref() != Some(title.as_str()) {
            values.push(("title", json!(title)));
        }
        if !per_column || text(1).as_deref() != Some(if done { "t" } else { "f" }) {
            values.push(("done", json!(done)));
        }
        if !per_column || text(2).and_then(|p| p.parse::<f64>().ok()) != Some(f64::from(position)) {
            values.push(("position", json!(position)));
        }
        let was_live = text(3).as_deref() == Some("t");
        self.sql_device_writes += 1;
        let model = self.model.entry(id).or_default();
        if per_column && was_live && live {
            model.write_columns(at, &values);
        } else {
            model.write(at, live, &values);
        }
        true
    }

    /// The writes waiting in device `i`'s outbox.
    async fn queued(&self, i: usize) -> usize {
        let client = self.devices[i].client.as_ref().expect("open");
        let n = rows(client, "SELECT count(*) FROM _shapesync_outbox").await;
        n[0][0].as_deref().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    async fn converge(&mut self) {
        for device in &mut self.devices {
            device.online = true;
            if let Some(c) = &device.client {
                c.set_online(true);
            }
        }
        for device in &self.devices {
            let client = device.client.as_ref().expect("open");
            let deadline = tokio::time::Instant::now() + crate::support::WAIT;
            loop {
                let (converged, report) = self.compare(client).await;
                if converged {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "device {} did not converge: {report}",
                    device.name
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.check_exactly_once().await;
        self.check_last_writer_wins().await;
    }

    /// Whether a device's mirror equals Postgres with nothing pending, and what differs.
    async fn compare(&self, client: &Client) -> (bool, String) {
        let status = client.status();
        let leftovers = rows(
            client,
            "SELECT (SELECT count(*) FROM _shapesync_overlays), (SELECT count(*) FROM _shapesync_outbox), (SELECT count(*) FROM _shapesync_acked)",
        )
        .await;
        let mine = rows(client, CLIENT_TODOS).await;
        let theirs = self
            .env
            .pg_rows(&PG_TODOS.replace("WHERE", "WHERE owner_id <> 'hidden' AND"))
            .await;
        let differing: Vec<String> = mine
            .iter()
            .filter(|r| !theirs.contains(r))
            .map(|r| format!("device {r:?}"))
            .chain(
                theirs
                    .iter()
                    .filter(|r| !mine.contains(r))
                    .map(|r| format!("pg {r:?}")),
            )
            .take(6)
            .collect();
        let clean = leftovers[0].iter().all(|n| n.as_deref() == Some("0"));
        let notes = "SELECT id, title FROM notes ORDER BY id";
        let notes_match = rows(client, notes).await
            == self
                .env
                .pg_rows("SELECT id::text, title FROM notes WHERE deleted_at IS NULL ORDER BY id")
                .await;
        let converged = status.pending == 0 && clean && mine == theirs && notes_match;
        let report = format!(
            "status {:?}; overlays/outbox/acked {:?}; {} vs {} rows; notes match: {notes_match}; differing: {differing:?}",
            status.state,
            leftovers[0],
            mine.len(),
            theirs.len()
        );
        (converged, report)
    }

    async fn check_exactly_once(&self) {
        for device in &self.devices {
            let count = self
                .env
                .pg_rows(&format!(
                    "SELECT count(*) FROM shapesync.mutation_ids WHERE client_id = 'sim-{}'",
                    device.name
                ))
                .await;
            assert_eq!(
                count[0][0].as_deref(),
                Some(device.writes.to_string().as_str()),
                "device {}: every write recorded once",
                device.name
            );
        }
    }

    async fn check_last_writer_wins(&self) {
        let actual = self
            .env
            .pg_rows("SELECT id::text, deleted_at IS NULL, title, done, position::int8 FROM todos WHERE owner_id = 'c' ORDER BY id")
            .await;
        let mut seen = 0;
        for row in actual {
            let id = row[0].clone().unwrap_or_default();
            let model = self
                .model
                .get(&id)
                .unwrap_or_else(|| panic!("unknown row {id}"));
            let live = model.live.map(|(_, l)| l).unwrap_or(false);
            assert_eq!(row[1].as_deref() == Some("t"), live, "row {id}: existence");
            let text = |c: &str| -> Option<String> {
                model.columns.get(c).map(|(_, v)| match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => {
                        if *b {
                            "t".into()
                        } else {
                            "f".into()
                        }
                    }
                    other => other.to_string(),
                })
            };
            assert_eq!(row[2], text("title"), "row {id}: title");
            assert_eq!(row[3], text("done"), "row {id}: done");
            assert_eq!(row[4], text("position"), "row {id}: position");
            seen += 1;
        }
        assert_eq!(
            seen,
            self.model.len(),
            "every row the devices made exists on the server"
        );
    }
}

/// The devices' clock: 1 ms past its last reading, and never slower than the wall clock (kept
/// the 20 s behind it that the simulation starts at), since a client also measures its
/// `ack_grace` on this clock: a clock that only moved per write would never let an answered
/// write without an LSN settle.
fn device_tick(clock: &AtomicI64) -> i64 {
    let wall = chrono_now_micros() - 20_000_000;
    let previous = clock
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
            Some((c + 1_000).max(wall))
        })
        .expect("the update always answers Some");
    (previous + 1_000).max(wall)
}

fn chrono_now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// µs since the epoch as a `timestamptz` literal.
fn micros_to_text(micros: i64) -> String {
    format!("'epoch'::timestamptz + {micros} * interval '1 microsecond'")
}
