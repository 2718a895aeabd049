//! The `shapesync` binary as users run it: `dev` and `serve`, started as processes and
//! stopped with signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxy::ops::local_cluster::{ClusterOptions, LocalCluster};

const BIN: &str = env!("CARGO_BIN_EXE_shapesync");

#[test]
fn dev_serves_health_applies_migrations_once_and_leaves_no_postgres_behind() {
    let root = tempfile::tempdir().unwrap();
    // As root, make the data directory unreachable for the `postgres` user, as a checkout
    // under /root is: the cluster must then live elsewhere.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data_dir = root.path().join("dev");

    let port = free_port();
    let mut dev = spawn_dev(&data_dir, port);
    // The banner, then (without auth flags) the warning that the proxy is open.
    let banner = read_until(&mut dev, "auth is off");
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}/v1/health")),
        "{banner}"
    );
    assert_eq!(
        get(port, "/v1/health"),
        (200, r#"{"status":"active"}"#.to_owned())
    );

    let pgdata = pgdata_of(&data_dir);
    let pg_pid = postmaster_pid(&pgdata);
    let counts = query_counts(&data_dir, &pgdata);
    let migrations = example_migrations();
    assert_eq!(
        counts,
        (migrations, 3),
        "(migrations recorded, example todos)"
    );

    signal(&dev, libc::SIGINT);
    let status = wait_exit(&mut dev);
    assert!(status.success(), "shapesync dev exited with {status}");
    assert!(
        !alive(pg_pid),
        "postgres {pg_pid} still running after Ctrl-C"
    );

    // The second run reuses the data and applies nothing again (the seed rows stay 3).
    let mut dev = spawn_dev(&data_dir, port);
    read_until(&mut dev, "/v1/health");
    assert_eq!(get(port, "/v1/health").0, 200);
    assert_eq!(query_counts(&data_dir, &pgdata), (migrations, 3));
    let pg_pid = postmaster_pid(&pgdata);
    signal(&dev, libc::SIGTERM);
    assert!(wait_exit(&mut dev).success());
    assert!(
        !alive(pg_pid),
        "postgres {pg_pid} still running after SIGTERM"
    );

    if pgdata.starts_with("/var/lib/shapesync") {
        std::fs::remove_dir_all(&pgdata).unwrap();
    }
}

/// After a reboot the pid in a stale `postmaster.pid` may belong to any process: `dev` must
/// neither signal it nor refuse to start.
#[test]
fn dev_starts_over_a_stale_postmaster_pid_naming_an_unrelated_process() {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data_dir = root.path().join("dev");
    let port = free_port();
    let mut dev = spawn_dev(&data_dir, port);
    read_until(&mut dev, "/v1/health");
    let pgdata = pgdata_of(&data_dir);
    let pid_file = pgdata.join("postmaster.pid");
    let recorded = std::fs::read_to_string(&pid_file).unwrap();
    signal(&dev, libc::SIGTERM);
    assert!(wait_exit(&mut dev).success());
    assert!(!pid_file.exists(), "a clean stop removes postmaster.pid");

    // What a server killed by a power cut leaves behind, with its pid now taken by a stranger.
    let mut stranger = Command::new("sleep").arg("600").spawn().unwrap();
    let (_, rest) = recorded.split_once('\n').unwrap();
    std::fs::write(&pid_file, format!("{}\n{rest}", stranger.id())).unwrap();

    let mut dev = spawn_dev(&data_dir, port);
    read_until(&mut dev, "/v1/health");
    assert_eq!(get(port, "/v1/health").0, 200);
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the unrelated process {} was signalled",
        stranger.id()
    );
    assert_ne!(postmaster_pid(&pgdata), stranger.id());
    signal(&dev, libc::SIGTERM);
    assert!(wait_exit(&mut dev).success());
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the unrelated process {} was signalled at shutdown",
        stranger.id()
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    if pgdata.starts_with("/var/lib/shapesync") {
        std::fs::remove_dir_all(&pgdata).unwrap();
    }
}

#[test]
fn serve_refuses_a_database_without_logical_wal_level() {
    let cluster = LocalCluster::temporary(ClusterOptions {
        settings: vec![("wal_level".into(), "replica".into())],
        ..ClusterOptions::default()
    })
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--port", &free_port().to_string()])
        .env("DATABASE_URL", cluster.url("postgres"))
        .env("SHAPESYNC_STORAGE_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wal_level = replica")
            && stderr.contains("ALTER SYSTEM SET wal_level = logical"),
        "{stderr}"
    );
}

#[test]
fn serve_runs_beside_an_existing_postgres_and_stops_on_sigterm() {
    let cluster = LocalCluster::temporary(ClusterOptions::default()).unwrap();
    let storage = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut serve = Command::new(BIN)
        .args(["serve", "--database-url", &cluster.url("postgres")])
        .args(["--port", &port.to_string()])
        .arg("--storage-dir")
        .arg(storage.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("serve answers /v1/health", || {
        get_opt(port, "/v1/health").is_some()
    });
    assert_eq!(
        get(port, "/v1/health"),
        (200, r#"{"status":"active"}"#.to_owned())
    );
    signal(&serve, libc::SIGTERM);
    assert!(wait_exit(&mut serve).success());
}

#[test]
fn help_explains_the_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["dev", "serve", "logical replication"] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
    let out = Command::new(BIN).args(["dev", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--data-dir",
        "--port",
        "--migrations",
        "SHAPESYNC_DATA_DIR",
        "--jwt-secret",
        "--jwt-public-key",
        "--rules",
        "SHAPESYNC_RULES",
    ] {
        assert!(
            text.contains(needle),
            "dev --help lacks {needle:?}:\n{text}"
        );
    }
}

fn spawn_dev(data_dir: &Path, port: u16) -> Child {
    Command::new(BIN)
        .args(["dev", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads the child's stdout until a line contains `needle`; returns what was read.
fn read_until(child: &mut Child, needle: &str) -> String {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut seen = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "stdout closed before {needle:?}; got:\n{seen}");
        seen.push_str(&line);
        if line.contains(needle) {
            return seen;
        }
    }
}

fn pgdata_of(data_dir: &Path) -> PathBuf {
    match std::fs::read_to_string(data_dir.join("postgres-location")) {
        Ok(text) => PathBuf::from(text.trim()),
        Err(_) => data_dir.join("postgres"),
    }
}

fn postmaster_pid(pgdata: &Path) -> u32 {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// (recorded migrations, todos) in the dev database.
/// How many migrations the example app ships (`migrations/*.sql`): `dev` records each once.
fn example_migrations() -> i64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let count = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    i64::try_from(count).expect("a few migrations")
}

fn query_counts(data_dir: &Path, pgdata: &Path) -> (i64, i64) {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).unwrap();
    let port: u16 = text.lines().nth(3).unwrap().trim().parse().unwrap();
    let password = std::fs::read_to_string(data_dir.join("postgres-password")).unwrap();
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{port}/shapesync_dev",
        password.trim()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = proxy::postgres::connect(&url).await.unwrap();
        let m: i64 = client
            .query_one("SELECT count(*) FROM shapesync.dev_migrations", &[])
            .await
            .unwrap()
            .get(0);
        let t: i64 = client
            .query_one("SELECT count(*) FROM todos", &[])
            .await
            .unwrap()
            .get(0);
        (m, t)
    })
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(port: u16, path: &str) -> (u16, String) {
    get_opt(port, path).unwrap_or_else(|| panic!("GET {path} on port {port} failed"))
}

/// A minimal HTTP/1.1 GET: (status, body).
fn get_opt(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}
