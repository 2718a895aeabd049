//! The last warnings and errors the proxy logged, kept in memory for the status page. A
//! `tracing` layer beside the log writer copies every WARN and ERROR event — replication
//! trouble, 500s (`http::error` logs each), fsync failures, a slot that holds too much WAL —
//! into a ring of the last [`KEPT`], so the page shows what the log says without anyone
//! reading the log. Events below the log filter (`RUST_LOG`) never reach it.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How many are kept.
pub const KEPT: usize = 20;
/// Longest text kept of one event, in bytes.
const MAX_TEXT: usize = 2000;

/// One logged warning or error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedError {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `error` or `warn`.
    pub level: &'static str,
    /// The module that logged it (`proxy::replication::stream`, …).
    pub target: String,
    /// The message, then its fields as `name=value`.
    pub message: String,
}

static RECENT: Mutex<VecDeque<LoggedError>> = Mutex::new(VecDeque::new());

/// The warnings and errors kept, newest first.
pub fn recent() -> Vec<LoggedError> {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent.iter().rev().cloned().collect()
}

fn keep(error: LoggedError) {
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() == KEPT {
        recent.pop_front();
    }
    recent.push_back(error);
}

/// The layer that feeds [`recent`]; `observability::logging` installs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecentErrors;

impl<S: Subscriber> Layer<S> for RecentErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let level = match *metadata.level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            _ => return,
        };
        let mut text = Text::default();
        event.record(&mut text);
        let mut message = text.message;
        if !text.fields.is_empty() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(&text.fields);
        }
        truncate(&mut message, MAX_TEXT);
        keep(LoggedError {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            level,
            target: metadata.target().to_owned(),
            message,
        });
    }
}

/// An event as text: its message, and its other fields as `name=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }
}

impl Text {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value}", field.name());
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary, marking the cut.
fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// One test: the ring is the process's, and another test's events would push these out.
    #[test]
    fn warnings_and_errors_are_kept_newest_first_with_their_fields_and_only_the_last_ones() {
        let subscriber = tracing_subscriber::registry().with(RecentErrors);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("recent-errors-test: routine");
            tracing::warn!(slot = "s1", lag = 7, "recent-errors-test: degraded");
            tracing::error!(error = %"disk full", "recent-errors-test: act now");
        });
        let ours: Vec<LoggedError> = recent()
            .into_iter()
            .filter(|e| e.message.contains("recent-errors-test"))
            .collect();
        assert_eq!(ours.len(), 2, "info is not kept: {ours:?}");
        assert_eq!(ours[0].level, "error");
        assert_eq!(
            ours[0].message,
            "recent-errors-test: act now error=disk full"
        );
        assert_eq!(ours[1].level, "warn");
        assert_eq!(
            ours[1].message,
            "recent-errors-test: degraded slot=s1 lag=7"
        );
        assert!(
            ours[0].target.contains("recent_errors"),
            "{}",
            ours[0].target
        );
        assert!(ours[0].at_ms >= ours[1].at_ms);

        let subscriber = tracing_subscriber::registry().with(RecentErrors);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..KEPT + 5 {
                tracing::warn!("ring-test {i}");
            }
        });
        let kept = recent();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].message, format!("ring-test {}", KEPT + 4));
        assert_eq!(kept[KEPT - 1].message, "ring-test 5");
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let mut long = "é".repeat(10);
        truncate(&mut long, 5);
        assert_eq!(long, "éé…");
        let mut short = "ok".to_owned();
        truncate(&mut short, 5);
        assert_eq!(short, "ok");
    }
}
