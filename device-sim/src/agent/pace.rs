//! Connect pacing and reconnect backoff. rumqttd handles each CONNECT with
//! a blocking router call on one thread and stalls under connect storms
//! (NOTES.md: fine at 500/s, timeouts at 2,000/s), so every connect attempt
//! of a process waits its turn at a shared [`Pacer`], and a device that lost
//! its connection backs off with jitter before it tries again.

use std::time::Duration;

use rand::Rng;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A shared rate limit on connect attempts (FIFO).
#[derive(Debug)]
pub struct Pacer {
    next: Mutex<Option<Instant>>,
    interval: Duration,
}

impl Pacer {
    /// At most `per_second` attempts a second (at least 1).
    pub fn per_second(per_second: u32) -> Self {
        Self {
            next: Mutex::new(None),
            interval: Duration::from_secs(1) / per_second.max(1),
        }
    }

    /// Waits for this caller's turn. Holding the lock while sleeping keeps
    /// the order first come, first served.
    pub async fn wait(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        let at = next.map_or(now, |n| n.max(now));
        tokio::time::sleep_until(at).await;
        *next = Some(at + self.interval);
    }
}

/// Exponential backoff with jitter between reconnect attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0 = the first retry): doubling
    /// from `min` up to `max`, then a uniform pick in its upper half.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let half = base / 2;
        half + rng.gen_range(Duration::ZERO..=half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let b = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for attempt in 0..20 {
            let d = b.delay(attempt, &mut rng);
            let base = (b.min * 2u32.pow(attempt.min(16))).min(b.max);
            assert!(d >= base / 2 && d <= base, "{attempt}: {d:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_attempts() {
        let p = std::sync::Arc::new(Pacer::per_second(100));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                p.wait().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap() - start);
        }
        times.sort();
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[9], Duration::from_millis(90));
    }
}
