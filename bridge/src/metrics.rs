//! Counters: what the bridge stored, published and dropped, as atomics that
//! every task bumps without locks. Logged periodically at info, read by
//! tests through [`Metrics::snapshot`] and exported on `/metrics`
//! (the HTTP listener's scrape). [`Latency`] is a fixed-bucket histogram of the
//! same kind (atomics), for the status commit.

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
    /// A BlockRequest dropped because the block server's inbox was full
    /// (the device asks again after its quiet spell). Everything else is
    /// never dropped under load: the bridge stops reading instead.
    Overloaded,
    /// A message for a part of the bridge that is not running (e.g. block
    /// requests before the block server exists).
    Unrouted,
    /// A Hello over its device's quota (`[status] hellos_per_minute`).
    HelloRate,
    /// A conflicting Status of a device that has the most conflicts kept
    /// aside already (`store::status::MAX_CONFLICTS_PER_DEVICE`): counted
    /// as a conflict too, not stored.
    ConflictNotKept,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; 12] = [
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
        DropReason::HelloRate,
        DropReason::ConflictNotKept,
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
            DropReason::HelloRate => "hello_rate",
            DropReason::ConflictNotKept => "conflict_not_kept",
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
    /// Time core spent handling its messages, ticks and queries (µs).
    pub core_busy_micros: AtomicU64,
    /// The longest single piece of work core did (µs): how long it stalled
    /// everything queued behind it.
    pub core_max_stall_micros: AtomicU64,
    /// The longest a message, query or tick waited for core (µs): from its
    /// arrival (the MQTT publish read, the ingest batch sent, the query
    /// asked, the tick due) to core taking it up.
    pub core_max_wait_micros: AtomicU64,
    /// Core's handling time of each piece of work.
    pub core_handle: Latency,
    /// How long each piece of work waited for core (see `core_max_wait_micros`).
    pub core_wait: Latency,
    /// Retained payloads on the bridge's own topics that it did not
    /// publish, overwritten with its own.
    pub foreign_retained: AtomicU64,
    /// `cancelled` Statuses (not `superseded`) of campaigns the bridge
    /// never aborted: counted as failures (campaign `tally`).
    pub status_anomalies: AtomicU64,
    /// From a status batch's first message to its flush.
    pub commit_latency: Latency,
    /// Repeated warnings, logged once per interval.
    pub quiet: crate::quiet::QuietLogs,
}

/// Upper bounds of [`Latency`]'s buckets, seconds (a last one is +Inf).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A histogram of durations in fixed buckets ([`LATENCY_BUCKETS`]), as
/// atomics: observing takes no lock.
#[derive(Debug, Default)]
pub struct Latency {
    /// Per bucket (not cumulative); the last one past every bound.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// A copy of a [`Latency`]: cumulative counts per upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// (upper bound in seconds, observations at or below it).
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_secs: f64,
}

impl Latency {
    /// Counts one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Every bucket now.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += get(&self.counts[i]);
            buckets.push((*b, cumulative));
        }
        let count = cumulative + get(&self.counts[LATENCY_BUCKETS.len()]);
        LatencySnapshot {
            buckets,
            count,
            sum_secs: get(&self.sum_micros) as f64 / 1e6,
        }
    }
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
    pub core_busy_micros: u64,
    pub core_max_stall_micros: u64,
    pub core_max_wait_micros: u64,
    pub foreign_retained: u64,
    pub status_anomalies: u64,
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

    /// Core did one piece of work that took `d`.
    pub fn core_worked(&self, d: std::time::Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.core_busy_micros.fetch_add(micros, Ordering::Relaxed);
        self.core_max_stall_micros
            .fetch_max(micros, Ordering::Relaxed);
        self.core_handle.observe(d);
    }

    /// A piece of work waited `d` for core before core took it up.
    pub fn core_waited(&self, d: std::time::Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.core_max_wait_micros
            .fetch_max(micros, Ordering::Relaxed);
        self.core_wait.observe(d);
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
            core_busy_micros: get(&self.core_busy_micros),
            core_max_stall_micros: get(&self.core_max_stall_micros),
            core_max_wait_micros: get(&self.core_max_wait_micros),
            foreign_retained: get(&self.foreign_retained),
            status_anomalies: get(&self.status_anomalies),
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

    #[test]
    fn latency_buckets_are_cumulative() {
        use std::time::Duration;
        let l = Latency::default();
        l.observe(Duration::from_micros(500));
        l.observe(Duration::from_millis(3));
        l.observe(Duration::from_secs(60));
        let s = l.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.001, 1));
        assert_eq!(s.buckets[2], (0.005, 2));
        assert_eq!(s.buckets.last(), Some(&(10.0, 2)));
        assert!((s.sum_secs - 60.0035).abs() < 1e-6, "{}", s.sum_secs);
    }
}
