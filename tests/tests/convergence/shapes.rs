//! The shapes the convergence test follows, what Postgres says each must hold, and the checks
//! on what the Electric clients delivered.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};
use shapes::offset::Offset;
use tests::shape_consumer::ShapeSpec;
use tokio_postgres::Client;

/// A shape and the SQL that gives its rows.
#[derive(Debug, Clone)]
pub struct ShapeCase {
    pub name: &'static str,
    pub spec: ShapeSpec,
    /// The selected columns, in table order.
    pub columns: &'static [&'static str],
    /// The shape's `where` as SQL with the parameters written in (and the tombstone test).
    pub sql_where: &'static str,
}

const ITEM_COLUMNS: &[&str] = &["id", "owner", "n", "title", "body"];
const NOTE_COLUMNS: &[&str] = &["id", "owner", "n", "title", "body", "deleted_at"];
const PAIR_COLUMNS: &[&str] = &["a", "b", "v"];

/// Shapes for the Rust consumers: every table, equality and range `where`s, `IN`, `LIKE`,
/// arithmetic, selected columns, `replica=full`, a tombstoned table, a composite text key.
pub fn rust_cases() -> Vec<ShapeCase> {
    let items = || ShapeSpec::table("items", &["id"]);
    let notes = || ShapeSpec::table("notes", &["id"]);
    let pairs = || ShapeSpec::table("pairs", &["a", "b"]);
    vec![
        ShapeCase {
            name: "items",
            spec: items(),
            columns: ITEM_COLUMNS,
            sql_where: "true",
        },
        ShapeCase {
            name: "items owner = ann",
            spec: items().filter("owner = $1", &["ann"]),
            columns: ITEM_COLUMNS,
            sql_where: "owner = 'ann'",
        },
        ShapeCase {
            name: "items n < 50, 3 columns, replica full",
            spec: items()
                .filter("n < 50", &[])
                .columns("id,owner,n")
                .replica_full(),
            columns: &["id", "owner", "n"],
            sql_where: "n < 50",
        },
        ShapeCase {
            name: "items bob/cid with n % 3 = 0, replica full",
            spec: items()
                .filter("owner IN ('bob', 'cid') AND n % 3 = 0", &[])
                .replica_full(),
            columns: ITEM_COLUMNS,
            sql_where: "owner IN ('bob', 'cid') AND n % 3 = 0",
        },
        ShapeCase {
            name: "items title LIKE a%",
            spec: items().filter("title LIKE 'a%'", &[]).columns("id,title"),
            columns: &["id", "title"],
            sql_where: "title COLLATE \"C\" LIKE 'a%'",
        },
        ShapeCase {
            name: "notes (tombstoned)",
            spec: notes(),
            columns: NOTE_COLUMNS,
            sql_where: "deleted_at IS NULL",
        },
        ShapeCase {
            name: "notes owner = ann, replica full (tombstoned)",
            spec: notes().filter("owner = 'ann'", &[]).replica_full(),
            columns: NOTE_COLUMNS,
            sql_where: "owner = 'ann' AND deleted_at IS NULL",
        },
        // Routing needs the unchanged TOASTed body of updates that do not touch it.
        ShapeCase {
            name: "notes with long bodies, 2 columns (tombstoned)",
            spec: notes().filter("length(body) > 1000", &[]).columns("id,n"),
            columns: &["id", "n"],
            sql_where: "length(body) > 1000 AND deleted_at IS NULL",
        },
        ShapeCase {
            name: "pairs",
            spec: pairs(),
            columns: PAIR_COLUMNS,
            sql_where: "true",
        },
        ShapeCase {
            name: "pairs v LIKE %1%, replica full",
            spec: pairs().filter("v LIKE '%1%'", &[]).replica_full(),
            columns: PAIR_COLUMNS,
            sql_where: "v COLLATE \"C\" LIKE '%1%'",
        },
    ]
}

/// Shapes for the Electric clients (narrow: the client reports its whole state after every
/// batch): one followed with SSE, one with long-polling.
pub fn electric_cases() -> Vec<(ShapeCase, bool)> {
    vec![
        (
            ShapeCase {
                name: "electric SSE: items owner = ann",
                spec: ShapeSpec::table("items", &["id"])
                    .filter("owner = $1", &["ann"])
                    .columns("id,owner,n,title"),
                columns: &["id", "owner", "n", "title"],
                sql_where: "owner = 'ann'",
            },
            true,
        ),
        (
            ShapeCase {
                name: "electric long-poll: notes of ann and bob",
                spec: ShapeSpec::table("notes", &["id"])
                    .filter("owner IN ('ann', 'bob')", &[])
                    .columns("id,owner,n,title"),
                columns: &["id", "owner", "n", "title"],
                sql_where: "owner IN ('ann', 'bob') AND deleted_at IS NULL",
            },
            false,
        ),
    ]
}

impl ShapeCase {
    /// The rows Postgres holds for this shape: key → column → text (as the proxy prints it).
    pub async fn expected(&self, client: &Client) -> BTreeMap<String, Map<String, Value>> {
        let select: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END"))
            .collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            select.join(", "),
            self.spec.table,
            self.sql_where
        );
        let rows = client.query(&sql, &[]).await.expect("expected rows");
        rows.iter()
            .map(|row| {
                let mut map = Map::new();
                for (i, column) in self.columns.iter().enumerate() {
                    let value: Option<String> = row.get(i);
                    map.insert(
                        (*column).to_owned(),
                        value.map_or(Value::Null, Value::String),
                    );
                }
                let key = key_of(&self.spec, &map);
                (key, map)
            })
            .collect()
    }

    /// The Electric client's parameters for this shape (text values: `raw`).
    pub fn electric_params(&self) -> Value {
        let mut params = Map::new();
        let mut placeholders = Map::new();
        for (name, value) in self.spec.query() {
            match name
                .strip_prefix("params[")
                .and_then(|n| n.strip_suffix(']'))
            {
                Some(n) => {
                    placeholders.insert(n.to_owned(), Value::String(value));
                }
                None => {
                    params.insert(name, Value::String(value));
                }
            }
        }
        if !placeholders.is_empty() {
            params.insert("params".into(), Value::Object(placeholders));
        }
        Value::Object(params)
    }
}

fn key_of(spec: &ShapeSpec, row: &Map<String, Value>) -> String {
    let name = shapes::schema::QualifiedName::new("public", spec.table.clone());
    shapes::wire::message_key(
        &name,
        spec.key_columns
            .iter()
            .map(|c| row.get(c).and_then(Value::as_str)),
    )
}

/// A short description of how two mirrors differ.
pub fn diff(
    got: &BTreeMap<String, Map<String, Value>>,
    want: &BTreeMap<String, Map<String, Value>>,
) -> String {
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let wrong: Vec<String> = want
        .iter()
        .filter_map(|(k, row)| {
            let other = got.get(k)?;
            (other != row).then(|| format!("{k}: got {other:?}, want {row:?}"))
        })
        .collect();
    format!(
        "{} rows vs {} expected; missing {} {:?}; extra {} {:?}; different {} {:.2000?}",
        got.len(),
        want.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    )
}

/// Checks what an Electric client delivered: offsets never go back on a handle, log changes
/// carry `txids`, and no change arrives twice, except (SSE) the ops of the transaction at a
/// `global_last_seen_lsn` the client continued from (`<lsn>_0`).
pub fn electric_violations(events: &[Value], sse: bool) -> Vec<String> {
    let mut violations = Vec::new();
    let mut handle: Option<String> = None;
    let mut last_offset: Option<Offset> = None;
    let mut seen: HashSet<(String, u64, u64)> = HashSet::new();
    let mut continued_from: HashSet<u64> = HashSet::new();
    for event in events.iter().filter(|e| e["type"] == "messages") {
        let event_handle = event["handle"].as_str().map(str::to_owned);
        if event_handle != handle {
            handle = event_handle;
            last_offset = None;
            seen.clear();
            continued_from.clear();
        }
        for message in event["messages"].as_array().into_iter().flatten() {
            let headers = &message["headers"];
            match headers["control"].as_str() {
                Some("up-to-date") => {
                    if let Some(lsn) = headers["global_last_seen_lsn"]
                        .as_str()
                        .and_then(|l| l.parse().ok())
                    {
                        continued_from.insert(lsn);
                    }
                    continue;
                }
                Some("must-refetch") => {
                    seen.clear();
                    continued_from.clear();
                    last_offset = None;
                    continue;
                }
                Some(_) => continue,
                None => {}
            }
            let Some(lsn) = headers["lsn"].as_str().and_then(|l| l.parse::<u64>().ok()) else {
                continue;
            };
            let op = headers["op_position"].as_u64().unwrap_or(u64::MAX);
            let txids_ok = headers["txids"].as_array().is_some_and(|t| !t.is_empty());
            if !txids_ok {
                violations.push(format!("log change without txids: {message}"));
            }
            let key = message["key"].as_str().unwrap_or_default().to_owned();
            let first_time = seen.insert((key, lsn, op));
            let resent_suffix = sse && continued_from.contains(&lsn);
            if !first_time && !resent_suffix {
                violations.push(format!("change delivered twice: {message}"));
            }
        }
        if let Some(offset) = event["offset"].as_str().and_then(|o| o.parse().ok()) {
            if last_offset.is_some_and(|last| offset < last) {
                violations.push(format!(
                    "offset went back from {last_offset:?} to {offset:?}"
                ));
            }
            last_offset = Some(offset);
        }
    }
    violations
}

/// The Electric client's rows as the expected map's type.
pub fn electric_rows(rows: &Map<String, Value>) -> BTreeMap<String, Map<String, Value>> {
    rows.iter()
        .map(|(k, v)| (k.clone(), v.as_object().cloned().unwrap_or_default()))
        .collect()
}

/// Counts per operation, for the summary.
pub fn operations(events: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in events.iter().filter(|e| e["type"] == "messages") {
        for message in event["messages"].as_array().into_iter().flatten() {
            if let Some(op) = message["headers"]["operation"].as_str() {
                *counts.entry(op.to_owned()).or_default() += 1;
            }
        }
    }
    counts
}
