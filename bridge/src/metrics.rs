//! Counters: what the bridge stored, published and dropped, as atomics that
//! every task bumps without locks. Logged periodically at info and read by
//! tests through [`Metrics::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why an incoming message was dropped or a command refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A topic we do not handle, or a name outside the alphabet in it.
    BadTopic,
    /// A payload that is not the expected CBOR message.
    Malformed,
    /// A payload over its message's bound.
    Oversized,
    /// A Status from a device that never said Hello.
    UnknownDevice,
    /// A command that is not a valid envelope.
    CommandMalformed,
    /// A command signed by a key we do not trust, or whose signature fails.
    CommandForged,
    /// A command outside the time window.
    CommandStale,
    /// A command whose request id was already received.
    CommandReplayed,
    /// Not used any more: under load the bridge stops reading instead of
    /// dropping. Kept so that logged counter names stay stable.
    Overloaded,
    /// A message for a part of the bridge that is not running (e.g. block
    /// requests before the block server exists).
    Unrouted,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; 10] = [
        DropReason::BadTopic,
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::UnknownDevice,
        DropReason::CommandMalformed,
        DropReason::CommandForged,
        DropReason::CommandStale,
        DropReason::CommandReplayed,
        DropReason::Overloaded,
        DropReason::Unrouted,
    ];

    /// The reason's name in logs and snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadTopic => "bad_topic",
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::UnknownDevice => "unknown_device",
            DropReason::CommandMalformed => "command_malformed",
            DropReason::CommandForged => "command_forged",
            DropReason::CommandStale => "command_stale",
            DropReason::CommandReplayed => "command_replayed",
            DropReason::Overloaded => "overloaded",
            DropReason::Unrouted => "unrouted",
        }
    }

    fn index(self) -> usize {
        // Invariant: ALL lists every variant once.
        DropReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The bridge's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    dropped: [AtomicU64; DropReason::ALL.len()],
    pub hellos: AtomicU64,
    pub presence: AtomicU64,
    pub statuses_stored: AtomicU64,
    pub statuses_duplicate: AtomicU64,
    pub statuses_conflict: AtomicU64,
    pub commits: AtomicU64,
    pub acks_published: AtomicU64,
    pub memberships_published: AtomicU64,
    pub commands_accepted: AtomicU64,
    pub commands_refused: AtomicU64,
    pub connects: AtomicU64,
    pub retained_republished: AtomicU64,
    /// Retained payloads on the bridge's own topics that it did not
    /// publish, overwritten with its own.
    pub foreign_retained: AtomicU64,
}

/// A copy of every counter at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub dropped: std::collections::BTreeMap<&'static str, u64>,
    pub hellos: u64,
    pub presence: u64,
    pub statuses_stored: u64,
    pub statuses_duplicate: u64,
    pub statuses_conflict: u64,
    pub commits: u64,
    pub acks_published: u64,
    pub memberships_published: u64,
    pub commands_accepted: u64,
    pub commands_refused: u64,
    pub connects: u64,
    pub retained_republished: u64,
    pub foreign_retained: u64,
}

impl Snapshot {
    /// Drops for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped.get(r.as_str()).copied().unwrap_or(0)
    }

    /// Drops for every reason together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Metrics {
    /// Counts one drop.
    pub fn count_drop(&self, r: DropReason) {
        self.dropped[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Drops so far for one reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        get(&self.dropped[r.index()])
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Every counter now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            dropped: DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.dropped(*r)))
                .collect(),
            hellos: get(&self.hellos),
            presence: get(&self.presence),
            statuses_stored: get(&self.statuses_stored),
            statuses_duplicate: get(&self.statuses_duplicate),
            statuses_conflict: get(&self.statuses_conflict),
            commits: get(&self.commits),
            acks_published: get(&self.acks_published),
            memberships_published: get(&self.memberships_published),
            commands_accepted: get(&self.commands_accepted),
            commands_refused: get(&self.commands_refused),
            connects: get(&self.connects),
            retained_republished: get(&self.retained_republished),
            foreign_retained: get(&self.foreign_retained),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_reason() {
        let m = Metrics::default();
        m.count_drop(DropReason::Malformed);
        m.count_drop(DropReason::Malformed);
        m.count_drop(DropReason::Unrouted);
        Metrics::add(&m.statuses_stored, 5);
        let s = m.snapshot();
        assert_eq!(s.dropped(DropReason::Malformed), 2);
        assert_eq!(s.dropped(DropReason::Unrouted), 1);
        assert_eq!(s.dropped_total(), 3);
        assert_eq!(s.statuses_stored, 5);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
