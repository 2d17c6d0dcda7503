//! Repeated warnings, logged once per interval with a count. A flood of
//! bad input (an impostor, a broken device, a replayed command) must not
//! become a flood of log lines: the first one of an interval is logged,
//! with how many of its kind were not logged since the line before.
//! Counting is done apart, by the bridge's counters; this only decides
//! whether to write the line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line of a kind per this interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One kind of repeated warning.
#[derive(Debug, Default)]
pub struct Quiet {
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl Quiet {
    /// One more occurrence at `now`: `Some(held)` when it should be logged,
    /// `held` being how many were not logged since the last line.
    pub fn tick_at(&self, now: Instant) -> Option<u64> {
        let Ok(mut last) = self.last.try_lock() else {
            // Another thread is deciding right now: this one is held.
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if last.is_some_and(|t| now.saturating_duration_since(t) < INTERVAL) {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held.swap(0, Ordering::Relaxed))
    }

    /// [`Quiet::tick_at`] now.
    pub fn tick(&self) -> Option<u64> {
        self.tick_at(Instant::now())
    }
}

/// The bridge's repeated warnings, one [`Quiet`] each.
#[derive(Debug, Default)]
pub struct QuietLogs {
    /// A Hello or Status that does not decode.
    pub undecodable: Quiet,
    /// A Status from a device that never said Hello.
    pub unknown_device: Quiet,
    /// A Status that conflicts with the one stored under its seq.
    pub conflict: Quiet,
    /// A Hello that speaks another protocol version.
    pub other_proto: Quiet,
    /// Hellos over a device's quota.
    pub hello_rate: Quiet,
    /// An operator command refused (forged, stale, replayed, malformed).
    pub command_refused: Quiet,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held() {
        let q = Quiet::default();
        let t0 = Instant::now();
        assert_eq!(q.tick_at(t0), Some(0));
        for i in 1..=999u64 {
            assert_eq!(q.tick_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(q.tick_at(t0 + INTERVAL - Duration::from_millis(1)), None);
        // The next interval's first one says how many were held.
        assert_eq!(q.tick_at(t0 + INTERVAL), Some(1000));
        assert_eq!(q.tick_at(t0 + INTERVAL * 3), Some(0));
    }
}
