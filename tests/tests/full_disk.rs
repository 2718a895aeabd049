//! A full disk under the shape logs is a 503 and an ERROR log, never a corrupt log: once space
//! is back, the transactions that could not be written arrive whole.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

const WAIT: Duration = Duration::from_secs(60);

/// Mounts a small tmpfs to fill on `dir`. Needs root: the test is built to run only as root
/// (`cfg(root_user)`, see `tests/build.rs`), so failing to mount is a failure, not a skip.
fn mount_small_filesystem(dir: &Path) {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "shapesync-test"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mounting a tmpfs on {} failed ({status}) although we run as root",
        dir.display()
    );
}

fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.flush();
}

#[tokio::test]
#[cfg_attr(
    not(root_user),
    ignore = "needs root to mount a tmpfs: run the tests as root (as CI does)"
)]
async fn a_full_disk_delays_changes_without_losing_or_corrupting_them() {
    let mount = tempfile::tempdir().unwrap();
    mount_small_filesystem(mount.path());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mount.path());
    let storage = mount.path().join("storage");

    let db = TestDb::new("full_disk").await;
    let sql = db.connect().await;
    sql.batch_execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
        .await
        .unwrap();
    let proxy = ProxyProcess::start(
        shapesync_bin!(),
        &db,
        &["--storage-dir", storage.to_str().unwrap()],
    )
    .await;
    let http = proxy.http().clone();
    let first = http
        .get(format!("{}/v1/shape?table=t&offset=-1", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let handle = first.headers()["electric-handle"]
        .to_str()
        .unwrap()
        .to_owned();

    let filler = mount.path().join("filler");
    fill(&filler);
    sql.batch_execute(
        "INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 200) g",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = http
        .get(format!(
            "{}/v1/shape?table=t&offset=-1&where=id%20%3E%205",
            proxy.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 503, "a new shape cannot be stored: 503");
    assert!(full.headers().get("retry-after").is_some());

    std::fs::remove_file(&filler).unwrap();
    let ids = tests::wait_for("the rows after space came back", WAIT, || {
        let http = http.clone();
        let url = format!("{}/v1/shape?table=t&offset=0_0&handle={handle}", proxy.url);
        async move {
            let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            let ids: Vec<i64> = body
                .as_array()?
                .iter()
                .filter_map(|m| m["value"]["id"].as_str()?.parse().ok())
                .collect();
            (ids.len() >= 200).then_some(ids)
        }
    })
    .await;
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "no duplicates");
    assert_eq!(sorted, (1..=200).collect::<Vec<i64>>());
}
