//! Structured logs: human-readable text or JSON lines, levels from `RUST_LOG`.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::recent_errors::RecentErrors;

/// How logs are written: `text` for people, `json` for log collectors.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Logs go to stderr; stdout stays for what a person asked for.
/// Warnings and errors are also kept for the status page ([`super::recent_errors`]).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // colour only for a person at a terminal, not in files and log collectors
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.finish().with(RecentErrors).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(RecentErrors)
            .init(),
    }
}
