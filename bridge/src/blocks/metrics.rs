//! The block server's counters: what it accepted, refused (and why) and
//! published, as atomics bumped without locks. Tests and the benchmark read
//! them through [`BlockMetrics::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why a BlockRequest was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Not a BlockRequest (bad CBOR, empty or oversized bitmap, ...).
    Malformed,
    /// An artifact the bridge does not hold.
    UnknownArtifact,
    /// An offset at or past the artifact's last block.
    PastEnd,
    /// A bitmap that asks for no block of the artifact.
    Empty,
    /// The device sent more requests than its rate allows.
    RateLimited,
    /// Unicast-only mode with every device slot taken.
    Overloaded,
    /// An artifact no running campaign serves now (paused, halted, aborted).
    Held,
    /// A device that is not admitted, or an artifact not announced to it
    /// (PROTOCOL.md E1; counted as `blocks_not_announced` by the identity
    /// too, and logged there).
    NotAnnounced,
}

impl Refusal {
    /// Every reason.
    pub const ALL: [Refusal; 8] = [
        Refusal::Malformed,
        Refusal::UnknownArtifact,
        Refusal::PastEnd,
        Refusal::Empty,
        Refusal::RateLimited,
        Refusal::Overloaded,
        Refusal::Held,
        Refusal::NotAnnounced,
    ];

    /// The reason's name in logs and snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnknownArtifact => "unknown_artifact",
            Refusal::PastEnd => "past_end",
            Refusal::Empty => "empty",
            Refusal::RateLimited => "rate_limited",
            Refusal::Overloaded => "overloaded",
            Refusal::Held => "held",
            Refusal::NotAnnounced => "not_announced",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The block server's counters.
#[derive(Debug, Default)]
pub struct BlockMetrics {
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Requests accepted.
    pub requests: AtomicU64,
    /// Wanted blocks that were pending already for another device.
    pub merged: AtomicU64,
    pub blocks_broadcast: AtomicU64,
    pub blocks_unicast: AtomicU64,
    /// Payload bytes published on artifact topics.
    pub bytes_broadcast: AtomicU64,
    /// Payload bytes published on device topics.
    pub bytes_unicast: AtomicU64,
    /// Blocks that could not be read or encoded (artifact gone, file damaged).
    pub encode_failed: AtomicU64,
    /// The pacer's rate now, deliveries per second.
    pub pace_rate: AtomicU64,
    /// The pacer's back-offs (overloads seen) so far.
    pub pace_backoffs: AtomicU64,
}

/// A copy of every counter at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlockSnapshot {
    pub refused: std::collections::BTreeMap<&'static str, u64>,
    pub requests: u64,
    pub merged: u64,
    pub blocks_broadcast: u64,
    pub blocks_unicast: u64,
    pub bytes_broadcast: u64,
    pub bytes_unicast: u64,
    pub encode_failed: u64,
    pub pace_rate: u64,
    pub pace_backoffs: u64,
}

impl BlockSnapshot {
    /// Refusals for one reason.
    pub fn refused(&self, r: Refusal) -> u64 {
        self.refused.get(r.as_str()).copied().unwrap_or(0)
    }

    /// Refusals for every reason.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Every byte of block payload the bridge published.
    pub fn egress_bytes(&self) -> u64 {
        self.bytes_broadcast + self.bytes_unicast
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl BlockMetrics {
    /// Counts one refusal.
    pub fn refuse(&self, r: Refusal) {
        self.refused[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Every counter now.
    pub fn snapshot(&self) -> BlockSnapshot {
        BlockSnapshot {
            refused: Refusal::ALL
                .iter()
                .map(|r| (r.as_str(), get(&self.refused[r.index()])))
                .collect(),
            requests: get(&self.requests),
            merged: get(&self.merged),
            blocks_broadcast: get(&self.blocks_broadcast),
            blocks_unicast: get(&self.blocks_unicast),
            bytes_broadcast: get(&self.bytes_broadcast),
            bytes_unicast: get(&self.bytes_unicast),
            encode_failed: get(&self.encode_failed),
            pace_rate: get(&self.pace_rate),
            pace_backoffs: get(&self.pace_backoffs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_reason() {
        let m = BlockMetrics::default();
        m.refuse(Refusal::PastEnd);
        m.refuse(Refusal::PastEnd);
        m.refuse(Refusal::Overloaded);
        BlockMetrics::add(&m.bytes_unicast, 10);
        BlockMetrics::add(&m.bytes_broadcast, 5);
        let s = m.snapshot();
        assert_eq!(s.refused(Refusal::PastEnd), 2);
        assert_eq!(s.refused_total(), 3);
        assert_eq!(s.egress_bytes(), 15);
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
