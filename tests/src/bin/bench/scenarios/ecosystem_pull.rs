//! `rxdb_pull_100k` and `watermelon_pull_100k`: a device's first sync of a 100,000-row table
//! through the RxDB and WatermelonDB endpoints, by one HTTP client (reqwest, gzip accepted and
//! decoded as a browser does), on a proxy of its own per round.
//!
//! The table is realistic: a text `id` (`doc-0000001`), two texts, a boolean, an `int4`, a
//! `numeric(12,2)`, a `jsonb` object and a `timestamptz`.
//!
//! - RxDB: `GET /v1/rxdb/docs/pull?limit=1000` from no checkpoint, then from each checkpoint
//!   received, until a page comes back empty (RxDB's pull iteration with `batchSize` 1000).
//! - WatermelonDB: one `GET /v1/watermelon/pull?last_pulled_at=null&schema_version=1&tables=docs`.
//!
//! Cold: the first sync on a new proxy, whose first request makes the shape and takes its
//! snapshot. Warm: the same sync again from scratch on the same proxy (shape snapshotted).
//! Each is reported two ways:
//! - end to end (`rxdb_pull_100k`, `….warm`): rows / wall time from the first request sent to
//!   the last response parsed into `serde_json::Value`;
//! - server side (`….server`, `….warm_server`): rows / the sum over requests of send → last
//!   body byte received (and gunzipped, which reqwest does as it reads). The client does
//!   nothing else while a request is out, so this is the proxy's time plus the loopback
//!   transfer; the JSON parse is outside it.
//!
//! WatermelonDB's response size is reported as JSON (`….bytes`) and as sent gzipped
//! (`….gzip_bytes`, one more warm request read raw). Every round checks that every row came
//! back, exactly once. `--rounds` rounds (on a fresh proxy, same table); medians are reported,
//! every round in the note, with the proxy's CPU time over the cold sync.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::Bench;
use crate::cluster::Database;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::recvlogical;

/// The sync protocol a scenario speaks (the push scenarios too).
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    Rxdb,
    Watermelon,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Rxdb => "rxdb_pull_100k",
            Protocol::Watermelon => "watermelon_pull_100k",
        }
    }

    /// The name of its push scenario.
    pub fn push_name(self) -> &'static str {
        match self {
            Protocol::Rxdb => "rxdb_push",
            Protocol::Watermelon => "watermelon_push",
        }
    }
}

/// RxDB's `batchSize`, as a user with a big collection sets it.
const RXDB_LIMIT: usize = 1000;
/// The server-side target of issue 17.
const TARGET_ROWS_PER_SECOND: f64 = 100_000.0;

/// One sync: what was timed and received.
#[derive(Debug, Clone, Copy)]
struct Sync {
    wall: Duration,
    server: Duration,
    requests: usize,
    /// JSON bytes received (after gunzip).
    bytes: u64,
    /// The first request's send → last byte (the cold one takes the snapshot).
    first: Duration,
}

struct Round {
    cold: Sync,
    warm: Sync,
    cold_proxy_cpu: f64,
    warm_proxy_cpu: f64,
    gzip_bytes: Option<u64>,
}

pub async fn run(bench: &mut Bench, protocol: Protocol) -> anyhow::Result<()> {
    let name = protocol.name();
    let rows = bench.scale.of(100_000);
    let db = bench.cluster.database(name).await?;
    let client = db.connect().await?;
    create_docs(&client, "docs", rows).await?;
    let mut rounds = Vec::new();
    for round in 0..bench.rounds {
        rounds.push(run_round(&db, &client, protocol, rows, round).await?);
    }
    report(bench, protocol, rows, &rounds);
    Ok(())
}

/// The table both pull scenarios sync, with `rows` rows.
pub async fn create_docs(
    client: &tokio_postgres::Client,
    table: &str,
    rows: usize,
) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id text PRIMARY KEY, owner_id text NOT NULL,
                                  title text NOT NULL, done boolean NOT NULL,
                                  priority int4 NOT NULL, price numeric(12,2) NOT NULL,
                                  meta jsonb NOT NULL,
                                  due_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await?;
    if rows > 0 {
        client
            .execute(
                &format!(
                    "INSERT INTO {table} (id, owner_id, title, done, priority, price, meta)
                     SELECT 'doc-' || lpad(g::text, 7, '0'), 'owner ' || (g % 1000),
                            'a document titled number ' || g, g % 3 = 0, g % 5,
                            (g % 100000) / 100.0,
                            jsonb_build_object('tags', jsonb_build_array('t' || (g % 10), 'bench'),
                                               'rank', g % 100, 'archived', g % 7 = 0)
                     FROM generate_series(1, $1::int8) g"
                ),
                &[&(rows as i64)],
            )
            .await?;
    }
    client
        .batch_execute(&format!("VACUUM ANALYZE {table}"))
        .await?;
    Ok(())
}

async fn run_round(
    db: &Database,
    client: &tokio_postgres::Client,
    protocol: Protocol,
    rows: usize,
    round: usize,
) -> anyhow::Result<Round> {
    let slot = format!("{}_{round}", protocol.name());
    let proxy = ProxyChild::start_on_slot(db, &slot, &[]).await?;
    let base = format!("http://{}", proxy.addr);
    let http = reqwest::Client::new();
    let result = async {
        let cpu_before = proxy.cpu_seconds()?;
        let cold = sync(&http, &base, protocol, rows).await?;
        let cold_proxy_cpu = proxy.cpu_seconds()? - cpu_before;
        let cpu_before = proxy.cpu_seconds()?;
        let warm = sync(&http, &base, protocol, rows).await?;
        let warm_proxy_cpu = proxy.cpu_seconds()? - cpu_before;
        let gzip_bytes = match protocol {
            Protocol::Rxdb => None,
            Protocol::Watermelon => Some(gzip_size(&base).await?),
        };
        anyhow::Ok(Round {
            cold,
            warm,
            cold_proxy_cpu,
            warm_proxy_cpu,
            gzip_bytes,
        })
    }
    .await;
    proxy.stop().await;
    recvlogical::drop_slot(client, &slot).await;
    result
}

/// One first sync from scratch; fails unless every row came back exactly once.
async fn sync(
    http: &reqwest::Client,
    base: &str,
    protocol: Protocol,
    rows: usize,
) -> anyhow::Result<Sync> {
    let mut ids = std::collections::HashSet::with_capacity(rows);
    let mut timed = Sync {
        wall: Duration::ZERO,
        server: Duration::ZERO,
        requests: 0,
        bytes: 0,
        first: Duration::ZERO,
    };
    let started = Instant::now();
    match protocol {
        Protocol::Rxdb => {
            let mut checkpoint: Option<Value> = None;
            loop {
                // As RxDB's handler builds it (URLSearchParams).
                let mut query = form_urlencoded::Serializer::new(String::new());
                query.append_pair("limit", &RXDB_LIMIT.to_string());
                if let Some(checkpoint) = &checkpoint {
                    query.append_pair("checkpoint", &checkpoint.to_string());
                }
                let url = format!("{base}/v1/rxdb/docs/pull?{}", query.finish());
                let page = get_json(http, &url, &mut timed).await?;
                let documents = page["documents"]
                    .as_array()
                    .with_context(|| format!("no documents in {page}"))?;
                if documents.is_empty() {
                    break;
                }
                for doc in documents {
                    if doc["_deleted"] != false {
                        bail!("a document of the first sync is deleted: {doc}");
                    }
                    insert_id(&mut ids, doc)?;
                }
                checkpoint = Some(page["checkpoint"].clone());
            }
        }
        Protocol::Watermelon => {
            let url = format!(
                "{base}/v1/watermelon/pull?last_pulled_at=null&schema_version=1&tables=docs"
            );
            let pulled = get_json(http, &url, &mut timed).await?;
            let docs = &pulled["changes"]["docs"];
            // Every row is in `updated` (`created` stays empty; see proxy/PROTOCOL.md).
            let updated = docs["updated"]
                .as_array()
                .with_context(|| format!("no docs.updated in the pull: {docs}"))?;
            if docs["created"] != serde_json::json!([]) || docs["deleted"] != serde_json::json!([])
            {
                bail!("a first pull has only updated records");
            }
            if !pulled["timestamp"].is_u64() {
                bail!("no timestamp in the pull");
            }
            for record in updated {
                insert_id(&mut ids, record)?;
            }
        }
    }
    timed.wall = started.elapsed();
    if ids.len() != rows {
        bail!("the sync brought {} rows, not {rows}", ids.len());
    }
    Ok(timed)
}

fn insert_id(ids: &mut std::collections::HashSet<String>, doc: &Value) -> anyhow::Result<()> {
    let id = doc["id"]
        .as_str()
        .with_context(|| format!("a document without an id: {doc}"))?;
    if !ids.insert(id.to_owned()) {
        bail!("{id} came twice");
    }
    Ok(())
}

/// GET, timing send → last body byte into `timed`, then parses (untimed).
async fn get_json(http: &reqwest::Client, url: &str, timed: &mut Sync) -> anyhow::Result<Value> {
    let sent = Instant::now();
    let response = http.get(url).send().await.context("GET")?;
    let status = response.status();
    let body = response.bytes().await.context("the response body")?;
    let took = sent.elapsed();
    if timed.requests == 0 {
        timed.first = took;
    }
    timed.server += took;
    timed.requests += 1;
    timed.bytes += body.len() as u64;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).context("the response is not JSON")
}

/// Bytes of WatermelonDB's full pull as sent with `Accept-Encoding: gzip`.
async fn gzip_size(base: &str) -> anyhow::Result<u64> {
    let raw = reqwest::Client::builder().gzip(false).build()?;
    let response = raw
        .get(format!(
            "{base}/v1/watermelon/pull?last_pulled_at=null&schema_version=1&tables=docs"
        ))
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body = response.bytes().await?;
    if encoding.as_deref() != Some("gzip") {
        bail!("the pull was not gzipped (content-encoding {encoding:?})");
    }
    Ok(body.len() as u64)
}

fn report(bench: &mut Bench, protocol: Protocol, rows: usize, rounds: &[Round]) {
    let name = protocol.name();
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let median = |pick: &dyn Fn(&Round) -> Duration| {
        let mut rates: Vec<f64> = rounds.iter().map(|r| rate(pick(r))).collect();
        rates.sort_by(f64::total_cmp);
        let all = rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        (rates[rates.len() / 2], all)
    };
    let what = match protocol {
        Protocol::Rxdb => format!(
            "{rows} rows by RxDB pull, limit {RXDB_LIMIT}, {} requests (the last one empty)",
            rounds[0].cold.requests
        ),
        Protocol::Watermelon => format!("{rows} rows in one WatermelonDB pull"),
    };
    let n = rounds.len();
    let cpu = |pick: fn(&Round) -> f64| {
        rounds
            .iter()
            .map(|r| format!("{:.2}", pick(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let first = rounds
        .iter()
        .map(|r| format!("{:.0}", r.cold.first.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(", ");
    let (value, all) = median(&|r| r.cold.wall);
    bench
        .report
        .add(Figure::new(name, value, "rows/s").note(format!(
        "cold (first request makes the shape and its snapshot), end to end: first request sent → \
         last response parsed; {what}; median of {n} rounds ({all})"
    )));
    let (value, all) = median(&|r| r.cold.server);
    bench.report.add(
        Figure::new(format!("{name}.server"), value, "rows/s")
            .target(Target::AtLeast(TARGET_ROWS_PER_SECOND))
            .note(format!(
                "cold, server side: sum of request send → last body byte at the client (parse \
                 excluded); median of {n} rounds ({all}); first request {first} ms; proxy CPU \
                 over the cold sync {} s",
                cpu(|r| r.cold_proxy_cpu)
            )),
    );
    let (value, all) = median(&|r| r.warm.wall);
    bench.report.add(
        Figure::new(format!("{name}.warm"), value, "rows/s").note(format!(
            "warm (shape already snapshotted), end to end; median of {n} rounds ({all})"
        )),
    );
    let (value, all) = median(&|r| r.warm.server);
    bench.report.add(
        Figure::new(format!("{name}.warm_server"), value, "rows/s")
            .target(Target::AtLeast(TARGET_ROWS_PER_SECOND))
            .note(format!(
                "warm, server side (sum of send → last body byte); median of {n} rounds ({all}); \
                 proxy CPU over the warm sync {} s",
                cpu(|r| r.warm_proxy_cpu)
            )),
    );
    let bytes = rounds[0].warm.bytes;
    match rounds[0].gzip_bytes {
        Some(gzip) => {
            bench.report.add(
                Figure::new(format!("{name}.bytes"), bytes as f64, "bytes").note(format!(
                    "the JSON of the pull ({:.0} bytes/row)",
                    bytes as f64 / rows as f64
                )),
            );
            bench.report.add(
                Figure::new(format!("{name}.gzip_bytes"), gzip as f64, "bytes").note(format!(
                    "the same pull as sent with Accept-Encoding: gzip ({:.0} bytes/row)",
                    gzip as f64 / rows as f64
                )),
            );
        }
        None => println!(
            "   ({name}: {bytes} JSON bytes over {} requests, {:.0} bytes/row)",
            rounds[0].warm.requests,
            bytes as f64 / rows as f64
        ),
    }
}
