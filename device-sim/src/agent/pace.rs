//! Connect pacing and reconnect backoff. rumqttd handles each CONNECT with
//! a blocking router call on one thread and stalls under connect storms
//! (NOTES.md: fine at 500/s, timeouts at 2,000/s), so every connect attempt
//! of a process waits its turn at a shared [`Pacer`], and a device that lost
//! its connection backs off with jitter before it tries again.
//!
//! A rate alone is not enough: a broker that is busy (fanning out blocks,
//! or short of CPU) accepts more slowly than any fixed rate, attempts pile
//! up in its 128-deep accept backlog, time out, and come back as more
//! attempts. So the pacer also caps the attempts waiting for their CONNACK;
//! each holds a [`ConnectPermit`] until the CONNACK or the failure.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Connect attempts waiting for their CONNACK at once, by default: the
/// broker's accept backlog.
pub const DEFAULT_PENDING_CONNECTS: usize = 128;

/// A shared rate limit (FIFO) and cap on pending connect attempts.
#[derive(Debug)]
pub struct Pacer {
    next: Mutex<Option<Instant>>,
    interval: Duration,
    pending: Arc<Semaphore>,
}

/// Held by a connect attempt until its CONNACK (or its failure).
#[derive(Debug)]
pub struct ConnectPermit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Pacer {
    /// At most `per_second` attempts a second (at least 1), at most
    /// [`DEFAULT_PENDING_CONNECTS`] waiting for their CONNACK.
    pub fn per_second(per_second: u32) -> Self {
        Self::new(per_second, DEFAULT_PENDING_CONNECTS)
    }

    /// At most `per_second` attempts a second and `pending` awaiting a
    /// CONNACK (each at least 1).
    pub fn new(per_second: u32, pending: usize) -> Self {
        Self {
            next: Mutex::new(None),
            interval: Duration::from_secs(1) / per_second.max(1),
            pending: Arc::new(Semaphore::new(pending.max(1))),
        }
    }

    /// Waits for this caller's turn. Holding the lock while sleeping keeps
    /// the order first come, first served.
    pub async fn wait(&self) -> ConnectPermit {
        let mut next = self.next.lock().await;
        // The semaphore is never closed, so acquiring cannot fail; if it
        // ever did, going ahead without a permit is the safe side.
        let permit = self.pending.clone().acquire_owned().await.ok();
        let now = Instant::now();
        let at = next.map_or(now, |n| n.max(now));
        tokio::time::sleep_until(at).await;
        *next = Some(at + self.interval);
        ConnectPermit(permit)
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
    async fn pending_attempts_are_capped() {
        let p = Pacer::new(1000, 2);
        let a = p.wait().await;
        let _b = p.wait().await;
        assert!(tokio::time::timeout(Duration::from_secs(5), p.wait())
            .await
            .is_err());
        drop(a);
        assert!(tokio::time::timeout(Duration::from_secs(5), p.wait())
            .await
            .is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_attempts() {
        let p = std::sync::Arc::new(Pacer::per_second(100));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                drop(p.wait().await);
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
