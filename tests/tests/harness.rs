//! The throwaway-cluster harness itself: what every other test stands on.

use std::path::PathBuf;

use proxy::ops::local_cluster::ClusterOptions;
use tests::TestDb;

#[tokio::test]
async fn throwaway_cluster_has_logical_replication_and_is_removed_afterwards() {
    let db = TestDb::new("harness").await;
    let client = db.connect().await;

    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(wal_level, "logical");
    let listen: String = client
        .query_one("SHOW listen_addresses", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listen, "127.0.0.1");
    let encoding: String = client
        .query_one("SHOW server_encoding", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(encoding, "UTF8");

    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot('harness_slot', 'pgoutput')",
            &[],
        )
        .await
        .unwrap();
    let lsn: String = row.get(0);
    assert!(lsn.contains('/'), "slot created at an LSN: {lsn}");
    let slots: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'harness_slot'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 1);

    let socket = db
        .cluster
        .pgdata()
        .join(format!(".s.PGSQL.{}", db.cluster.port()));
    assert!(
        socket.exists(),
        "unix socket in the data directory: {}",
        socket.display()
    );

    let pgdata: PathBuf = db.cluster.pgdata().to_owned();
    let pid = db.cluster.pid().expect("server running");
    drop(client);
    drop(db);
    assert!(
        !pgdata.exists(),
        "data directory removed: {}",
        pgdata.display()
    );
    assert!(!process_alive(pid), "postmaster {pid} stopped");
}

#[tokio::test]
async fn cluster_settings_can_be_overridden_and_survive_a_restart() {
    let mut db = TestDb::with_options(
        "settings",
        ClusterOptions {
            settings: vec![("timezone".into(), "America/St_Johns".into())],
            ..ClusterOptions::default()
        },
    )
    .await;
    let port = db.cluster.port();
    let tz: String = db
        .connect()
        .await
        .query_one("SHOW timezone", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tz, "America/St_Johns");

    db.cluster.kill();
    db.cluster.start().expect("restart after a crash");
    assert_eq!(
        db.cluster.port(),
        port,
        "a restarted cluster keeps its port"
    );
    let tz: String = db
        .connect()
        .await
        .query_one("SHOW timezone", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tz, "America/St_Johns");
}

#[test]
fn dropping_a_cluster_during_a_panic_stops_it() {
    let (pgdata, pid) = std::thread::spawn(|| {
        let cluster = proxy::ops::local_cluster::LocalCluster::temporary(ClusterOptions::default())
            .expect("start");
        let info = (cluster.pgdata().to_owned(), cluster.pid().expect("running"));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _owned = cluster;
            panic!("a failing test");
        }));
        assert!(result.is_err());
        info
    })
    .join()
    .expect("thread");
    assert!(
        !process_alive(pid),
        "postmaster {pid} stopped after the panic"
    );
    assert!(!pgdata.exists());
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
