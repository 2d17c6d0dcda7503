//! [`Tally`]: counters by kind that are logged once per interval with
//! their counts since the last such line, never one line each, so that an
//! attacker's flood does not flood the log. Safe to use from the broker's
//! threads (atomics and one try-lock): the TLS listener's failed handshakes
//! (`handshakes.rs`) and the bridge's refusals count in one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `N` counters and when they were last logged.
#[derive(Debug)]
pub struct Tally<const N: usize> {
    total: [AtomicU64; N],
    unlogged: [AtomicU64; N],
    last_log: Mutex<Option<Instant>>,
}

impl<const N: usize> Default for Tally<N> {
    fn default() -> Self {
        Tally {
            total: std::array::from_fn(|_| AtomicU64::new(0)),
            unlogged: std::array::from_fn(|_| AtomicU64::new(0)),
            last_log: Mutex::new(None),
        }
    }
}

impl<const N: usize> Tally<N> {
    /// Counts one of kind `i`, to be logged; `i < N`.
    pub fn count(&self, i: usize) {
        self.total[i].fetch_add(1, Ordering::Relaxed);
        self.unlogged[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one of kind `i` that is never logged.
    pub fn count_quietly(&self, i: usize) {
        self.total[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Kind `i` since start.
    pub fn get(&self, i: usize) -> u64 {
        self.total[i].load(Ordering::Relaxed)
    }

    /// The counts not logged yet, `(kind, count)` for each non-zero one,
    /// when the last log is `interval` old (or there was none) and no other
    /// thread is logging right now (its line covers these); they then
    /// count as logged. `None`: not yet.
    pub fn due(&self, interval: Duration) -> Option<Vec<(usize, u64)>> {
        let mut last = self.last_log.try_lock().ok()?;
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < interval) {
            return None;
        }
        *last = Some(now);
        drop(last);
        let counts = (0..N)
            .filter_map(|i| {
                let n = self.unlogged[i].swap(0, Ordering::Relaxed);
                (n > 0).then_some((i, n))
            })
            .collect();
        Some(counts)
    }

    /// Counts waiting for the next log line, of every kind.
    pub fn unlogged(&self) -> u64 {
        self.unlogged
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_count_is_due_and_the_rest_wait_for_the_interval() {
        let t = Tally::<2>::default();
        t.count(0);
        assert_eq!(t.due(Duration::from_secs(60)), Some(vec![(0, 1)]));
        t.count(0);
        t.count(1);
        t.count_quietly(1);
        assert_eq!(t.due(Duration::from_secs(60)), None);
        assert_eq!((t.get(0), t.get(1), t.unlogged()), (2, 2, 2));
        assert_eq!(t.due(Duration::ZERO), Some(vec![(0, 1), (1, 1)]));
    }
}
