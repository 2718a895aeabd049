//! `rxdb_push` and `watermelon_push`: 10,000 new rows pushed in batches of 100 through the
//! RxDB and WatermelonDB endpoints, into a writable table shaped as the pull scenarios' one
//! (text `id`, texts, boolean, `int4`, `numeric`, `jsonb`, `timestamptz`), on a proxy of its
//! own per round.
//!
//! - RxDB: `POST /v1/rxdb/{t}/push` with `[{"newDocumentState": doc}]` (no assumed master: new
//!   documents); a response of `[]` means all applied, each document in it is a conflict.
//! - WatermelonDB: what `synchronize()` does per batch, both timed: a pull since the last one
//!   (`GET /v1/watermelon/pull?last_pulled_at=<ts>`), then `POST
//!   /v1/watermelon/push?last_pulled_at=<its timestamp>` with `{"t": {"created": [...],
//!   "updated": [], "deleted": []}}`. Each client's first `ts` is from a whole pull of the table
//!   before timing. `{}` means all applied; rejected ids and 409s are not counted.
//!
//! Each round pushes 10,000 rows from one client, batch after batch (`rxdb_push`), then another
//! 10,000 from 4 concurrent clients, 2,500 each (`….concurrent_4`): rows applied / wall time
//! from the first request sent to the last response received. Before timing, one pull makes
//! the caller's shape (the table joins the publication, so a write's LSN comes back without
//! waiting). At the end of each part the rows in Postgres are counted: they must be exactly
//! the rows the responses said were applied. `--rounds` rounds, each on a new table and
//! proxy; medians are reported, every round in the note.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::Bench;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::recvlogical;
use crate::scenarios::ecosystem_pull::{Protocol, create_docs};

const BATCH: usize = 100;
const CLIENTS: usize = 4;
/// The target of issue 17, in batches of 100.
const TARGET_ROWS_PER_SECOND: f64 = 5_000.0;

/// One timed part: rows applied in so long.
#[derive(Debug, Clone, Copy)]
struct Part {
    applied: u64,
    elapsed: Duration,
}

impl Part {
    fn rate(self) -> f64 {
        self.applied as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn run(bench: &mut Bench, protocol: Protocol) -> anyhow::Result<()> {
    let name = protocol.push_name();
    let rows = bench.scale.of(10_000);
    let db = bench.cluster.database(name).await?;
    let client = db.connect().await?;
    let (mut sequential, mut concurrent) = (Vec::new(), Vec::new());
    for round in 0..bench.rounds {
        let table = format!("pushed_{round}");
        create_docs(&client, &table, 0).await?;
        let slot = format!("{name}_{round}");
        let proxy = ProxyChild::start_on_slot(&db, &slot, &["--writable", &table]).await?;
        let base = format!("http://{}", proxy.addr);
        let result = async {
            let http = reqwest::Client::new();
            // Makes the caller's shape of the table, untimed.
            pull_timestamp(&http, &base, protocol, &table).await?;
            let one = push_part(&base, protocol, &table, &format!("seq{round}"), 1, rows).await?;
            check_applied(&client, &table, &format!("seq{round}-"), one.applied).await?;
            let four = push_part(
                &base,
                protocol,
                &table,
                &format!("par{round}"),
                CLIENTS,
                rows,
            )
            .await?;
            check_applied(&client, &table, &format!("par{round}-"), four.applied).await?;
            anyhow::Ok((one, four))
        }
        .await;
        proxy.stop().await;
        recvlogical::drop_slot(&client, &slot).await;
        let (one, four) = result?;
        sequential.push(one);
        concurrent.push(four);
    }
    let n = bench.rounds;
    let verb = match protocol {
        Protocol::Rxdb => "POST /v1/rxdb/{t}/push",
        Protocol::Watermelon => "POST /v1/watermelon/push",
    };
    let (value, all) = median(&sequential);
    bench.report.add(
        Figure::new(name, value, "rows/s")
            .target(Target::AtLeast(TARGET_ROWS_PER_SECOND))
            .note(format!(
                "{rows} new rows, {verb} in batches of {BATCH}, one client, one batch after \
                 another: rows applied (counted in Postgres) / first request → last response; \
                 median of {n} rounds ({all})"
            )),
    );
    let (value, all) = median(&concurrent);
    bench.report.add(
        Figure::new(format!("{name}.concurrent_{CLIENTS}"), value, "rows/s")
            .target(Target::AtLeast(TARGET_ROWS_PER_SECOND))
            .note(format!(
                "{rows} new rows, {verb} in batches of {BATCH} from {CLIENTS} concurrent \
                 clients ({} rows each); median of {n} rounds ({all})",
                rows / CLIENTS
            )),
    );
    Ok(())
}

fn median(parts: &[Part]) -> (f64, String) {
    let mut rates: Vec<f64> = parts.iter().map(|p| p.rate()).collect();
    rates.sort_by(f64::total_cmp);
    let all = rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    (rates[rates.len() / 2], all)
}

/// `rows` new rows with ids `{prefix}-{client}-{n}`, from `clients` clients at once.
async fn push_part(
    base: &str,
    protocol: Protocol,
    table: &str,
    prefix: &str,
    clients: usize,
    rows: usize,
) -> anyhow::Result<Part> {
    let per_client = rows / clients;
    let mut ready = Vec::new();
    for c in 0..clients {
        let http = reqwest::Client::new();
        // The first pull of a device (RxDB: makes the shape; WatermelonDB: its timestamp).
        let since = pull_timestamp(&http, base, protocol, table).await?;
        let batches: Vec<Value> = (0..per_client)
            .collect::<Vec<_>>()
            .chunks(BATCH)
            .map(|chunk| {
                let ids = chunk.iter().map(|n| format!("{prefix}-{c}-{n:05}"));
                body(protocol, table, ids)
            })
            .collect();
        ready.push((http, since, batches));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (http, since, batches) in ready {
        let (base, table) = (base.to_owned(), table.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut applied = 0u64;
            let mut since = since;
            for batch in batches {
                if let (Protocol::Watermelon, Some(last)) = (protocol, since) {
                    since = Some(pull_since(&http, &base, &table, last).await?);
                }
                applied += push(&http, &base, protocol, &table, since, &batch).await?;
            }
            anyhow::Ok(applied)
        }));
    }
    let mut applied = 0;
    for task in tasks {
        applied += task.await??;
    }
    Ok(Part {
        applied,
        elapsed: started.elapsed(),
    })
}

/// One batch's body: new documents (RxDB) or created records (WatermelonDB).
fn body(protocol: Protocol, table: &str, ids: impl Iterator<Item = String>) -> Value {
    let docs = ids.enumerate().map(|(i, id)| {
        let meta = json!({"tags": [format!("t{}", i % 10), "bench"], "rank": i % 100});
        let mut doc = json!({
            "id": id, "owner_id": "device 7", "title": format!("written offline {i}"),
            "done": i % 3 == 0, "priority": i % 5, "price": (i as f64) / 4.0,
            "due_at": "2026-12-06T18:00:00.000Z",
        });
        match protocol {
            Protocol::Rxdb => {
                doc["meta"] = meta;
                doc["_deleted"] = json!(false);
                json!({"newDocumentState": doc})
            }
            Protocol::Watermelon => {
                // WatermelonDB keeps a jsonb column as its text.
                doc["meta"] = json!(meta.to_string());
                doc["_status"] = json!("created");
                doc["_changed"] = json!("");
                doc
            }
        }
    });
    match protocol {
        Protocol::Rxdb => Value::Array(docs.collect()),
        Protocol::Watermelon => {
            json!({table: {"created": docs.collect::<Vec<_>>(), "updated": [], "deleted": []}})
        }
    }
}

/// The rows of a batch the response says were applied.
async fn push(
    http: &reqwest::Client,
    base: &str,
    protocol: Protocol,
    table: &str,
    since: Option<u64>,
    batch: &Value,
) -> anyhow::Result<u64> {
    let url = match (protocol, since) {
        (Protocol::Rxdb, _) => format!("{base}/v1/rxdb/{table}/push"),
        (Protocol::Watermelon, Some(since)) => {
            format!("{base}/v1/watermelon/push?last_pulled_at={since}")
        }
        (Protocol::Watermelon, None) => bail!("a WatermelonDB push needs a pull first"),
    };
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body(batch.to_string())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().await.context("the push response")?;
    let sent = match protocol {
        Protocol::Rxdb => batch.as_array().map_or(0, Vec::len),
        Protocol::Watermelon => batch[table]["created"].as_array().map_or(0, Vec::len),
    } as u64;
    if protocol_conflict(protocol, status.as_u16()) {
        return Ok(0);
    }
    if !status.is_success() {
        bail!("POST {url}: {status}: {text}");
    }
    let answer: Value = serde_json::from_str(&text).context("the push response")?;
    let refused = match protocol {
        Protocol::Rxdb => answer.as_array().map(Vec::len),
        Protocol::Watermelon => match answer.get("experimentalRejectedIds") {
            None => Some(0),
            Some(ids) => Some(ids[table].as_array().map_or(0, Vec::len)),
        },
    }
    .with_context(|| format!("not a push response: {text}"))? as u64;
    Ok(sent - refused.min(sent))
}

/// WatermelonDB's 409: nothing of the batch was written.
fn protocol_conflict(protocol: Protocol, status: u16) -> bool {
    matches!(protocol, Protocol::Watermelon) && status == 409
}

/// A pull of `table` (RxDB: the first page of 1; WatermelonDB: everything, giving the
/// `timestamp` its push needs).
async fn pull_timestamp(
    http: &reqwest::Client,
    base: &str,
    protocol: Protocol,
    table: &str,
) -> anyhow::Result<Option<u64>> {
    let url = match protocol {
        Protocol::Rxdb => format!("{base}/v1/rxdb/{table}/pull?limit=1"),
        Protocol::Watermelon => {
            format!("{base}/v1/watermelon/pull?last_pulled_at=null&schema_version=1&tables={table}")
        }
    };
    let response = http.get(&url).send().await.context("the pull")?;
    let status = response.status();
    let answer: Value = response.json().await.context("the pull's body")?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {answer}");
    }
    Ok(answer["timestamp"].as_u64())
}

/// A WatermelonDB pull of the changes since `last`, as `synchronize()` makes before it
/// pushes: the new `timestamp`.
async fn pull_since(
    http: &reqwest::Client,
    base: &str,
    table: &str,
    last: u64,
) -> anyhow::Result<u64> {
    let url =
        format!("{base}/v1/watermelon/pull?last_pulled_at={last}&schema_version=1&tables={table}");
    let response = http.get(&url).send().await.context("the pull")?;
    let status = response.status();
    let answer: Value = response.json().await.context("the pull's body")?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {answer}");
    }
    answer["timestamp"]
        .as_u64()
        .with_context(|| format!("no timestamp in {answer}"))
}

/// The rows whose id starts with `prefix` must be exactly the `applied` ones.
async fn check_applied(
    client: &tokio_postgres::Client,
    table: &str,
    prefix: &str,
    applied: u64,
) -> anyhow::Result<()> {
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE starts_with(id, $1)"),
            &[&prefix],
        )
        .await?;
    let count: i64 = row.get(0);
    if count as u64 != applied {
        bail!("{count} rows {prefix}* in Postgres, but the responses said {applied} applied");
    }
    Ok(())
}
