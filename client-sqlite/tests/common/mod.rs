//! What the client's integration tests share: running the `shapesync-client` binary.

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shapesync-client");

/// Runs `shapesync-client <args>` (without a key from the environment) to its end.
pub async fn run(args: &[&str]) -> Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BIN)
            .args(args)
            .env_remove("SHAPESYNC_CLIENT_KEY")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the command finishes")
    .expect("run shapesync-client")
}
