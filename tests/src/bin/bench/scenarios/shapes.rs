//! `shapes_100k`: many small shapes, as an app with a shape per user makes them.
//!
//! A table `docs` holds 0–2 rows per owner (owner `k` has `k mod 3`), indexed by owner. Sixteen
//! clients create 100,000 shapes `owner = k` through HTTP, each request a real first fetch (`offset=-1`: the
//! proxy takes the shape's snapshot and answers it), on kept-alive connections:
//!
//! - `shapes_100k.create_rate`: shapes created per second, first request sent → last answer
//!   read (every answer is checked to hold its owner's rows);
//! - `shapes_100k.rss_per_shape`: the proxy's resident memory after the creations minus before,
//!   per shape (registry, routing index, logs' indexes, open files and buffers; no client
//!   connection is open then);
//! - `shapes_100k.open_files_per_shape`: file descriptors the proxy holds after the
//!   creations, per shape (an idle shape should hold none);
//! - `shapes_100k.disk_per_shape`: bytes of the storage directory per shape;
//! - `shapes_100k.p50` / `.p99`: commit acknowledgement → the answer of a long-poll waiting on
//!   the one shape the commit's row is in, with long-polls held on a sample of the shapes
//!   (as many as the open-file limit of one process allows beside the proxy's, at most
//!   10,000), one row updated per commit at 50 commits/s.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::Bench;
use crate::figures::{Figure, Target};
use crate::http_wire;
use crate::proxy_child::ProxyChild;
use crate::stats;

/// Concurrent creating clients.
const CREATORS: usize = 16;
const COMMITS_PER_SECOND: u64 = 50;

/// A created shape: its owner, handle and offset.
struct Created {
    owner: usize,
    handle: String,
    offset: String,
}

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    // The smoke run (`--quick`) makes a hundredth: enough to exercise every step.
    let shapes = if bench.scale.quick { 1_000 } else { 100_000 };
    let db = bench.cluster.database("shapes_100k").await?;
    let client = db.connect().await?;
    // With an index on `owner`, as an app with a shape per user has: without it each
    // snapshot is a sequential scan of the whole table, and the figure would time Postgres.
    client
        .batch_execute(
            "CREATE TABLE docs (id int8 PRIMARY KEY, owner int8 NOT NULL, title text NOT NULL);
             CREATE INDEX docs_owner ON docs (owner);",
        )
        .await?;
    client
        .execute(
            "INSERT INTO docs SELECT g, g / 3, 'doc ' || g FROM generate_series(0::int8, $1) g
             WHERE g % 3 < (g / 3) % 3",
            &[&(shapes as i64 * 3 - 1)],
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE docs").await?;
    let max_shapes = (shapes * 2).to_string();
    let proxy = ProxyChild::start(
        &db,
        &["--long-poll-timeout", "1h", "--max-shapes", &max_shapes],
    )
    .await?;
    let before = proxy.memory()?;
    let files_before = proxy.open_files()?;

    let started = Instant::now();
    let created = create_all(proxy.addr, shapes).await?;
    let create_secs = started.elapsed().as_secs_f64();
    let after = proxy.memory()?;
    let files_after = proxy.open_files()?;
    let (disk_bytes, files) = disk_use(proxy.storage_dir())?;

    let sample = long_poll_sample(&created, shapes);
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let tasks: Vec<_> = sample
        .iter()
        .map(|shape| {
            let path = format!(
                "/v1/shape?table=docs&where=owner%20%3D%20{}&handle={}&offset={}&live=true",
                shape.owner, shape.handle, shape.offset
            );
            let (addr, tx, owner) = (proxy.addr, arrivals_tx.clone(), shape.owner);
            tokio::spawn(async move {
                let answered = long_poll(addr, &path).await;
                let _ = tx.send((owner, answered));
            })
        })
        .collect();
    // Every long-poll reaches the proxy and waits before the first commit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_polls = proxy.memory()?;

    let commits = bench.scale.of(1_000).min(sample.len());
    if commits == 0 {
        bail!("no shape to hold a long-poll on");
    }
    let update = client
        .prepare("UPDATE docs SET title = $2 WHERE id = $1")
        .await?;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / COMMITS_PER_SECOND));
    let mut latencies = Vec::with_capacity(commits);
    for (i, shape) in sample.iter().take(commits).enumerate() {
        ticker.tick().await;
        // The owner's first row: id 3k.
        let id = shape.owner as i64 * 3;
        client.execute(&update, &[&id, &format!("v{i}")]).await?;
        let acked = Instant::now();
        let (owner, answered) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .context("no long-poll answered within 10 s of a commit")?
            .context("the long-polls ended")?;
        let at = answered.with_context(|| format!("the long-poll of owner {owner}"))?;
        if owner != shape.owner {
            bail!(
                "the commit on owner {} answered owner {owner}'s long-poll",
                shape.owner
            );
        }
        latencies.push(at.saturating_duration_since(acked).as_secs_f64() * 1e3);
    }
    for task in tasks {
        task.abort();
    }
    proxy.stop().await;

    let per_shape_bytes = (after.rss_kb as f64 - before.rss_kb as f64) * 1024.0 / shapes as f64;
    bench.report.add(
        Figure::new(
            "shapes_100k.create_rate",
            shapes as f64 / create_secs,
            "shapes/s",
        )
        .target(Target::AtLeast(1000.0))
        .note(format!(
            "{shapes} shapes `owner = k` (0–2 rows each) created by {CREATORS} clients in {create_secs:.1} s, each a first fetch (offset=-1)"
        )),
    );
    bench.report.add(
        Figure::new("shapes_100k.rss_per_shape", per_shape_bytes, "bytes")
            .target(Target::AtMost(4096.0))
            .note(format!(
                "proxy VmRSS after the creations − before ({} → {} MB), no client connected; with {} long-polls open: {} MB",
                before.rss_kb / 1024,
                after.rss_kb / 1024,
                sample.len(),
                with_polls.rss_kb / 1024
            )),
    );
    bench.report.add(
        Figure::new(
            "shapes_100k.open_files_per_shape",
            files_after.saturating_sub(files_before) as f64 / shapes as f64,
            "files",
        )
        .target(Target::AtMost(0.01))
        .note(format!(
            "file descriptors the proxy holds after the creations − before ({files_before} → {files_after}), no client connected"
        )),
    );
    bench.report.add(
        Figure::new(
            "shapes_100k.disk_per_shape",
            disk_bytes as f64 / shapes as f64,
            "bytes",
        )
        .note(format!(
            "bytes of the storage directory per shape ({:.1} files per shape)",
            files as f64 / shapes as f64
        )),
    );
    stats::sort(&mut latencies);
    let note = format!(
        "commit ack → the long-poll of the one shape changed, {} commits at {COMMITS_PER_SECOND}/s, long-polls open on {} of the {shapes} shapes; max {:.2} ms",
        latencies.len(),
        sample.len(),
        stats::quantile(&latencies, 1.0)
    );
    bench.report.add(
        Figure::new("shapes_100k.p50", stats::quantile(&latencies, 0.5), "ms").note(note.clone()),
    );
    bench.report.add(
        Figure::new("shapes_100k.p99", stats::quantile(&latencies, 0.99), "ms")
            .target(Target::AtMost(10.0))
            .note(note),
    );
    bench
        .report
        .distribution("shapes_100k: commit → long-poll answer", latencies);
    Ok(())
}

/// Creates shapes `owner = 0..shapes` with [`CREATORS`] clients on kept-alive connections.
async fn create_all(addr: SocketAddr, shapes: usize) -> anyhow::Result<Vec<Created>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CREATORS {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut created = Vec::new();
            let mut connection: Option<TcpStream> = None;
            loop {
                let owner = next.fetch_add(1, Ordering::Relaxed);
                if owner >= shapes {
                    return anyhow::Ok(created);
                }
                let path = format!("/v1/shape?table=docs&where=owner%20%3D%20{owner}&offset=-1");
                let stream = match connection.take() {
                    Some(stream) => stream,
                    None => {
                        let stream = TcpStream::connect(addr).await?;
                        stream.set_nodelay(true)?;
                        stream
                    }
                };
                let mut response = http_wire::get_on(stream, addr, &path, true).await?;
                let mut body = Vec::new();
                while response
                    .read_body(|bytes, _| body.extend_from_slice(bytes))
                    .await?
                {}
                if response.head.status != 200 {
                    bail!(
                        "creating shape {owner}: {} {}",
                        response.head.status,
                        String::from_utf8_lossy(&body)
                    );
                }
                let rows = count(&body, br#""key":"#);
                if rows != owner % 3 {
                    bail!("shape {owner} has {rows} rows, not {}", owner % 3);
                }
                let header = |name: &str| {
                    response
                        .head
                        .header(name)
                        .map(str::to_owned)
                        .with_context(|| format!("no {name} creating shape {owner}"))
                };
                created.push(Created {
                    owner,
                    handle: header("electric-handle")?,
                    offset: header("electric-offset")?,
                });
                connection = response.into_connection();
            }
        }));
    }
    let mut all = Vec::with_capacity(shapes);
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_by_key(|c| c.owner);
    Ok(all)
}

/// Shapes with rows to change, spread over all of them: as many as the open-file limit leaves
/// room for (each long-poll is a socket here and one in the proxy), at most 10,000.
fn long_poll_sample(created: &[Created], shapes: usize) -> Vec<&Created> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let open_files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as usize
    } else {
        1024
    };
    let room = open_files.saturating_sub(1000) / 2;
    let with_rows: Vec<&Created> = created.iter().filter(|c| c.owner % 3 != 0).collect();
    let wanted = room.min(10_000).min(with_rows.len()).min(shapes);
    let step = (with_rows.len() / wanted.max(1)).max(1);
    with_rows.into_iter().step_by(step).take(wanted).collect()
}

/// Waits for a long-poll's answer; when its last byte was read.
async fn long_poll(addr: SocketAddr, path: &str) -> anyhow::Result<Instant> {
    let mut response = http_wire::get(addr, path, false).await?;
    let mut last = Instant::now();
    while response.read_body(|_, at| last = at).await? {}
    if response.head.status != 200 {
        bail!("a long-poll answered {}", response.head.status);
    }
    Ok(last)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Bytes and files under `dir`.
fn disk_use(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut bytes, mut files) = (0, 0);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                bytes += metadata.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}
