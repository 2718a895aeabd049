//! The progress bar of `sync`: rows received and rows per second, then the status.

use std::time::Duration;

use client_sqlite::{Client, Status};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

/// Follows the client's status on a spinner (drawn only on a terminal).
pub fn show(client: &Client) -> Progress {
    let bar = ProgressBar::new_spinner();
    let style = ProgressStyle::with_template("{spinner} {human_pos} rows ({per_sec}) {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut watch = client.watch_status();
    let follower = bar.clone();
    let task = tokio::spawn(async move {
        loop {
            {
                let status = watch.borrow_and_update();
                follower.set_position(status.rows_received);
                follower.set_message(status.state.to_string());
            }
            if watch.changed().await.is_err() {
                break;
            }
        }
    });
    Progress { bar, task }
}

impl Progress {
    pub fn finish(self, status: &Status) {
        self.task.abort();
        self.bar.set_position(status.rows_received);
        self.bar.finish_with_message(status.state.to_string());
        if !self.bar.is_hidden() {
            return;
        }
        eprintln!("{} rows received; {}", status.rows_received, status.state);
    }
}
