//! `sse_10k`: what an idle live SSE connection costs the proxy in memory.
//!
//! One shape, one warm-up stream (so that everything shared is in place), then the proxy's
//! resident set (`VmRSS`) is read; 10,000 more connections are opened, each a raw TCP socket
//! with a minimal HTTP request, read until its first up-to-date (the proxy's session has then
//! reached its idle wait) and then left alone, holding no task in the bench. After a pause the
//! RSS is read again: (after − before) / connections.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Bench;
use crate::figures::{Figure, Target};
use crate::http_wire;
use crate::proxy_child::ProxyChild;
use crate::sse;

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let connections = bench.scale.of(10_000);
    let db = bench.cluster.database("sse_10k").await?;
    db.connect()
        .await?
        .batch_execute("CREATE TABLE quiet (id int PRIMARY KEY, title text)")
        .await?;
    let proxy = ProxyChild::start(&db, &[]).await?;
    let subscription = sse::fetch(proxy.addr, "table=quiet", |_| {}).await?;
    let warm_up = sse::Live::open(proxy.addr, &subscription).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proxy.memory()?;
    let path = format!(
        "/v1/shape?table=quiet&handle={}&offset={}&live=true&live_sse=true",
        subscription.handle, subscription.offset
    );
    let sockets: Vec<TcpStream> = futures_util::stream::iter(0..connections)
        .map(|_| open_idle(proxy.addr, &path))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proxy.memory()?;
    let per_connection = (after.rss_kb as f64 - before.rss_kb as f64) / connections as f64;
    bench.report.add(
        Figure::new("sse_10k", per_connection, "KB/conn")
            .target(Target::AtMost(20.0))
            .note(format!(
                "{} idle SSE connections: proxy RSS {} → {} MB",
                sockets.len(),
                before.rss_kb / 1024,
                after.rss_kb / 1024
            )),
    );
    drop(sockets);
    drop(warm_up);
    proxy.stop().await;
    Ok(())
}

/// An SSE request on a socket of its own, read until its first up-to-date.
async fn open_idle(addr: SocketAddr, path: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)
        .await
        .context("connecting (is the open-file limit high enough?)")?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut seen = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("the proxy closed an SSE connection before its first up-to-date");
        }
        seen.extend_from_slice(&buf[..n]);
        if http_wire::find(&seen, b"up-to-date").is_some() {
            return Ok(stream);
        }
    }
}
