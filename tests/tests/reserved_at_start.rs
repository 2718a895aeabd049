//! Flags, rules and `shapesync prepare` that name the proxy's own tables or a system catalog
//! are refused at start with a message that says why, before anything is done.

use std::process::Command;

use tests::{TestDb, shapesync_bin};

/// Runs the program; (succeeded, stdout + stderr).
fn shapesync(args: &[&str]) -> (bool, String) {
    let out = Command::new(shapesync_bin!())
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Nothing listens there: a refusal that needed the database would say so instead.
const NOWHERE: &str = "postgres://nobody@127.0.0.1:1/none";

const OWN: &str = "belongs to shapesync itself (schema shapesync holds its clocks and mutation \
                   ids): it is never served or written";

#[test]
fn writable_tombstones_and_yjs_columns_cannot_name_reserved_tables() {
    for (flag, value, expected) in [
        (
            "--writable",
            "todos,shapesync.mutation_ids",
            format!("table \"shapesync\".\"mutation_ids\" {OWN}"),
        ),
        (
            "--writable",
            "pg_catalog.pg_description",
            "table \"pg_catalog\".\"pg_description\" is in the system schema \"pg_catalog\""
                .to_owned(),
        ),
        (
            "--tombstones",
            "shapesync.row_clocks:gone_at",
            format!("table \"shapesync\".\"row_clocks\" {OWN}"),
        ),
        (
            "--yjs-columns",
            "information_schema.tables.table_name",
            "is in the system schema \"information_schema\"".to_owned(),
        ),
    ] {
        let (ok, text) = shapesync(&["serve", "--database-url", NOWHERE, flag, value]);
        assert!(!ok, "{flag} {value}: {text}");
        assert!(text.contains(&expected), "{flag} {value}: {text}");
    }
}

#[test]
fn prepare_refuses_reserved_tables_before_connecting() {
    let (ok, text) = shapesync(&[
        "prepare",
        "--database-url",
        NOWHERE,
        "todos",
        "pg_catalog.pg_authid",
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "table \"pg_catalog.pg_authid\": table \"pg_catalog\".\"pg_authid\" is in the system \
             schema \"pg_catalog\": system catalogs are never served or written"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn rules_naming_the_proxy_schema_stop_the_proxy_at_start() {
    let db = TestDb::new("reserved_rules").await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[tables.\"shapesync.mutation_ids\"]\nread = \"true\"\nwrite = [\"delete\"]\n",
    )
    .unwrap();
    let storage = dir.path().join("storage");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(shapesync_bin!())
        .args([
            "serve",
            "--database-url",
            &db.url,
            "--port",
            &port.to_string(),
            "--storage-dir",
            storage.to_str().unwrap(),
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--rules",
            rules.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Either it stops, or it starts serving (and the test fails): no timing involved.
    let health = format!("http://127.0.0.1:{port}/v1/health");
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let serving = reqwest::get(&health).await.is_ok();
        assert!(
            !serving,
            "the proxy started with rules on the proxy's own table"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().await.unwrap();
    let ok = out.status.success();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "[tables.shapesync.mutation_ids]: table \"shapesync\".\"mutation_ids\" {OWN}"
        )),
        "{text}"
    );
}
