//! When a shape log is compacted, and how much of its recent tail stays as it is (pure).

/// `--compact-after`: how much history may pile up after the compacted range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Bytes of history after the compacted range that start a compaction (also needed: at
    /// least as many as the log keeps, see [`CompactionPolicy::due`]).
    pub compact_after: u64,
}

/// A log's sizes, as the policy weighs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSizes {
    pub snapshot: u64,
    /// The compacted range at the start of `changes.log` (0 if none).
    pub compacted: u64,
    /// `changes.log` after the compacted range.
    pub uncompacted: u64,
    /// Entries committed since the log was opened or last compacted, and how many of them
    /// were updates or deletes.
    pub entries: u64,
    pub superseding: u64,
}

/// Updates and deletes must be at least one entry in this many: a history of inserts (an
/// event or message table) merges into itself, and compacting it would only copy it.
const SUPERSEDING_ONE_IN: u64 = 8;

impl CompactionPolicy {
    /// Due when the history after the compacted range reaches `compact_after` **and** is at
    /// least as big as what the log keeps (snapshot + compacted range): a shape whose rows
    /// take more than `compact_after` is compacted when its history doubles its log, so the
    /// work per byte written stays constant however big the shape, and its log stays within
    /// about twice its data plus `compact_after`. And the history must hold enough updates
    /// and deletes to merge ([`SUPERSEDING_ONE_IN`]).
    pub fn due(&self, sizes: LogSizes) -> bool {
        sizes.uncompacted >= self.compact_after.max(1)
            && sizes.uncompacted >= sizes.snapshot + sizes.compacted
            && sizes.superseding.saturating_mul(SUPERSEDING_ONE_IN) >= sizes.entries
    }

    /// Bytes at the end of the log that stay byte for byte: the chunks live clients read
    /// (a quarter of `compact_after`, at most a chunk).
    pub fn keep_tail(&self, chunk_bytes: u64) -> u64 {
        (self.compact_after / 4).min(chunk_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CompactionPolicy = CompactionPolicy {
        compact_after: 1000,
    };

    fn sizes(snapshot: u64, compacted: u64, uncompacted: u64) -> LogSizes {
        LogSizes {
            snapshot,
            compacted,
            uncompacted,
            entries: 100,
            superseding: 50,
        }
    }

    #[test]
    fn a_small_history_is_left_alone() {
        assert!(!POLICY.due(sizes(0, 0, 999)));
        assert!(POLICY.due(sizes(0, 0, 1000)));
    }

    #[test]
    fn a_big_shape_waits_until_its_history_is_as_big_as_what_the_log_keeps() {
        assert!(!POLICY.due(sizes(5000, 2000, 6999)));
        assert!(POLICY.due(sizes(5000, 2000, 7000)));
    }

    #[test]
    fn a_history_of_inserts_is_left_alone_however_big() {
        let with = |entries, superseding| LogSizes {
            entries,
            superseding,
            ..sizes(0, 0, 1 << 30)
        };
        assert!(!POLICY.due(with(1_000_000, 0)));
        assert!(!POLICY.due(with(1_000_000, 124_999)));
        assert!(POLICY.due(with(1_000_000, 125_000)));
    }

    #[test]
    fn the_kept_tail_is_a_quarter_of_the_threshold_and_at_most_a_chunk() {
        assert_eq!(POLICY.keep_tail(10 << 20), 250);
        assert_eq!(POLICY.keep_tail(100), 100);
    }
}
