//! The optional features. Encryption at rest (`encryption`, SQLCipher): the right key opens
//! the data, a wrong or missing key is a clear error, and the file holds no plaintext; without
//! the feature a key is refused with a hint. TLS (`tls`): an https:// server is tried (here an
//! unreachable one: the client reports itself offline); without it, https is refused.

use client_sqlite::{Client, ClientConfig, ClientError};

fn config(path: &std::path::Path, key: Option<&str>) -> ClientConfig {
    let mut config = ClientConfig::new("http://127.0.0.1:1", path);
    config.key = key.map(str::to_owned);
    config
}

#[cfg(feature = "encryption")]
#[tokio::test]
async fn a_wrong_key_is_a_clear_error_and_the_right_key_opens_the_data() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("secret.db");
    let client = Client::open_offline(&config(&path, Some("right horse")))
        .await
        .expect("create an encrypted database");
    client
        .read(|c| {
            c.execute_batch(
                "CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('plaintext-marker');",
            )
        })
        .await
        .expect("write");
    client.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    for wrong in [Some("wrong"), None] {
        let err = Client::open_offline(&config(&path, wrong))
            .await
            .expect_err("a wrong key must not open it");
        assert!(matches!(err, ClientError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("encryption key is wrong"), "{err}");
    }
    let client = Client::open_offline(&config(&path, Some("right horse")))
        .await
        .expect("the right key opens it");
    let text: String = client
        .read(|c| c.query_row("SELECT t FROM notes", [], |r| r.get(0)))
        .await
        .expect("read");
    assert_eq!(text, "plaintext-marker");
    client.close().await;
    let bytes = std::fs::read(&path).expect("file");
    let needle = b"plaintext-marker";
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the file is encrypted"
    );

    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_shapesync-client"))
        .args(["status", "--db", path.to_str().expect("utf-8")])
        .env("SHAPESYNC_CLIENT_KEY", "wrong")
        .output()
        .expect("run the binary");
    assert!(!cli.status.success());
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("encryption key is wrong"), "{stderr}");
}

#[cfg(not(feature = "encryption"))]
#[tokio::test]
async fn a_key_without_the_encryption_feature_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().expect("dir");
    let err = Client::open_offline(&config(&dir.path().join("x.db"), Some("k")))
        .await
        .expect_err("no encryption in this build");
    assert!(matches!(err, ClientError::EncryptionUnavailable), "{err}");
    assert!(err.to_string().contains("--features encryption"), "{err}");
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn with_tls_an_https_server_is_tried_and_unreachable_means_offline() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = ClientConfig::new("https://127.0.0.1:1", dir.path().join("t.db"));
    config.shapes.push(client_sqlite::ShapeSpec::table("todos"));
    let client = Client::open(config).await.expect("https is accepted");
    let mut status = client.watch_status();
    let offline = status.wait_for(|s| s.state == client_sqlite::SyncState::Offline);
    tokio::time::timeout(std::time::Duration::from_secs(20), offline)
        .await
        .expect("reported offline")
        .expect("status");
    client.close().await;
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn without_tls_an_https_url_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().expect("dir");
    let config = ClientConfig::new("https://example.invalid", dir.path().join("t.db"));
    let err = Client::open(config)
        .await
        .expect_err("no TLS in this build");
    assert!(matches!(err, ClientError::TlsUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("--features tls"), "{err}");
}
