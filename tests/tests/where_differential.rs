//! Differential test of the `where` language against real Postgres.
//!
//! Random typed rows go into a table on three databases whose case mapping differs: `C`
//! (ASCII only), libc `C.UTF-8` (character by character) and ICU `und` (full mapping, and
//! `'a' < 'B'`, unlike byte order). Random expressions from the supported grammar are parsed
//! with each database's ctype (as the proxy reads it at start) and evaluated three ways, which
//! must agree on every row:
//! 1. our evaluator, on the row's text output read back under the snapshot/pgoutput session
//!    settings (what the live stream sees);
//! 2. Postgres running our rebuilt SQL with its parameters bound as text (what the snapshot
//!    runs) on that database — this must never raise an error;
//! 3. Postgres running the user's original text on that database, wherever Postgres does not
//!    raise an error (overflow, division by zero…) — on the non-C databases only the
//!    expressions that do not order text (ours orders as `COLLATE "C"`).
//!
//! The seed is printed; `SHAPESYNC_SEED=<n>` replays a run, `SHAPESYNC_DIFF_EXPRS=<n>` changes
//! the number of expressions.

#[path = "where_differential/data.rs"]
mod data;
#[path = "where_differential/generator.rs"]
mod generator;

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use std::sync::Arc;

use shapes::where_clause::WhereClause;
use shapes::where_clause::ctype::set_database_ctype;
use tests::TestDb;
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use generator::Gen;

const SESSION: &str = "SET DateStyle = 'ISO, DMY'; SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601'; \
                       SET extra_float_digits = 1; SET bytea_output = 'hex';";
const ROWS: usize = 48;
const BATCH: usize = 40;

type Row = Vec<Option<String>>;

struct Case {
    text: String,
    clause: WhereClause,
}

fn seed() -> u64 {
    match std::env::var("SHAPESYNC_SEED") {
        Ok(s) => s.trim().parse().expect("SHAPESYNC_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

async fn open(db: &TestDb, name: &str) -> Client {
    let client = proxy::postgres::connect(&db.cluster.url(name))
        .await
        .expect("connect");
    client
        .batch_execute(SESSION)
        .await
        .expect("session settings");
    client
}

async fn load_rows(client: &Client, rows: &[Row]) {
    client.batch_execute(data::SETUP_SQL).await.expect("enum");
    client
        .batch_execute(&data::create_table_sql())
        .await
        .expect("table");
    let n = data::COLUMNS.len() + 1;
    let placeholders: Vec<String> = std::iter::once("$1::int8".to_string())
        .chain(
            data::COLUMNS
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::{}", i + 2, c.sql_type)),
        )
        .collect();
    let sql = format!("INSERT INTO t VALUES ({})", placeholders.join(", "));
    let stmt = client
        .prepare_typed(&sql, &vec![Type::TEXT; n])
        .await
        .expect("prepare insert");
    for (id, row) in rows.iter().enumerate() {
        let mut values: Vec<Option<String>> = vec![Some(id.to_string())];
        values.extend(row.iter().cloned());
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        client
            .execute(&stmt, &params)
            .await
            .unwrap_or_else(|e| panic!("insert {values:?}: {e:?}"));
    }
}

/// The rows as the live stream sees them: every column's text output, in column order.
async fn read_rows(client: &Client) -> Vec<Row> {
    let messages = client
        .simple_query("SELECT * FROM t ORDER BY id")
        .await
        .expect("select rows");
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// Runs `SELECT id, (e1), (e2)… FROM t ORDER BY id`; `Err` with the message on failure.
async fn run_batch(
    client: &Client,
    exprs: &[String],
    params: &[String],
) -> Result<Vec<Vec<Option<bool>>>, String> {
    let cols: Vec<String> = exprs.iter().map(|e| format!("({e})")).collect();
    let sql = format!("SELECT id, {} FROM t ORDER BY id", cols.join(", "));
    let stmt = client
        .prepare_typed(&sql, &vec![Type::TEXT; params.len()])
        .await
        .map_err(|e| format!("{e:?}"))?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let rows = client
        .query(&stmt, &refs)
        .await
        .map_err(|e| format!("{e:?}"))?;
    rows.iter()
        .map(|r| {
            (1..r.len())
                .map(|i| r.try_get::<_, Option<bool>>(i).map_err(|e| e.to_string()))
                .collect()
        })
        .collect()
}

#[derive(Default)]
struct Report {
    compared: usize,
    disagreements: Vec<String>,
    rebuilt_errors: Vec<String>,
    original_skipped: usize,
    original_compared: usize,
}

impl Report {
    fn compare(
        &mut self,
        what: &str,
        case: &Case,
        row: &Row,
        sql: &str,
        params: &[String],
        pg: Option<bool>,
    ) {
        let ours = case.clause.evaluate(row);
        if ours != pg && self.disagreements.len() < 30 {
            self.disagreements.push(format!(
                "{what}: where {}\n  postgres {pg:?}, evaluator {ours:?}\n  sql {sql} params {params:?}\n  row {row:?}",
                case.text
            ));
        }
    }
}

/// Rebuilt SQL on the ICU database: must run, and agree with the evaluator.
async fn check_rebuilt(client: &Client, cases: &[Case], rows: &[Row], report: &mut Report) {
    for chunk in cases.chunks(BATCH) {
        let mut exprs = Vec::new();
        let mut params = Vec::new();
        let mut spans = Vec::new();
        for case in chunk {
            let (sql, p) = case.clause.to_sql_with_offset(params.len() + 1);
            spans.push((sql.clone(), p.clone()));
            exprs.push(sql);
            params.extend(p);
        }
        match run_batch(client, &exprs, &params).await {
            Ok(result) => {
                for (r, pg_row) in result.iter().enumerate() {
                    for (k, case) in chunk.iter().enumerate() {
                        report.compared += 1;
                        let (sql, p) = &spans[k];
                        report.compare("rebuilt SQL", case, &rows[r], sql, p, pg_row[k]);
                    }
                }
            }
            Err(_) => {
                // find which expressions fail on their own: each one is a rebuilder bug
                for case in chunk {
                    let (sql, p) = case.clause.to_sql();
                    if let Err(e) = run_batch(client, std::slice::from_ref(&sql), &p).await {
                        report
                            .rebuilt_errors
                            .push(format!("where {}\n  sql {sql} {p:?}\n  {e}", case.text));
                    }
                }
            }
        }
    }
}

/// Whether the user's text means the same in Postgres as in our language. One deliberate
/// difference: `x / 0` and `x % 0` are NULL for every `x`, where Postgres raises an error
/// (skipped anyway) except for NaN, which it returns. Expressions dividing something that can
/// be NaN (a numeric or float operand) are left out of the original-text comparison.
fn same_meaning_as_postgres(case: &Case) -> bool {
    let divides = case.text.contains(" / ") || case.text.contains(" % ");
    let nan_source = case.text.contains("NaN")
        || ["n", "f4", "f8"].iter().any(|c| {
            let table = data::table_schema();
            let index = table.column_index(c);
            case.clause.columns_used().any(|u| Some(u) == index)
        });
    !(divides && nan_source)
}

/// The user's own text on the C database, where Postgres does not raise an error.
async fn check_original(client: &Client, cases: &[Case], rows: &[Row], report: &mut Report) {
    let cases: Vec<&Case> = cases
        .iter()
        .filter(|c| same_meaning_as_postgres(c))
        .collect();
    for chunk in cases.chunks(BATCH) {
        let texts: Vec<String> = chunk.iter().map(|c| c.text.clone()).collect();
        let results: Vec<Option<Vec<Option<bool>>>> = match run_batch(client, &texts, &[]).await {
            Ok(result) => (0..chunk.len())
                .map(|k| Some(result.iter().map(|r| r[k]).collect()))
                .collect(),
            Err(_) => {
                let mut one_by_one = Vec::new();
                for text in &texts {
                    one_by_one.push(
                        run_batch(client, std::slice::from_ref(text), &[])
                            .await
                            .ok()
                            .map(|r| r.iter().map(|x| x[0]).collect()),
                    );
                }
                one_by_one
            }
        };
        for (case, result) in chunk.iter().copied().zip(results) {
            match result {
                None => report.original_skipped += 1,
                Some(column) => {
                    for (r, pg) in column.into_iter().enumerate() {
                        report.original_compared += 1;
                        report.compare("original text", case, &rows[r], &case.text, &[], pg);
                    }
                }
            }
        }
    }
}

/// Syntax errors are reported as Electric reports them: `At location N: <Postgres' message>`
/// where N is Postgres' position in `SELECT 1 WHERE <where>` minus one (Electric's
/// `pg_query` binding makes it zero-based).
async fn check_syntax_positions(client: &Client) {
    let table = data::table_schema();
    for text in [
        "1 x 1",
        "i4 x 1",
        "i4 = ",
        "(i4 = 1",
        "i4 = 1)",
        "i4 = 1 i4",
        "t = 'é' AND AND",
        "t = 'é😀' x",
        "i4 IN ()",
        "i4 =\n 1 x",
        "NOT",
        "i4 = 1 AND",
        "i4 = (1 + )",
        "t = 'unterminated",
        "t = 'é' AND t = 'x",
        "\"unterminated = 1",
    ] {
        let ours = WhereClause::parse(text, &BTreeMap::new(), &table).expect_err(text);
        let err = client
            .simple_query(&format!("SELECT 1 WHERE {text}"))
            .await
            .expect_err(text);
        let db = err.as_db_error().expect("a database error");
        let position = match db.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(p)) => *p as usize,
            other => panic!("{text}: position {other:?}"),
        };
        assert_eq!(
            ours.to_electric_message(),
            format!("At location {}: {}", position - 1, db.message()),
            "{text}"
        );
    }
}

const OPERATORS: &[&str] = &[
    " AND ",
    " OR ",
    "NOT ",
    "IS NULL",
    "IS NOT NULL",
    "IS TRUE",
    "IS NOT TRUE",
    "IS FALSE",
    "IS NOT FALSE",
    "IS DISTINCT FROM",
    "IS NOT DISTINCT FROM",
    " IN (",
    "NOT IN (",
    "BETWEEN",
    "NOT BETWEEN",
    " LIKE ",
    "NOT LIKE",
    "ILIKE",
    "ESCAPE",
    " = ",
    " <> ",
    " != ",
    " < ",
    " <= ",
    " > ",
    " >= ",
    " + ",
    " - ",
    " * ",
    " / ",
    " % ",
    "-i",
    " || ",
    "lower(",
    "upper(",
    "length(",
    "coalesce(",
    "::",
    "CAST(",
    "ANY(",
    "ALL(",
    " @> ",
    " <@ ",
    " && ",
    "->>",
    "->'",
    "ARRAY[",
    "NULL",
    "(d + ",
    "(d - d)",
    "(ts + ",
    "(tz - ",
    "jb @> ",
    "jb <@ ",
    "jb ? ",
    "jb ?| ",
    "jb ?& ",
    "jb = ",
];

/// The three kinds of database whose case mapping (`lower`, `upper`, `ILIKE`) differs: C
/// (ASCII only), libc C.UTF-8 (character by character) and ICU root (full mapping).
const DATABASES: &[(&str, &str)] = &[
    (
        "cdb",
        "CREATE DATABASE cdb TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'",
    ),
    (
        "utf8db",
        "CREATE DATABASE utf8db TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8'",
    ),
    (
        "icu",
        "CREATE DATABASE icu TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C.UTF-8'",
    ),
];

/// Whether the user's text can mean something else on a database whose collation does not
/// sort byte-wise: our language orders text as `COLLATE "C"` does (WHERE.md), Postgres by the
/// database's collation. Equality, `LIKE`, `ILIKE` and case mapping do not depend on it.
fn orders_by_collation(text: &str) -> bool {
    [" < ", " <= ", " > ", " >= ", "BETWEEN"]
        .iter()
        .any(|op| text.contains(op))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluator_and_rebuilt_sql_agree_with_postgres_on_random_rows_and_expressions() {
    let seed = seed();
    eprintln!("where_differential: seed {seed} (replay with SHAPESYNC_SEED={seed})");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);

    let db = TestDb::new("where_diff").await;
    let admin = db.connect().await;
    let mut clients = Vec::new();
    for (name, sql) in DATABASES {
        admin
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        clients.push((*name, open(&db, name).await));
    }
    let icu = &clients[2].1;
    let icu_order: bool = icu
        .query_one("SELECT 'a' < 'B' AND 'é' < 'f'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        icu_order,
        "the ICU database must not sort byte-wise, or it proves nothing"
    );

    let inputs: Vec<Row> = (0..ROWS).map(|_| data::random_row(&mut rng)).collect();
    for (_, client) in &clients {
        load_rows(client, &inputs).await;
    }
    let rows = read_rows(icu).await;
    assert_eq!(rows.len(), ROWS);
    for (name, client) in &clients {
        assert_eq!(read_rows(client).await, rows, "{name} prints the same rows");
    }

    check_syntax_positions(icu).await;

    let table = data::table_schema();
    let wanted: usize = std::env::var("SHAPESYNC_DIFF_EXPRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2500);
    let mut texts = Vec::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut generator = Gen { rng: &mut rng };
    let mut generated = 0;
    while texts.len() < wanted {
        generated += 1;
        let text = generator.boolean(3);
        match WhereClause::parse(&text, &BTreeMap::new(), &table) {
            Ok(_) => texts.push(text),
            Err(e) => {
                let msg = e.to_string();
                let key: String = msg
                    .split(':')
                    .next_back()
                    .unwrap_or(&msg)
                    .chars()
                    .take(60)
                    .collect();
                *refused.entry(key).or_default() += 1;
            }
        }
    }

    let mut reports = Vec::new();
    for (name, client) in &clients {
        // every clause parsed now maps case as this database does
        let ctype = proxy::postgres::ctype::read(client).await.expect("ctype");
        assert!(ctype.unsupported().is_none(), "{name}: {ctype:?}");
        eprintln!("where_differential: {name}: case mapping {ctype:?}");
        set_database_ctype(Arc::new(ctype));
        let cases: Vec<Case> = texts
            .iter()
            .map(|text| Case {
                text: text.clone(),
                clause: WhereClause::parse(text, &BTreeMap::new(), &table)
                    .unwrap_or_else(|e| panic!("{name}: {text}: {e}")),
            })
            .collect();
        let mut report = Report::default();
        check_rebuilt(client, &cases, &rows, &mut report).await;
        let original: Vec<Case> = cases
            .into_iter()
            .filter(|c| *name == "cdb" || !orders_by_collation(&c.text))
            .collect();
        check_original(client, &original, &rows, &mut report).await;
        eprintln!(
            "where_differential: {name}: {} (expression, row) cases compared with the rebuilt SQL, {} with \
             the original text ({} expressions skipped: Postgres raised an error)",
            report.compared, report.original_compared, report.original_skipped,
        );
        reports.push((*name, report));
    }

    let missing: Vec<&&str> = OPERATORS
        .iter()
        .filter(|op| !texts.iter().any(|t| t.contains(**op)))
        .collect();
    let nulls = rows.iter().flatten().filter(|v| v.is_none()).count();
    eprintln!(
        "where_differential: seed {seed}: {} expressions accepted of {generated} generated; {nulls} NULL cells; {:?}",
        texts.len(),
        started.elapsed()
    );
    let mut top: Vec<(&String, &usize)> = refused.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    eprintln!("most common refusals: {:?}", &top[..top.len().min(8)]);

    for (name, report) in &reports {
        assert!(
            report.rebuilt_errors.is_empty(),
            "seed {seed}: {name}: rebuilt SQL raised errors:\n{}",
            report.rebuilt_errors.join("\n")
        );
        assert!(
            report.disagreements.is_empty(),
            "seed {seed}: {name}: disagreements:\n{}",
            report.disagreements.join("\n")
        );
        assert!(
            report.compared >= 20_000,
            "{name}: only {} cases compared",
            report.compared
        );
    }
    assert!(
        texts.len() * 10 >= generated * 6,
        "the generator is mostly refused: {} of {generated}",
        texts.len()
    );
    assert!(missing.is_empty(), "operators never generated: {missing:?}");
    assert!(nulls > 0);
}
