//! [`Recent`]: which blocks of each artifact were broadcast lately, so that
//! a block asked for again right after it went out to the artifact's topic
//! waits until the broadcast is `after` old instead of going out again at
//! once (the scheduler keeps it deferred). Pure: the caller gives the time.
//!
//! Bounded: per artifact a bitset of its blocks and a queue of the
//! broadcasts of the last `after`, each block at most once (a recent block
//! is deferred, so it cannot be broadcast again until it is forgotten
//! here). An artifact's entry goes once its last broadcast is `after` old.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use schemas::ArtifactId;

use crate::blocks::wants::WantSet;

/// Blocks broadcast within the last `after`, by artifact.
#[derive(Debug)]
pub(super) struct Recent {
    after: Duration,
    by_artifact: HashMap<ArtifactId, Sent>,
}

#[derive(Debug)]
struct Sent {
    blocks: WantSet,
    /// Oldest first: time order is send order.
    queue: VecDeque<(Instant, u32)>,
}

impl Sent {
    /// Forgets the broadcasts at least `after` old at `now`.
    fn expire(&mut self, after: Duration, now: Instant) {
        while let Some((at, i)) = self.queue.front().copied() {
            if now.saturating_duration_since(at) < after {
                break;
            }
            self.queue.pop_front();
            self.blocks.remove(i);
        }
    }
}

impl Recent {
    /// Remembers broadcasts for `after` (zero: never, nothing is deferred).
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            by_artifact: HashMap::new(),
        }
    }

    /// True when block `index` of `artifact` was broadcast less than
    /// `after` before `now`.
    pub fn contains(&mut self, artifact: &ArtifactId, index: u32, now: Instant) -> bool {
        let Some(s) = self.by_artifact.get_mut(artifact) else {
            return false;
        };
        s.expire(self.after, now);
        s.blocks.contains(index)
    }

    /// True when `index` is still recent as of the last [`Recent::expire`].
    pub fn holds(&self, artifact: &ArtifactId, index: u32) -> bool {
        self.by_artifact
            .get(artifact)
            .is_some_and(|s| s.blocks.contains(index))
    }

    /// Block `index` of an artifact of `blocks` blocks went to its topic at
    /// `now` (times given in order).
    pub fn record(&mut self, artifact: &ArtifactId, blocks: u32, index: u32, now: Instant) {
        if self.after.is_zero() {
            return;
        }
        let s = self
            .by_artifact
            .entry(artifact.clone())
            .or_insert_with(|| Sent {
                blocks: WantSet::new(blocks),
                queue: VecDeque::new(),
            });
        if s.blocks.insert(index) {
            s.queue.push_back((now, index));
        }
    }

    /// Forgets every broadcast at least `after` old at `now`.
    pub fn expire(&mut self, now: Instant) {
        let after = self.after;
        self.by_artifact.retain(|_, s| {
            s.expire(after, now);
            !s.queue.is_empty()
        });
    }

    /// Forgets an artifact.
    pub fn remove(&mut self, artifact: &ArtifactId) {
        self.by_artifact.remove(artifact);
    }

    /// Artifacts with recent broadcasts (for tests and bounds).
    #[cfg(test)]
    pub fn artifacts(&self) -> usize {
        self.by_artifact.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_is_recent_for_after_then_forgotten() {
        let a = ArtifactId::new("fw").unwrap();
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Recent::new(ms(1000));
        r.record(&a, 8, 3, t);
        r.record(&a, 8, 5, t + ms(400));
        assert!(r.contains(&a, 3, t + ms(999)));
        assert!(!r.contains(&a, 4, t + ms(999)));
        assert!(!r.contains(&a, 3, t + ms(1000)), "1 s old: not recent");
        assert!(r.contains(&a, 5, t + ms(1000)));
        r.expire(t + ms(1400));
        assert_eq!(r.artifacts(), 0, "the entry goes with its last broadcast");
        let mut off = Recent::new(Duration::ZERO);
        off.record(&a, 8, 3, t);
        assert!(!off.contains(&a, 3, t));
    }
}
