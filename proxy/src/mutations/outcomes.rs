//! How the write path answered, counted for operators (the status page): mutations applied,
//! in conflict, rejected (by refusal code) and aborted since the proxy started. Retries that
//! idempotency answers from the record count again: they are answers too.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::wire::Outcome;

/// Running counts, shared by every request.
#[derive(Debug, Default)]
pub struct OutcomeCounts {
    applied: AtomicU64,
    conflicts: AtomicU64,
    aborted: AtomicU64,
    /// By refusal code; rejections are rare enough for a lock.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

/// The counts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeTotals {
    pub applied: u64,
    pub conflicts: u64,
    pub aborted: u64,
    /// Rejected mutations by `error.code` (`check_violation`, `forbidden`, …).
    pub rejected: BTreeMap<String, u64>,
}

impl OutcomeTotals {
    /// Every mutation answered.
    pub fn total(&self) -> u64 {
        self.applied + self.conflicts + self.aborted + self.rejected.values().sum::<u64>()
    }
}

impl OutcomeCounts {
    /// Counts the results of one batch.
    pub fn record<'a>(&self, outcomes: impl IntoIterator<Item = &'a Outcome>) {
        for outcome in outcomes {
            match outcome {
                Outcome::Applied { .. } => {
                    self.applied.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Conflict { .. } => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Aborted => {
                    self.aborted.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Rejected { error } => {
                    let mut rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
                    *rejected.entry(error.code.as_str()).or_default() += 1;
                }
            }
        }
    }

    pub fn totals(&self) -> OutcomeTotals {
        let rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        OutcomeTotals {
            applied: self.applied.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            rejected: rejected
                .iter()
                .map(|(code, n)| ((*code).to_owned(), *n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutations::wire::RefusalCode;

    #[test]
    fn each_outcome_is_counted_and_rejections_by_their_code() {
        let counts = OutcomeCounts::default();
        let applied = Outcome::Applied {
            row: None,
            clamped_to: None,
        };
        let conflict = Outcome::Conflict {
            lost: vec!["title".into()],
            row: None,
            clamped_to: None,
        };
        let check = Outcome::rejected(RefusalCode::CheckViolation, Some("n"), "n > 0");
        let forbidden = Outcome::rejected(RefusalCode::Forbidden, None, "no");
        counts.record([&applied, &applied, &conflict, &check, &check, &forbidden]);
        counts.record([&Outcome::Aborted]);
        let totals = counts.totals();
        assert_eq!(
            (totals.applied, totals.conflicts, totals.aborted),
            (2, 1, 1)
        );
        assert_eq!(
            totals.rejected,
            BTreeMap::from([("check_violation".into(), 2), ("forbidden".into(), 1)])
        );
        assert_eq!(totals.total(), 7);
    }
}
