//! What the read path did lately, as operators see it (the status page): the last
//! transaction applied to the shape logs, with when it committed and when it was applied, and
//! how often each shape definition was rotated in this run. Written by the consumer task,
//! read by anyone; each figure behind a mutex held for a copy.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shapes::lsn::Lsn;

/// Definitions whose rotations are remembered; past it the count starts again (a run that
/// rotates this many different definitions has bigger news than the counts).
const REMEMBERED_DEFINITIONS: usize = 100_000;

/// A transaction the consumer applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedCommit {
    pub lsn: Lsn,
    /// When Postgres committed it (its commit timestamp, on the database server's clock).
    pub committed_at: SystemTime,
    /// When it became visible in the shape logs.
    pub applied_at: SystemTime,
}

impl AppliedCommit {
    /// Commit → applied: how far the proxy was behind when it applied this transaction
    /// (zero when the clocks disagree the other way).
    pub fn delay(&self) -> Duration {
        self.applied_at
            .duration_since(self.committed_at)
            .unwrap_or_default()
    }
}

/// A commit time as pgoutput sends it: microseconds since 2000-01-01 UTC.
pub fn from_pg_micros(micros: i64) -> SystemTime {
    const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
    let offset = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        epoch + offset
    } else {
        epoch - offset
    }
}

/// The read path's recent activity.
#[derive(Debug, Default)]
pub struct Activity {
    last_commit: Mutex<Option<AppliedCommit>>,
    rotations: Mutex<Rotations>,
}

#[derive(Debug, Default)]
struct Rotations {
    /// By canonical definition: a rotated shape's successor has the same one.
    by_definition: HashMap<String, u32>,
    total: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Activity {
    pub fn note_commit(&self, commit: AppliedCommit) {
        *lock(&self.last_commit) = Some(commit);
    }

    /// The last transaction applied in this run.
    pub fn last_commit(&self) -> Option<AppliedCommit> {
        *lock(&self.last_commit)
    }

    /// A shape of `definition` (canonical) was rotated: removed for its clients to refetch
    /// from a new snapshot.
    pub fn note_rotation(&self, definition: &str) {
        let mut rotations = lock(&self.rotations);
        rotations.total += 1;
        if rotations.by_definition.len() >= REMEMBERED_DEFINITIONS
            && !rotations.by_definition.contains_key(definition)
        {
            rotations.by_definition.clear();
        }
        *rotations
            .by_definition
            .entry(definition.to_owned())
            .or_default() += 1;
    }

    /// How often shapes of `definition` were rotated in this run.
    pub fn rotations_of(&self, definition: &str) -> u32 {
        lock(&self.rotations)
            .by_definition
            .get(definition)
            .copied()
            .unwrap_or(0)
    }

    /// Rotations of every shape in this run.
    pub fn rotations_total(&self) -> u64 {
        lock(&self.rotations).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_are_counted_per_definition_and_in_all() {
        let activity = Activity::default();
        activity.note_rotation("public.t|a");
        activity.note_rotation("public.t|a");
        activity.note_rotation("public.t|b");
        assert_eq!(activity.rotations_of("public.t|a"), 2);
        assert_eq!(activity.rotations_of("public.t|b"), 1);
        assert_eq!(activity.rotations_of("public.t|c"), 0);
        assert_eq!(activity.rotations_total(), 3);
    }

    #[test]
    fn commit_times_count_from_the_postgres_epoch() {
        let commit = AppliedCommit {
            lsn: Lsn(1),
            committed_at: from_pg_micros(1_500_000),
            applied_at: UNIX_EPOCH + Duration::from_millis(946_684_803_000),
        };
        assert_eq!(
            commit.committed_at,
            UNIX_EPOCH + Duration::from_millis(946_684_801_500)
        );
        assert_eq!(commit.delay(), Duration::from_millis(1_500));
        let reversed = AppliedCommit {
            applied_at: commit.committed_at - Duration::from_secs(1),
            ..commit
        };
        assert_eq!(reversed.delay(), Duration::ZERO, "clocks apart");
    }
}
