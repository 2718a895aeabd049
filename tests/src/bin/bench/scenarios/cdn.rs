//! `cdn_fanout_10k` and `cdn_initial_10k`: shapesync behind the shipped caches (Debian's
//! nginx with `nginx.conf`, Debian's Varnish with `varnish.vcl`, each run as `tests/run`
//! installs them), on this machine, with the clients in this process.
//!
//! - `cdn_fanout_10k`: 10,000 clients long-poll one shape through the cache, each on a
//!   kept-alive connection of its own, each following the offsets and cursors the answers give
//!   it (as the Electric client does; they all read the same URLs). 100 commits, one at a
//!   time: each waits until every client has the change and the clients have had 300 ms to
//!   poll again. Figures: requests the proxy answered per commit (its own
//!   `shapesync_http_requests_total`), commit acknowledged → each client's answer read
//!   (p50 / p99 over every client and commit), the proxy's CPU per commit, and the CPU per
//!   answer of the cache's processes and of this process (its clients), which share the two
//!   cores. `BENCH_CDN_KINDS` (e.g. `varnish_fanout`) runs some of the caches only, and
//!   `BENCH_VARNISH_FLAGS` adds `varnishd` flags to the fan-out ones, to try settings.
//! - `cdn_initial_10k`: 10,000 clients fetch a 10,000-row shape from `offset=-1` to up-to-date
//!   through the cache, 1,000 at a time; the bytes the proxy sent to the cache are counted by
//!   a relay between the two, against the bytes of one client's copy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tests::cache_edge::{CacheEdge, Kind};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::Bench;
use crate::figures::{Figure, Target};
use crate::http_wire;
use crate::proxy_child::ProxyChild;
use crate::scenarios::latency::signed_ms;
use crate::sse;
use crate::stats;

/// The caches of the fan-out: the shipped files as they are, and Varnish with the thread
/// flags `varnish.vcl` gives for long-poll fan-out.
const FANOUT_KINDS: [Kind; 3] = [Kind::Nginx, Kind::Varnish, Kind::VarnishFanout];
/// The caches of the initial sync (threads do not matter there).
const KINDS: [Kind; 2] = [Kind::Nginx, Kind::Varnish];

fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::Nginx => "nginx",
        Kind::Varnish => "varnish",
        Kind::VarnishFanout => "varnish_fanout",
    }
}

pub async fn fanout(bench: &mut Bench) -> anyhow::Result<()> {
    let clients = bench.scale.of(10_000);
    let commits = bench.scale.of(100).max(10) as i64;
    let db = bench.cluster.database("cdn_fanout_10k").await?;
    let sql = db.connect().await?;
    sql.batch_execute("CREATE TABLE fan (id int8 PRIMARY KEY, title text NOT NULL)")
        .await?;
    let insert = sql
        .prepare("INSERT INTO fan (id, title) VALUES ($1, 'to every device')")
        .await?;
    let mut next_id = 1_i64;
    let only = std::env::var("BENCH_CDN_KINDS").unwrap_or_default();
    for kind in FANOUT_KINDS {
        if !only.is_empty() && !only.split(',').any(|k| k == label(kind)) {
            continue;
        }
        let proxy =
            ProxyChild::start_on_slot(&db, &format!("cdn_fanout_{}", label(kind)), &[]).await?;
        let cache = CacheEdge::start(kind, proxy.addr.port()).await;
        let edge: SocketAddr = ([127, 0, 0, 1], cache.port).into();
        let start = sse::fetch(edge, "table=fan", |_| {}).await?;
        let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel::<(i64, Instant)>();
        let retries = Arc::new(AtomicU64::new(0));
        let connections = connect_many(edge, clients).await?;
        let tasks: Vec<_> = connections
            .into_iter()
            .map(|connection| {
                tokio::spawn(long_poll(
                    edge,
                    connection,
                    start.clone(),
                    arrivals_tx.clone(),
                    retries.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let requests_before = origin_requests(proxy.addr).await?;
        let cpu_before = proxy.cpu_seconds()?;
        let cache_cpu_before = cache.cpu_seconds();
        let clients_cpu_before = own_cpu_seconds();
        let mut samples = Vec::with_capacity(clients * commits as usize);
        for _ in 0..commits {
            let id = next_id;
            next_id += 1;
            sql.execute(&insert, &[&id]).await?;
            let acked = Instant::now();
            let mut got = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while got < clients {
                match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                    Ok(Some((arrived, at))) if arrived == id => {
                        got += 1;
                        samples.push(signed_ms(acked, at));
                    }
                    Ok(Some(_)) => {}
                    _ => bail!(
                        "{}: commit {id} reached {got} of {clients} clients",
                        label(kind)
                    ),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let cpu = proxy.cpu_seconds()? - cpu_before;
        let cache_cpu = cache.cpu_seconds() - cache_cpu_before;
        let clients_cpu = own_cpu_seconds() - clients_cpu_before;
        let requests = origin_requests(proxy.addr).await? - requests_before;
        for task in tasks {
            task.abort();
        }
        drop(cache);
        proxy.stop().await;
        let run = FanoutRun {
            kind,
            clients,
            commits,
            requests,
            cpu,
            cache_cpu,
            clients_cpu,
            retries: retries.load(Ordering::Relaxed),
        };
        report_fanout(bench, &run, samples);
    }
    Ok(())
}

/// What one cache's fan-out run counted.
struct FanoutRun {
    kind: Kind,
    clients: usize,
    commits: i64,
    /// Requests the proxy answered over the commits.
    requests: u64,
    /// The proxy's CPU seconds over the commits.
    cpu: f64,
    /// The cache's CPU seconds over the commits (all its processes).
    cache_cpu: f64,
    /// This process's CPU seconds over the commits: the clients, mostly.
    clients_cpu: f64,
    retries: u64,
}

/// CPU seconds this process has used.
fn own_cpu_seconds() -> f64 {
    tests::process_stat::read(std::process::id()).map_or(0.0, |s| s.cpu_seconds)
}

fn report_fanout(bench: &mut Bench, run: &FanoutRun, mut samples: Vec<f64>) {
    let FanoutRun {
        kind,
        clients,
        commits,
        requests,
        cpu,
        cache_cpu,
        clients_cpu,
        retries,
    } = *run;
    let name = format!("cdn_fanout_10k.{}", label(kind));
    stats::sort(&mut samples);
    let what = format!(
        "{clients} long-poll clients of one shape through {} ({}), {commits} commits, \
         {retries} requests retried",
        label(kind),
        match kind {
            Kind::VarnishFanout => "varnish.vcl with its fan-out flags",
            _ => "the shipped config",
        }
    );
    bench.report.add(
        Figure::new(
            format!("{name}.origin_per_commit"),
            requests as f64 / commits as f64,
            "requests",
        )
        .target(Target::AtMost(2.0))
        .note(format!(
            "{what}: requests the proxy answered per commit ({requests} in all)"
        )),
    );
    for (q, label_q, target) in [(0.5, "p50", 100.0), (0.99, "p99", 500.0)] {
        bench.report.add(
            Figure::new(
                format!("{name}.{label_q}"),
                stats::quantile(&samples, q),
                "ms",
            )
            .target(Target::AtMost(target))
            .note(format!(
                "{what}: commit acknowledged → answer read by each client, {label_q} of {} \
                 arrivals (max {:.1} ms)",
                samples.len(),
                samples.last().copied().unwrap_or(0.0)
            )),
        );
    }
    bench.report.add(
        Figure::new(
            format!("{name}.proxy_cpu_per_commit"),
            cpu * 1000.0 / commits as f64,
            "ms",
        )
        .note(format!(
            "{what}: the proxy's CPU time over the commits / commits"
        )),
    );
    let answers = (clients as f64 * commits as f64).max(1.0);
    for (what_cpu, seconds, whose) in [
        ("cache_cpu_per_answer", cache_cpu, "the cache's processes"),
        (
            "clients_cpu_per_answer",
            clients_cpu,
            "the bench's own process (its clients)",
        ),
    ] {
        bench.report.add(
            Figure::new(format!("{name}.{what_cpu}"), seconds * 1e6 / answers, "µs").note(format!(
                "{what}: CPU time of {whose} over the commits / answers ({seconds:.1} s)"
            )),
        );
    }
    bench
        .report
        .distribution(format!("cdn_fanout_10k ({})", label(kind)), samples);
}

/// `count` connections to `addr`, 256 being opened at a time (a burst of thousands of
/// connects overflows the listen backlog and costs the late ones a SYN retry).
async fn connect_many(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<TcpStream>> {
    futures_util::stream::iter(0..count)
        .map(|_| async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            // Closed with a reset: thousands of connections leave no TIME_WAIT behind.
            stream.set_zero_linger()?;
            anyhow::Ok(stream)
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// One client: long-polls from `from` on, reporting each change's id with the time its
/// answer was read. A failed request (connection closed, a 5xx) is retried on a new
/// connection, as a real client does, and counted in `retries`.
async fn long_poll(
    edge: SocketAddr,
    connection: TcpStream,
    from: sse::Subscription,
    arrivals: mpsc::UnboundedSender<(i64, Instant)>,
    retries: Arc<AtomicU64>,
) {
    let mut connection = Some(connection);
    let mut offset = from.offset.clone();
    let mut cursor = String::new();
    loop {
        let path = format!(
            "/v1/shape?{}&handle={}&offset={offset}&cursor={cursor}&live=true",
            from.query, from.handle
        );
        match poll_once(edge, connection.take(), &path).await {
            Ok((answer, next)) => {
                if let Some(id) = answer.change {
                    let _ = arrivals.send((id, answer.read_at));
                }
                offset = answer.offset;
                cursor = answer.cursor;
                connection = next;
            }
            Err(_) => {
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What one long-poll answer told a client.
struct Answer {
    change: Option<i64>,
    read_at: Instant,
    offset: String,
    cursor: String,
}

/// One long-poll on `connection` (a new one when `None`); the connection back for the next.
async fn poll_once(
    edge: SocketAddr,
    connection: Option<TcpStream>,
    path: &str,
) -> anyhow::Result<(Answer, Option<TcpStream>)> {
    let stream = match connection {
        Some(stream) => stream,
        None => {
            let stream = TcpStream::connect(edge).await?;
            stream.set_nodelay(true)?;
            stream.set_zero_linger()?;
            stream
        }
    };
    let mut response = http_wire::get_on(stream, edge, path, true).await?;
    let mut body = Vec::new();
    let mut read_at = Instant::now();
    while response
        .read_body(|bytes, at| {
            body.extend_from_slice(bytes);
            read_at = at;
        })
        .await?
    {}
    if response.head.status != 200 {
        bail!("{path}: status {}", response.head.status);
    }
    let change = (sse::kind(body.get(1..).unwrap_or_default()) == sse::Kind::Change)
        .then(|| sse::key_id(&body))
        .flatten();
    let answer = Answer {
        change,
        read_at,
        offset: response
            .head
            .header("electric-offset")
            .context("electric-offset")?
            .to_owned(),
        cursor: response
            .head
            .header("electric-cursor")
            .unwrap_or_default()
            .to_owned(),
    };
    Ok((answer, response.into_connection()))
}

/// `shapesync_http_requests_total` of the proxy at `addr`.
async fn origin_requests(addr: SocketAddr) -> anyhow::Result<u64> {
    let (_, body) = http_wire::get_all(addr, "/metrics").await?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| l.strip_prefix("shapesync_http_requests_total "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map(|n| n as u64)
        .context("no shapesync_http_requests_total in /metrics")
}

pub async fn initial(bench: &mut Bench) -> anyhow::Result<()> {
    let clients = bench.scale.of(10_000);
    let rows = bench.scale.of(10_000);
    let db = bench.cluster.database("cdn_initial_10k").await?;
    let sql = db.connect().await?;
    sql.batch_execute(&format!(
        "CREATE TABLE docs (id int8 PRIMARY KEY, title text NOT NULL, body text NOT NULL);
         INSERT INTO docs SELECT g, 'document ' || g, repeat('x', 40) || g
         FROM generate_series(1, {rows}) g;"
    ))
    .await?;
    for kind in KINDS {
        let proxy =
            ProxyChild::start_on_slot(&db, &format!("cdn_initial_{}", label(kind)), &[]).await?;
        let relay = CountingRelay::start(proxy.addr).await?;
        let cache = CacheEdge::start(kind, relay.port).await;
        let edge: SocketAddr = ([127, 0, 0, 1], cache.port).into();
        let started = Instant::now();
        let copies: Vec<u64> = futures_util::stream::iter(0..clients)
            .map(|_| async move {
                let mut bytes = 0u64;
                sse::fetch(edge, "table=docs", |b| bytes += b.len() as u64).await?;
                anyhow::Ok(bytes)
            })
            .buffer_unordered(1000)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let elapsed = started.elapsed();
        let copy = copies.iter().copied().max().unwrap_or(0);
        let origin = relay.bytes.load(Ordering::Relaxed);
        drop(cache);
        proxy.stop().await;
        bench.report.add(
            Figure::new(
                format!("cdn_initial_10k.{}", label(kind)),
                origin as f64 / copy.max(1) as f64,
                "copies",
            )
            .target(Target::AtMost(1.5))
            .note(format!(
                "{clients} clients fetch a {rows}-row shape from offset=-1 to up-to-date \
                 through {} (1,000 at a time, no Accept-Encoding): the proxy sent {origin} \
                 bytes (responses with their heads; gzipped where the cache asks for it) for a \
                 shape of {copy} body bytes; all done in {:.1} s",
                label(kind),
                elapsed.as_secs_f64()
            )),
        );
    }
    Ok(())
}

/// A TCP relay in front of the proxy that counts the bytes the proxy sends.
struct CountingRelay {
    port: u16,
    bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingRelay {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        let task = tokio::spawn(async move {
            while let Ok((downstream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut down_read, mut down_write) = downstream.into_split();
                    let (mut up_read, mut up_write) = upstream.into_split();
                    let requests = tokio::io::copy(&mut down_read, &mut up_write);
                    let answers = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            use tokio::io::AsyncReadExt;
                            let n = up_read.read(&mut buf).await?;
                            if n == 0 {
                                break;
                            }
                            counted.fetch_add(n as u64, Ordering::Relaxed);
                            down_write.write_all(&buf[..n]).await?;
                        }
                        down_write.shutdown().await
                    };
                    let _ = tokio::join!(requests, answers);
                });
            }
        });
        Ok(Self { port, bytes, task })
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
