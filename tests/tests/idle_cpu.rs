//! An idle proxy sleeps: with replication streaming and nothing to do, it uses next to no CPU.
//! (A supervisor loop once re-read the stream's status forever, burning a core.)

use std::time::Duration;

use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

/// User + system CPU seconds of process `pid`, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command name")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[tokio::test]
async fn an_idle_streaming_proxy_uses_almost_no_cpu() {
    let db = TestDb::new("idle_cpu").await;
    db.connect()
        .await
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    // A shape, so that replication streams a table.
    let response = proxy
        .http()
        .get(format!("{}/v1/shape?table=items&offset=-1", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let pid = proxy.pid().expect("the proxy runs");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(pid) - before;
    assert!(used < 0.5, "the idle proxy used {used:.2} s of CPU in 3 s");
}
