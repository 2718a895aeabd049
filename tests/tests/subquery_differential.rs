//! Differential test of `where` clauses with subqueries: one semantics for the snapshot, the
//! live stream and Postgres.
//!
//! Random clauses on `todos` test membership in `orgs`, `projects`, `members` and `todos`
//! itself (`IN`, `NOT IN`, row values, correlated `[NOT] EXISTS`, nested up to three levels,
//! with `$n` parameters and NULL-producing comparisons inside), while random writes change
//! every table.
//!
//! - `evaluator_agrees_with_postgres_on_random_subqueries` (no proxy): on every state of the
//!   data, `WhereClause::evaluate_with` with the subqueries' current rows (kept as a proxy
//!   keeps them, [`Current::of`]) must give, row by row, what Postgres gives for the rebuilt
//!   SQL (`to_sql`) and for the user's own text. A row value holding a NULL is compared
//!   with the rebuilt SQL only: WHERE.md documents that there it is unknown as a whole,
//!   where Postgres compares pair by pair.
//! - `live_moves_and_snapshots_agree_with_postgres` (a real proxy): every clause is a shape (some
//!   selecting only `id, title`, some `replica=full`)
//!   followed live from its snapshot; after each batch of writes every follower must hold
//!   exactly the rows Postgres selects with the same `where` text and parameters, without a
//!   refetch or a protocol violation, and a fresh follower (the snapshot path) too.
//!
//! The seed is printed; `SHAPESYNC_SEED=<n>` replays a run. `SHAPESYNC_SUBQ_CLAUSES=<n>`
//! changes the number of clauses of the evaluator test.

#[path = "subquery_differential/generator.rs"]
mod generator;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use shapes::schema::{QualifiedName, TableSchema};
use shapes::where_clause::WhereClause;
use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::{TestDb, shapesync_bin, wait_for};
use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

use generator::{Gen, TABLES, Writer};

const WAIT: Duration = Duration::from_secs(30);

type Row = Vec<Option<String>>;
type Db = HashMap<QualifiedName, Vec<Row>>;
type Schemas = HashMap<QualifiedName, Arc<TableSchema>>;

fn seed() -> u64 {
    match std::env::var("SHAPESYNC_SEED") {
        Ok(s) => s.trim().parse().expect("SHAPESYNC_SEED must be a u64"),
        Err(_) => rand::random(),
    }
}

fn todos_name() -> QualifiedName {
    QualifiedName::new("public", "todos")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A generated clause that the where language accepted.
struct Clause {
    text: String,
    params: Vec<String>,
    /// A row value is in it: Postgres reads the user's text differently when NULLs are in one.
    row_value: bool,
    parsed: WhereClause,
}

impl Clause {
    fn parse(
        text: &str,
        params: &[String],
        row_value: bool,
        schemas: &Schemas,
    ) -> Result<Clause, String> {
        let map: BTreeMap<usize, String> = params
            .iter()
            .enumerate()
            .map(|(i, p)| (i + 1, p.clone()))
            .collect();
        let others = |name: &QualifiedName| schemas.get(name).cloned();
        WhereClause::parse_with_tables(text, &map, &schemas[&todos_name()], &others)
            .map(|parsed| Clause {
                text: text.to_owned(),
                params: params.to_vec(),
                row_value,
                parsed,
            })
            .map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        format!("where {} params {:?}", self.text, self.params)
    }

    /// `EXECUTE name(params)` for a statement prepared from the user's text (parameters as
    /// untyped literals: Postgres gives each the type it inferred).
    fn execute_raw(&self, name: &str) -> String {
        execute(name, &self.params)
    }
}

fn execute(name: &str, params: &[String]) -> String {
    if params.is_empty() {
        format!("EXECUTE {name}")
    } else {
        let values: Vec<String> = params.iter().map(|p| quote(p)).collect();
        format!("EXECUTE {name}({})", values.join(", "))
    }
}

/// `PREPARE name(text, …) AS <select>`: for the rebuilt SQL, whose parameters are all text.
fn prepare_typed(name: &str, count: usize, select: &str) -> String {
    if count == 0 {
        format!("PREPARE {name} AS {select}")
    } else {
        format!(
            "PREPARE {name}({}) AS {select}",
            vec!["text"; count].join(", ")
        )
    }
}

async fn create_schema(db: &TestDb, rng: &mut StdRng) -> (Client, Schemas) {
    let client = db.connect().await;
    // Compiling the plans of the correlated subqueries below would take seconds each.
    client
        .batch_execute("SET jit = off")
        .await
        .expect("jit off");
    client
        .batch_execute(&generator::schema_sql(rng))
        .await
        .expect("schema");
    let mut schemas = Schemas::new();
    for t in TABLES {
        let name = QualifiedName::new("public", t.name);
        let schema = proxy::postgres::catalog::load_table(&client, &name)
            .await
            .expect("catalog");
        schemas.insert(name, Arc::new(schema));
    }
    (client, schemas)
}

/// Accepted clauses until `wanted`; refusals counted by message.
fn generate(rng: &mut StdRng, wanted: usize, schemas: &Schemas) -> Vec<Clause> {
    let mut clauses = Vec::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut generated = 0;
    while clauses.len() < wanted {
        generated += 1;
        let mut g = Gen::new(rng);
        let text = g.clause();
        let params: Vec<String> = g.params.iter().map(|(v, _)| v.clone()).collect();
        let row_value = g.row_value;
        match Clause::parse(&text, &params, row_value, schemas) {
            Ok(c) => clauses.push(c),
            Err(e) => {
                let key: String = e.chars().take(70).collect();
                *refused.entry(key).or_default() += 1;
            }
        }
    }
    let mut top: Vec<(&String, &usize)> = refused.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    eprintln!(
        "subquery_differential: {} clauses accepted of {generated} generated; refusals {:?}",
        clauses.len(),
        &top[..top.len().min(6)]
    );
    assert!(
        clauses.len() * 10 >= generated * 8,
        "the generator is mostly refused: {} of {generated}; {top:?}",
        clauses.len()
    );
    clauses
}

/// Every row of every table, in text output (`None` = NULL), in column order.
async fn read_db(client: &Client) -> Db {
    let mut db = Db::new();
    for t in TABLES {
        let rows = client
            .simple_query(&format!("SELECT * FROM {} ORDER BY id", t.name))
            .await
            .expect("read table");
        db.insert(
            QualifiedName::new("public", t.name),
            rows.iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                    }
                    _ => None,
                })
                .collect(),
        );
    }
    db
}

/// The statements of a batch of `EXECUTE`s, each one's rows (as text), or the error of the
/// first one that failed (then run one by one by the caller).
async fn run_all(client: &Client, statements: &[String]) -> Result<Vec<Vec<Row>>, String> {
    let messages = client
        .simple_query(&statements.join(";\n"))
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut out = Vec::new();
    let mut current = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::Row(r) => {
                current.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            SimpleQueryMessage::CommandComplete(_) => out.push(std::mem::take(&mut current)),
            _ => {}
        }
    }
    Ok(out)
}

use shapes::testing::SubqueryRows as Current;

/// Applies `count` random writes, in one transaction or one by one.
async fn write_batch(
    client: &Client,
    rng: &mut StdRng,
    writer: &mut Writer,
    count: usize,
) -> String {
    let statements: Vec<String> = (0..count).map(|_| writer.statement(rng)).collect();
    let batch = if rng.random_bool(0.5) {
        format!("BEGIN; {}; COMMIT", statements.join("; "))
    } else {
        statements.join("; ")
    };
    client.batch_execute(&batch).await.expect(&batch);
    batch
}

fn bool_of(v: &Option<String>) -> Option<bool> {
    v.as_deref().map(|s| s == "t")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluator_agrees_with_postgres_on_random_subqueries() {
    let seed = seed();
    eprintln!("subquery_differential evaluator: seed {seed} (replay with SHAPESYNC_SEED={seed})");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let db = TestDb::new("subquery_diff_eval").await;
    let (client, schemas) = create_schema(&db, &mut rng).await;
    let wanted: usize = std::env::var("SHAPESYNC_SUBQ_CLAUSES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let clauses = generate(&mut rng, wanted, &schemas);

    // Each clause twice: the user's text, and the rebuilt SQL.
    let mut prepare = Vec::new();
    for (k, c) in clauses.iter().enumerate() {
        let (sql, params) = c.parsed.to_sql();
        prepare.push(prepare_typed(
            &format!("rb{k}"),
            params.len(),
            &format!("SELECT id, ({sql}) FROM todos ORDER BY id"),
        ));
        prepare.push(format!(
            "PREPARE raw{k} AS SELECT id, ({}) FROM todos ORDER BY id",
            c.text
        ));
    }
    let mut unprepared = Vec::new();
    for (k, statement) in prepare.iter().enumerate() {
        if let Err(e) = client.batch_execute(statement).await {
            unprepared.push(format!(
                "{}\n  {statement}\n  {e:?}",
                clauses[k / 2].describe()
            ));
        }
    }
    assert!(
        unprepared.is_empty(),
        "seed {seed}: Postgres refuses:\n{}",
        unprepared.join("\n")
    );

    let mut writer = Writer::default();
    let mut disagreements = Vec::new();
    let mut compared = 0;
    let mut compared_raw = 0;
    let mut verdicts = [0usize; 3];
    for state in 0..6 {
        if state > 0 {
            let count = rng.random_range(2..8);
            write_batch(&client, &mut rng, &mut writer, count).await;
        }
        let data = read_db(&client).await;
        let todos = &data[&todos_name()];
        let mut statements = Vec::new();
        for (k, c) in clauses.iter().enumerate() {
            statements.push(execute(&format!("rb{k}"), &c.parsed.to_sql().1));
            statements.push(c.execute_raw(&format!("raw{k}")));
        }
        let results = run_all(&client, &statements)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: state {state}: {e}"));
        assert_eq!(results.len(), statements.len());
        for (k, c) in clauses.iter().enumerate() {
            let current = Current::of(&c.parsed, &data);
            let ours: Vec<Option<bool>> = todos
                .iter()
                .map(|row| c.parsed.evaluate_with(row, &current))
                .collect();
            for (which, result) in [
                ("rebuilt SQL", &results[2 * k]),
                ("text", &results[2 * k + 1]),
            ] {
                if which == "text" && c.row_value {
                    continue;
                }
                assert_eq!(result.len(), todos.len());
                for (r, pg) in result.iter().enumerate() {
                    if which == "text" {
                        compared_raw += 1;
                    } else {
                        compared += 1;
                        verdicts[match ours[r] {
                            Some(true) => 0,
                            Some(false) => 1,
                            None => 2,
                        }] += 1;
                    }
                    let pg = bool_of(&pg[1]);
                    if pg != ours[r] && disagreements.len() < 20 {
                        disagreements.push(format!(
                            "state {state}: {} ({which}: {:?})\n  postgres {pg:?}, evaluator {:?}, todos row {:?}",
                            c.describe(),
                            if which == "text" { c.text.clone() } else { c.parsed.to_sql().0 },
                            ours[r],
                            todos[r]
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "subquery_differential evaluator: seed {seed}: {} clauses, {compared} (clause, row) cases \
         against the rebuilt SQL and {compared_raw} against the text; true/false/NULL {verdicts:?}; {:?}",
        clauses.len(),
        started.elapsed()
    );
    assert!(
        disagreements.is_empty(),
        "seed {seed}: disagreements:\n{}",
        disagreements.join("\n")
    );
    assert!(
        verdicts.iter().all(|&n| n * 50 >= compared),
        "one-sided verdicts {verdicts:?}"
    );
}

/// A clause's shape, followed live from its snapshot.
struct Followed {
    /// Index in the clauses; its statements are prepared as `shape{k}`.
    k: usize,
    consumer: ShapeConsumer,
    /// The columns the shape selects (`None`: all).
    columns: Option<&'static [&'static str]>,
}

/// Live shapes vary: some select only a few columns (the compared ones left out, so moves
/// cannot read them from the rows sent), some are `replica=full`.
fn live_spec(k: usize, c: &Clause) -> (ShapeSpec, Option<&'static [&'static str]>) {
    const SOME: &[&str] = &["id", "title"];
    match k % 4 {
        1 => (spec_of(c).columns(&SOME.join(",")), Some(SOME)),
        2 => (spec_of(c).replica_full(), None),
        3 => (
            spec_of(c).columns(&SOME.join(",")).replica_full(),
            Some(SOME),
        ),
        _ => (spec_of(c), None),
    }
}

fn spec_of(c: &Clause) -> ShapeSpec {
    let params: Vec<&str> = c.params.iter().map(String::as_str).collect();
    ShapeSpec::table("todos", &["id"]).filter(&c.text, &params)
}

/// Postgres' rows for every shape (the user's text with its parameters; the rebuilt SQL
/// for a row value), by message key, as the consumer holds them.
async fn expected_rows(
    client: &Client,
    clauses: &[Clause],
    columns: &[String],
) -> Vec<BTreeMap<String, Map<String, Value>>> {
    let statements: Vec<String> = clauses
        .iter()
        .enumerate()
        .map(|(k, c)| {
            if c.row_value {
                execute(&format!("shape{k}"), &c.parsed.to_sql().1)
            } else {
                c.execute_raw(&format!("shape{k}"))
            }
        })
        .collect();
    let results = run_all(client, &statements).await.expect("expected rows");
    let todos = todos_name();
    results
        .into_iter()
        .map(|rows| {
            rows.into_iter()
                .map(|row| {
                    let key = shapes::wire::message_key(&todos, [row[0].as_deref()]);
                    let object: Map<String, Value> = columns
                        .iter()
                        .zip(row)
                        .map(|(name, v)| (name.clone(), v.map_or(Value::Null, Value::String)))
                        .collect();
                    (key, object)
                })
                .collect()
        })
        .collect()
}

/// Waits until every follower holds exactly Postgres' rows; no refetch, no violation.
async fn converge(
    followed: &[Followed],
    clauses: &[Clause],
    expected: &[BTreeMap<String, Map<String, Value>>],
    step: &str,
) {
    for f in followed {
        let c = &clauses[f.k];
        let want: BTreeMap<String, Map<String, Value>> = match f.columns {
            None => expected[f.k].clone(),
            Some(columns) => expected[f.k]
                .iter()
                .map(|(key, row)| {
                    let row = row
                        .iter()
                        .filter(|(name, _)| columns.contains(&name.as_str()))
                        .map(|(name, v)| (name.clone(), v.clone()))
                        .collect();
                    (key.clone(), row)
                })
                .collect(),
        };
        let want = &want;
        let what = format!("{} after {step}", c.describe());
        let converged = tokio::time::timeout(
            WAIT,
            wait_for(&what, 2 * WAIT, || async {
                let state = f.consumer.state();
                assert!(
                    state.violations.is_empty(),
                    "{what}: {:?}",
                    state.violations
                );
                (state.up_to_date && state.rows == *want).then_some(())
            }),
        )
        .await;
        let state = f.consumer.state();
        if converged.is_err() || state.rows != *want {
            let got: Vec<&String> = state.rows.keys().collect();
            let wanted: Vec<&String> = want.keys().collect();
            panic!(
                "{what}: the follower holds {got:?}\n  Postgres selects {wanted:?}\n  sql {}",
                c.parsed.to_sql().0
            );
        }
        assert_eq!(state.refetches, 0, "{what}: refetched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_moves_and_snapshots_agree_with_postgres() {
    let seed = seed();
    eprintln!("subquery_differential live: seed {seed} (replay with SHAPESYNC_SEED={seed})");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let db = TestDb::new("subquery_diff_live").await;
    let (client, schemas) = create_schema(&db, &mut rng).await;
    let clauses = generate(&mut rng, 20, &schemas);
    let columns: Vec<String> = schemas[&todos_name()]
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    for (k, c) in clauses.iter().enumerate() {
        let statement = if c.row_value {
            let (sql, params) = c.parsed.to_sql();
            prepare_typed(
                &format!("shape{k}"),
                params.len(),
                &format!("SELECT * FROM todos WHERE {sql}"),
            )
        } else {
            format!("PREPARE shape{k} AS SELECT * FROM todos WHERE {}", c.text)
        };
        client
            .batch_execute(&statement)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {statement}: {e:?}"));
    }

    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let stop = CancellationToken::new();
    let followed: Vec<Followed> = clauses
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let (spec, columns) = live_spec(k, c);
            let consumer = ShapeConsumer::new(&proxy.url, spec, ConsumerOptions::default());
            consumer.spawn(stop.clone());
            Followed {
                k,
                consumer,
                columns,
            }
        })
        .collect();
    let expected = expected_rows(&client, &clauses, &columns).await;
    converge(
        &followed,
        &clauses,
        &expected,
        &format!("the snapshot (seed {seed})"),
    )
    .await;

    let mut writer = Writer::default();
    let mut moved = 0;
    let mut previous = expected;
    for batch in 0..6 {
        // the last batch is a big one: many moves in one go
        let count = if batch == 5 {
            25
        } else {
            rng.random_range(3..10)
        };
        let written = write_batch(&client, &mut rng, &mut writer, count).await;
        let expected = expected_rows(&client, &clauses, &columns).await;
        moved += expected
            .iter()
            .zip(&previous)
            .filter(|(now, before)| now.keys().ne(before.keys()))
            .count();
        converge(
            &followed,
            &clauses,
            &expected,
            &format!("batch {batch} (seed {seed}): {written}"),
        )
        .await;
        previous = expected;
    }

    // Fresh followers: of the same shapes (their logs from the start), and of new shapes
    // with the same rows (a snapshot taken now).
    let mut fresh = Vec::new();
    for (k, c) in clauses.iter().enumerate() {
        let params: Vec<&str> = c.params.iter().map(String::as_str).collect();
        let again = ShapeSpec::table("todos", &["id"])
            .filter(&format!("({}) AND id IS NOT NULL", c.text), &params);
        for spec in [spec_of(c), again] {
            let consumer = ShapeConsumer::new(&proxy.url, spec, ConsumerOptions::default());
            consumer.spawn(stop.clone());
            fresh.push(Followed {
                k,
                consumer,
                columns: None,
            });
        }
    }
    converge(
        &fresh,
        &clauses,
        &previous,
        &format!("the end, fresh (seed {seed})"),
    )
    .await;
    stop.cancel();
    let sizes: Vec<usize> = previous.iter().map(BTreeMap::len).collect();
    eprintln!(
        "subquery_differential live: seed {seed}: {} shapes, 6 batches, {moved} (shape, batch) with rows \
         moving; rows at the end {sizes:?}; {:?}",
        clauses.len(),
        started.elapsed()
    );
    assert!(moved > 0, "no write moved a row of any shape");
}
