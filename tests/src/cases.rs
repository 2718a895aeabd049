//! Tables of cases that share one costly setup (a throwaway cluster and a proxy process, which
//! a test per case would start again for every row): every case runs, each failure is kept
//! under the case's name, and the test fails at the end listing them all, so one bad case
//! never hides the cases after it. Pure tables with no setup use `rstest` cases instead.
//!
//! ```no_run
//! # async fn example() {
//! let mut cases = tests::cases::Cases::default();
//! cases
//!     .check("blank table", async { assert_eq!(1 + 1, 2) })
//!     .await;
//! cases.finish();
//! # }
//! ```

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// The failures of the cases run so far; [`Cases::finish`] fails the test if there are any.
#[derive(Debug, Default)]
pub struct Cases {
    failed: Vec<String>,
    finished: bool,
}

impl Cases {
    /// Runs the case `name`. A failed assertion inside it is recorded (its message still goes
    /// to stderr as usual) and the next case runs.
    pub async fn check(&mut self, name: &str, case: impl Future<Output = ()>) {
        if let Err(panic) = AssertUnwindSafe(case).catch_unwind().await {
            self.failed
                .push(format!("case `{name}`: {}", panic_message(&*panic)));
        }
    }

    /// Fails the test, naming every case that failed.
    pub fn finish(mut self) {
        self.finished = true;
        assert!(
            self.failed.is_empty(),
            "{} case(s) failed:\n{}",
            self.failed.len(),
            self.failed.join("\n")
        );
    }
}

impl Drop for Cases {
    fn drop(&mut self) {
        // A table whose failures are never looked at would pass whatever they say.
        if !self.finished && !std::thread::panicking() {
            panic!("Cases dropped without finish(): its failures would go unreported");
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_case_runs_and_the_failures_are_named() {
        let mut cases = Cases::default();
        let mut ran = Vec::new();
        for (name, good) in [("first", false), ("second", true), ("third", false)] {
            cases
                .check(name, async {
                    ran.push(name);
                    assert!(good, "{name} is bad");
                })
                .await;
        }
        assert_eq!(ran, ["first", "second", "third"]);
        let failure = std::panic::catch_unwind(AssertUnwindSafe(|| cases.finish()))
            .expect_err("two cases failed");
        let message = panic_message(&*failure);
        assert!(
            message.starts_with(
                "2 case(s) failed:\ncase `first`: first is bad\ncase `third`: third is bad"
            ),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_table_without_failures_passes() {
        let mut cases = Cases::default();
        cases.check("fine", async {}).await;
        cases.finish();
    }
}
