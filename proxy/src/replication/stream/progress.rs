//! Which WAL position the stream may acknowledge to Postgres.
//!
//! The standby status update tells Postgres "everything before this LSN is safe with me":
//! it moves the slot's `confirmed_flush_lsn`, after which Postgres may recycle the WAL and
//! will never send those transactions again. So the acknowledged position is the larger of
//! two things, and nothing else:
//!
//! - **flushed**: the commit end LSN the consumer published on its watch: every transaction
//!   whose `Commit.end_lsn` is at or below it is durable in every shape log it touched.
//! - **an idle keepalive's WAL end**: a keepalive says the walsender has decoded up to its
//!   `wal_end`. If it arrived between transactions, every transaction that committed before
//!   `wal_end` has already been delivered (pgoutput v1 sends each one whole at its commit),
//!   so once the consumer has flushed all of those, nothing below `wal_end` is still owed to
//!   us. Acknowledging it keeps an idle slot (a database busy with tables we do not
//!   publish) from holding WAL forever. A keepalive that arrives *inside* a transaction is
//!   ignored: its `wal_end` can lie beyond the commit of the transaction being sent.
//!
//! The tracker only computes the position; the replication client sends it on its status
//! timer and in reply to keepalives that ask for one.

use shapes::lsn::Lsn;

/// The acknowledgement bookkeeping of one stream (it lives across reconnects).
#[derive(Debug, Default)]
pub(crate) struct AckTracker {
    /// What the consumer published as durable.
    flushed: Lsn,
    /// The highest `end_lsn` of a Commit handed to the consumer.
    delivered: Lsn,
    /// An idle keepalive's WAL end, acknowledgeable once `flushed` reaches the `delivered`
    /// recorded with it.
    idle: Option<IdleKeepalive>,
    /// The highest position acknowledged so far (acknowledgements never go back).
    acked: Lsn,
}

#[derive(Debug, Clone, Copy)]
struct IdleKeepalive {
    wal_end: Lsn,
    needs_flushed: Lsn,
}

impl AckTracker {
    /// Starts from a position known to be durable (the consumer's start position).
    pub fn new(durable: Lsn) -> Self {
        Self {
            flushed: durable,
            acked: durable,
            ..Self::default()
        }
    }

    pub fn flushed(&mut self, lsn: Lsn) {
        self.flushed = self.flushed.max(lsn);
    }

    pub fn commit_delivered(&mut self, end_lsn: Lsn) {
        self.delivered = self.delivered.max(end_lsn);
    }

    pub fn keepalive(&mut self, wal_end: Lsn, in_transaction: bool) {
        if in_transaction {
            return;
        }
        // A newer keepalive needs at least as much flushed and acknowledges at least as far,
        // so it replaces the older one.
        self.idle = Some(IdleKeepalive {
            wal_end,
            needs_flushed: self.delivered,
        });
    }

    /// The position to report as written, flushed and applied.
    pub fn ack(&mut self) -> Lsn {
        let mut ack = self.acked.max(self.flushed);
        if let Some(idle) = self.idle
            && self.flushed >= idle.needs_flushed
        {
            ack = ack.max(idle.wal_end);
            self.idle = None;
        }
        self.acked = ack;
        ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledges_what_the_consumer_flushed() {
        let mut t = AckTracker::new(Lsn(100));
        assert_eq!(t.ack(), Lsn(100));
        t.commit_delivered(Lsn(200));
        assert_eq!(t.ack(), Lsn(100), "delivered is not flushed");
        t.flushed(Lsn(200));
        assert_eq!(t.ack(), Lsn(200));
    }

    #[test]
    fn an_idle_keepalive_is_acknowledged_once_everything_delivered_is_flushed() {
        let mut t = AckTracker::new(Lsn(100));
        t.commit_delivered(Lsn(200));
        t.keepalive(Lsn(500), false);
        assert_eq!(t.ack(), Lsn(100));
        t.flushed(Lsn(150));
        assert_eq!(t.ack(), Lsn(150));
        t.flushed(Lsn(200));
        assert_eq!(t.ack(), Lsn(500));
    }

    #[test]
    fn a_keepalive_inside_a_transaction_is_never_acknowledged() {
        let mut t = AckTracker::new(Lsn(100));
        t.keepalive(Lsn(900), true);
        assert_eq!(t.ack(), Lsn(100));
        t.commit_delivered(Lsn(950));
        t.flushed(Lsn(950));
        assert_eq!(t.ack(), Lsn(950));
    }

    #[test]
    fn a_keepalive_on_a_fresh_stream_is_acknowledged_at_once() {
        let mut t = AckTracker::new(Lsn::ZERO);
        t.keepalive(Lsn(300), false);
        assert_eq!(t.ack(), Lsn(300));
    }

    #[test]
    fn acknowledgements_never_go_back() {
        let mut t = AckTracker::new(Lsn(100));
        t.keepalive(Lsn(400), false);
        assert_eq!(t.ack(), Lsn(400));
        t.flushed(Lsn(300));
        assert_eq!(t.ack(), Lsn(400));
    }
}
