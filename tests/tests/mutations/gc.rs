//! Purging old tombstones: `shapesync gc` as users run it (the real program against the test
//! cluster), in batches, and the background job of `serve`.

use std::time::Duration;

use serde_json::{Value, json};
use tests::proxy_process::ProxyProcess;
use tests::{shapesync_bin, wait_for};

use crate::support::{Harness, from_now, harness, status, todo};

/// Rows `gc` deletes per transaction (`proxy::mutations::gc`).
const BATCH: usize = 1000;

/// Runs `shapesync gc` with `args` against the harness' database: (success, stdout, stderr).
async fn gc(h: &Harness, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(shapesync_bin!())
        .arg("gc")
        .args(["--database-url", &h.db.url])
        .args(args)
        .env_remove("SHAPESYNC_TOMBSTONES")
        .output()
        .await
        .expect("run shapesync gc");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Inserts todos `first..first + count` at `inserted` and deletes them (a tombstone) at
/// `deleted`, through `/v1/mutations`.
async fn tombstones(h: &Harness, first: u32, count: u32, inserted: &str, deleted: &str) {
    let rows = first..first + count;
    let values = |n: u32| json!({"owner_id": "gc", "title": format!("todo {n}")});
    let inserts: Vec<Value> = rows
        .clone()
        .map(|n| todo(&format!("i{n}"), "insert", n, values(n), inserted))
        .collect();
    let deletes: Vec<Value> = rows
        .map(|n| todo(&format!("d{n}"), "delete", n, json!({}), deleted))
        .collect();
    for batch in [inserts, deletes] {
        let response = h.send("gc-test", batch).await;
        let results = response["results"].as_array().unwrap();
        assert!(results.iter().all(|r| status(r) == "applied"), "{response}");
    }
}

/// (tombstones older than 30 days, younger ones, live rows, row clocks) of the test's todos.
async fn counts(h: &Harness) -> (i64, i64, i64, i64) {
    let row = h
        .client
        .query_one(
            "SELECT count(*) FILTER (WHERE deleted_at < now() - interval '30 days'),
                    count(*) FILTER (WHERE deleted_at >= now() - interval '30 days'),
                    count(*) FILTER (WHERE deleted_at IS NULL),
                    (SELECT count(*) FROM shapesync.row_clocks)
             FROM todos WHERE owner_id = 'gc'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn gc_without_tombstoned_tables_refuses_and_says_what_to_pass() {
    let h = harness("mut_gc_cli_refuses").await;
    tombstones(&h, 1, 3, &from_now(-41 * 86_400), &from_now(-40 * 86_400)).await;
    let (ok, _, stderr) = gc(&h, &["--older-than", "30d"]).await;
    assert!(!ok, "gc without --tombstones must fail");
    for hint in [
        "--tombstones todos",
        "--tombstones none",
        "--older-than off",
    ] {
        assert!(stderr.contains(hint), "no {hint:?} in: {stderr}");
    }
    assert_eq!(counts(&h).await, (3, 0, 0, 3), "nothing purged");

    // Saying there are none is a choice: then only clocks and ids are purged.
    let (ok, stdout, stderr) = gc(&h, &["--older-than", "30d", "--tombstones", "none"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("purged 0 tombstoned rows"), "{stdout}");
    assert_eq!(counts(&h).await.0, 3);
}

#[tokio::test]
async fn gc_purges_every_old_tombstone_in_batches_and_keeps_the_rest() {
    let h = harness("mut_gc_cli_batches").await;
    let old = u32::try_from(2 * BATCH + 500).unwrap();
    tombstones(&h, 1, old, &from_now(-41 * 86_400), &from_now(-40 * 86_400)).await;
    // Deleted a day ago, and never deleted: both stay.
    tombstones(&h, old + 1, 10, &from_now(-2 * 86_400), &from_now(-86_400)).await;
    let live: Vec<Value> = (old + 11..old + 16)
        .map(|n| {
            let values = json!({"owner_id": "gc", "title": "live"});
            todo(
                &format!("l{n}"),
                "insert",
                n,
                values,
                &from_now(-50 * 86_400),
            )
        })
        .collect();
    h.send("gc-test", live).await;
    let old = i64::from(old);
    assert_eq!(counts(&h).await, (old, 10, 5, old + 15));

    let (ok, stdout, stderr) = gc(&h, &["--older-than", "30d", "--tombstones", "todos"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("purged {old} tombstoned rows, {old} row clocks, 0 mutation ids")
    );
    assert_eq!(counts(&h).await, (0, 10, 5, 15));
}

/// Old tombstones written with plain SQL (the job does not care who deleted them).
async fn old_tombstones_by_sql(h: &Harness, count: usize) {
    h.client
        .execute(
            "INSERT INTO todos (owner_id, title, updated_at, deleted_at)
             SELECT 'gc', 'old ' || n, now() - interval '40 days', now() - interval '40 days'
             FROM generate_series(1, $1::int8) n",
            &[&i64::try_from(count).unwrap()],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_background_job_purges_old_tombstones_at_start_and_then_periodically() {
    let h = harness("mut_gc_background").await;
    old_tombstones_by_sql(&h, BATCH + 200).await;
    tombstones(&h, 1, 3, &from_now(-2 * 86_400), &from_now(-86_400)).await;
    let _proxy = ProxyProcess::start(
        shapesync_bin!(),
        &h.db,
        &[
            "--tombstones",
            "todos",
            "--tombstone-retention",
            "30d",
            "--gc-interval",
            "200ms",
        ],
    )
    .await;
    let deadline = Duration::from_secs(60);
    wait_for("the purge at start", deadline, || async {
        (counts(&h).await.0 == 0).then_some(())
    })
    .await;
    // Tombstones that grow old later go at a later run.
    old_tombstones_by_sql(&h, BATCH + 1).await;
    wait_for("a periodic purge", deadline, || async {
        (counts(&h).await.0 == 0).then_some(())
    })
    .await;
    assert_eq!(counts(&h).await, (0, 3, 0, 3), "the young tombstones stay");
}
