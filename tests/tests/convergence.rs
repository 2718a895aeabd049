//! Convergence of the read path (proxy/ARCHITECTURE.md, "What the tests must show"):
//! concurrent writers on
//! Postgres (inserts, updates moving rows across shapes, deletes, tombstones, primary-key
//! changes, TOASTed values, multi-statement and rolled-back transactions, a 100k-row
//! transaction) while shapes with different `where`s, columns and replica modes are created
//! mid-load and followed by strict Rust consumers (tests::shape_consumer) and by the official
//! Electric client (long-poll and SSE). After the writes stop, every client's rows must equal
//! the shape evaluated on Postgres, and no client may have seen a protocol violation: offsets
//! go forward, a change never arrives twice, log changes carry their txids.
//!
//! Variants disturb the load: the proxy is killed with SIGKILL and restarted, Postgres is
//! restarted (fast shutdown) or crashes (SIGKILL) and recovers.
//!
//! Each run prints its seed; `SHAPESYNC_SEED=<seed>` replays the same writes, shape start
//! times and disturbances (thread scheduling still varies). `SHAPESYNC_CONVERGENCE_SCALE=<f>`
//! makes the load phase `f` times longer, with `ceil(f)` disturbances (default 1; CI keeps the
//! whole file well under two minutes).

mod convergence {
    pub mod shapes;
    pub mod workload;
}

use std::collections::BTreeMap;
use std::time::Duration;

use convergence::shapes::{self, ShapeCase};
use convergence::workload::{self, Writer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer};
use tests::{TestDb, shapesync_bin};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long clients get to converge once the writes stopped.
const CONVERGE: Duration = Duration::from_secs(90);
const WRITERS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disturbance {
    None,
    KillProxy,
    RestartPostgres,
    CrashPostgres,
}

struct Scenario {
    name: &'static str,
    disturbance: Disturbance,
    /// Rows of the bulk transaction.
    bulk_rows: i32,
    /// Length of the load phase at scale 1.
    load: Duration,
}

fn seed() -> u64 {
    match std::env::var("SHAPESYNC_SEED") {
        Ok(text) => text.trim().parse().expect("SHAPESYNC_SEED must be a u64"),
        Err(_) => rand::random(),
    }
}

fn scale() -> f64 {
    std::env::var("SHAPESYNC_CONVERGENCE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

/// Something that happens at a moment of the load phase.
enum Planned {
    Consumer(usize),
    Electric(usize),
    Disturb,
}

async fn run(scenario: Scenario) {
    let seed = seed();
    eprintln!(
        "convergence {}: seed {seed} (replay with SHAPESYNC_SEED={seed})",
        scenario.name
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let load = scenario.load.mul_f64(scale());
    let mut db = TestDb::new(scenario.name).await;
    workload::create_schema(&db.connect().await, WRITERS, &mut rng).await;
    let chunk_bytes = [64 * 1024, 256 * 1024, 1024 * 1024][rng.random_range(0..3)].to_string();
    let flags = [
        "--tombstones",
        "notes",
        "--chunk-bytes",
        chunk_bytes.as_str(),
        "--long-poll-timeout",
        "3s",
        "--sse-timeout",
        "4s",
    ];
    let mut proxy = ProxyProcess::start(shapesync_bin!(), &db, &flags).await;

    let rust_cases = shapes::rust_cases();
    let electric_cases = shapes::electric_cases();
    let at = |rng: &mut StdRng, from: f64, to: f64| load.mul_f64(rng.random_range(from..to));
    let mut plan: Vec<(Duration, Planned)> = Vec::new();
    for i in 0..rust_cases.len() {
        plan.push((at(&mut rng, 0.0, 0.7), Planned::Consumer(i)));
    }
    for i in 0..electric_cases.len() {
        plan.push((at(&mut rng, 0.0, 0.7), Planned::Electric(i)));
    }
    if scenario.disturbance != Disturbance::None {
        // One disturbance per unit of scale, in the middle of the load.
        let count = scale().ceil() as usize;
        for k in 0..count {
            let (from, to) = (
                0.2 + 0.6 * k as f64 / count as f64,
                0.2 + 0.6 * (k + 1) as f64 / count as f64,
            );
            plan.push((at(&mut rng, from, to), Planned::Disturb));
        }
    }
    plan.sort_by_key(|(t, _)| *t);
    let bulk_insert = at(&mut rng, 0.1, 0.4);
    let bulk_change = at(&mut rng, 0.5, 0.8);

    let start = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let writer = Writer::new(w, &db.url, seed.wrapping_add(w as u64 + 1));
            tokio::spawn(writer.run(start + load))
        })
        .collect();
    let bulk = tokio::spawn(workload::bulk(
        db.url.clone(),
        scenario.bulk_rows,
        start + bulk_insert,
        start + bulk_change,
    ));

    let stop = CancellationToken::new();
    let mut consumers: Vec<(ShapeCase, ShapeConsumer)> = Vec::new();
    let mut electrics: Vec<(ShapeCase, bool, ElectricClient)> = Vec::new();
    for (when, planned) in plan {
        tokio::time::sleep_until(start + when).await;
        match planned {
            Planned::Consumer(i) => {
                let case = rust_cases[i].clone();
                let consumer =
                    ShapeConsumer::new(&proxy.url, case.spec.clone(), ConsumerOptions::default());
                consumer.spawn(stop.clone());
                consumers.push((case, consumer));
            }
            Planned::Electric(i) => {
                let (case, sse) = electric_cases[i].clone();
                let client = ElectricClient::start(
                    &proxy.url,
                    json!({"params": case.electric_params(), "sse": sse, "raw": true}),
                );
                electrics.push((case, sse, client));
            }
            Planned::Disturb => disturb(scenario.disturbance, &mut rng, &mut db, &mut proxy).await,
        }
    }

    let mut committed = 0;
    for writer in writers {
        let stats = writer.await.expect("writer");
        committed += stats.committed;
    }
    bulk.await.expect("bulk writer");
    let written = start.elapsed();
    eprintln!(
        "convergence {}: {committed} transactions in {written:?}; waiting for {} consumers and {} Electric clients",
        scenario.name,
        consumers.len(),
        electrics.len()
    );

    let sql = db.connect().await;
    for (case, consumer) in &consumers {
        let expected = case.expected(&sql).await;
        wait_converged(case, consumer, &expected).await;
        // What the proxy keeps, not only what it streamed: a client reading the shape from
        // the start now gets the same rows.
        let late = ShapeConsumer::new(
            &proxy.url,
            case.spec.clone(),
            ConsumerOptions {
                live: false,
                ..Default::default()
            },
        );
        late.catch_up().await;
        let state = late.state();
        assert!(
            state.violations.is_empty(),
            "{} (read from the start): {:?}",
            case.name,
            &state.violations[..state.violations.len().min(5)]
        );
        assert!(
            state.rows == expected,
            "{} (read from the start): {}",
            case.name,
            shapes::diff(&state.rows, &expected)
        );
    }
    for (case, sse, client) in &mut electrics {
        let expected = case.expected(&sql).await;
        let converged = tokio::time::timeout(
            CONVERGE,
            client.wait_rows(CONVERGE, |rows| shapes::electric_rows(rows) == expected),
        )
        .await;
        assert!(
            converged.is_ok(),
            "{}: the Electric client did not converge: {}",
            case.name,
            latest_electric_rows(client)
                .map_or("no rows".into(), |rows| shapes::diff(&rows, &expected))
        );
        let violations = shapes::electric_violations(&client.history, *sse);
        assert!(
            violations.is_empty(),
            "{}: {} violations, first: {:#?}",
            case.name,
            violations.len(),
            &violations[..violations.len().min(5)]
        );
        let errors: Vec<Value> = client
            .errors()
            .into_iter()
            .filter(|e| {
                e["status"]
                    .as_u64()
                    .is_some_and(|s| (400..500).contains(&s))
            })
            .collect();
        assert!(errors.is_empty(), "{}: client errors {errors:?}", case.name);
        eprintln!(
            "  {}: converged; operations {:?}",
            case.name,
            shapes::operations(&client.history)
        );
    }
    stop.cancel();
    eprintln!(
        "convergence {}: converged {:?} after the writes stopped",
        scenario.name,
        start.elapsed() - written
    );
}

async fn wait_converged(
    case: &ShapeCase,
    consumer: &ShapeConsumer,
    expected: &BTreeMap<String, Map<String, Value>>,
) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let state = consumer.state();
        assert!(
            state.violations.is_empty(),
            "{}: {} protocol violations, first: {:#?}",
            case.name,
            state.violations.len(),
            &state.violations[..state.violations.len().min(5)]
        );
        if state.up_to_date && state.rows == *expected {
            eprintln!(
                "  {}: converged on {} rows; {} log changes, {} responses, {} refetches, {} retries",
                case.name,
                expected.len(),
                state.changes,
                state.exchanges.len(),
                state.refetches,
                state.retries
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: did not converge within {CONVERGE:?} (up to date: {}): {}",
            case.name,
            state.up_to_date,
            shapes::diff(&state.rows, expected)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn latest_electric_rows(client: &ElectricClient) -> Option<BTreeMap<String, Map<String, Value>>> {
    client
        .history
        .iter()
        .rev()
        .find(|e| e["type"] == "rows")
        .and_then(|e| e["rows"].as_object())
        .map(shapes::electric_rows)
}

async fn disturb(
    disturbance: Disturbance,
    rng: &mut StdRng,
    db: &mut TestDb,
    proxy: &mut ProxyProcess,
) {
    let down = Duration::from_millis(rng.random_range(100..1000));
    eprintln!("disturbance: {disturbance:?}, down for {down:?}");
    match disturbance {
        Disturbance::None => {}
        Disturbance::KillProxy => {
            proxy.kill9().await;
            tokio::time::sleep(down).await;
            proxy.restart().await;
        }
        Disturbance::RestartPostgres | Disturbance::CrashPostgres => {
            tokio::task::block_in_place(|| {
                if disturbance == Disturbance::CrashPostgres {
                    db.cluster.kill();
                } else {
                    db.cluster.stop();
                }
            });
            tokio::time::sleep(down).await;
            tokio::task::block_in_place(|| db.cluster.start()).expect("restart Postgres");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_converge_under_concurrent_writes() {
    run(Scenario {
        name: "converge_plain",
        disturbance: Disturbance::None,
        bulk_rows: 100_000,
        load: Duration::from_secs(8),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_converge_across_a_proxy_kill_9() {
    run(Scenario {
        name: "converge_kill_proxy",
        disturbance: Disturbance::KillProxy,
        bulk_rows: 20_000,
        load: Duration::from_secs(8),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_converge_across_a_postgres_restart() {
    run(Scenario {
        name: "converge_restart_pg",
        disturbance: Disturbance::RestartPostgres,
        bulk_rows: 20_000,
        load: Duration::from_secs(8),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_converge_across_a_postgres_crash() {
    run(Scenario {
        name: "converge_crash_pg",
        disturbance: Disturbance::CrashPostgres,
        bulk_rows: 20_000,
        load: Duration::from_secs(8),
    })
    .await;
}
