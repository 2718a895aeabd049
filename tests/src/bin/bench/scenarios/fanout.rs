//! `fanout_1000`: one commit to 1,000 SSE clients of the same shape; how long until the last
//! of them has it, from the commit acknowledgement. Repeated over several commits (a fifth
//! of a second apart); the figure is the median round, the maximum is reported too.

use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::mpsc;

use crate::Bench;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::scenarios::latency::signed_ms;
use crate::sse;
use crate::stats;

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let clients = bench.scale.of(1000);
    let rounds = bench.scale.of(30).max(5) as i64;
    let db = bench.cluster.database("fanout_1000").await?;
    let client = db.connect().await?;
    client
        .batch_execute("CREATE TABLE fan (id int8 PRIMARY KEY, title text NOT NULL)")
        .await?;
    let proxy = ProxyChild::start(&db, &[]).await?;
    let streams = sse::open_many(proxy.addr, vec!["table=fan".to_owned(); clients], 16).await?;
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|live| sse::forward_arrivals(live, arrivals_tx.clone()))
        .collect();
    let insert = client
        .prepare("INSERT INTO fan (id, title) VALUES ($1, 'to everyone')")
        .await?;

    let mut last_client = Vec::new();
    let mut every_client = Vec::new();
    for id in 0..rounds {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.execute(&insert, &[&id]).await?;
        let acked = Instant::now();
        let mut got = 0;
        let mut last = acked;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got < clients {
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some((arrived, at))) if arrived == id => {
                    got += 1;
                    last = last.max(at);
                    every_client.push(signed_ms(acked, at));
                }
                Ok(Some(_)) => {}
                _ => bail!("commit {id} reached only {got} of {clients} clients"),
            }
        }
        last_client.push(signed_ms(acked, last));
    }
    for task in tasks {
        task.abort();
    }
    proxy.stop().await;

    stats::sort(&mut last_client);
    stats::sort(&mut every_client);
    let note = format!(
        "{clients} SSE clients of one shape, {rounds} commits; median client {:.2} ms",
        stats::quantile(&every_client, 0.5)
    );
    bench.report.add(
        Figure::new("fanout_1000", stats::quantile(&last_client, 0.5), "ms")
            .target(Target::AtMost(50.0))
            .note(format!("last client, median round; {note}")),
    );
    bench.report.add(
        Figure::new("fanout_1000.max", stats::quantile(&last_client, 1.0), "ms")
            .note(format!("last client, slowest round; {note}")),
    );
    bench.report.distribution(
        format!("fanout_1000: commit → each of {clients} clients"),
        every_client,
    );
    Ok(())
}
