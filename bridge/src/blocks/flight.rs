//! [`Flight`]: what the broker has not delivered yet, measured, not
//! guessed. The bridge's egress connection subscribes to every artifact's
//! block topic like one more device (QoS 1, the devices' path through the
//! broker), so each broadcast block comes back to the bridge once the
//! broker delivered it to that subscriber. The worker records each
//! broadcast block as it publishes it ([`Flight::sent`]), the egress loop
//! each one that came back ([`Flight::seen`]); what is between the two is
//! the broker's queue for a subscriber: its age is the delivery delay,
//! times the audience it is the deliveries the broker holds.
//!
//! Brokers deliver one publisher's messages on one subscription in order
//! (MQTT 3.1.1, 4.6), so a block that comes back settles every block sent
//! before it; those that never came back count as lost. The PUBACK latency
//! of the bridge's own publishes is kept too ([`Flight::acked`]): it was a
//! candidate signal, and `ota bench` reports it beside the delay.
//!
//! The lock is held for a few queue operations; the worker takes it once
//! per block published (hundreds per second), the egress loop once per
//! block that comes back.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use schemas::msg::{Block, WireMessage};
use schemas::ArtifactId;

/// Blocks tracked at once; past it the oldest is given up (as lost).
const MAX_TRACKED: usize = 8192;
/// A block not back after this long is lost (a broker drops what it cannot
/// queue; the devices re-request it).
pub const LOST_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Sent {
    artifact: ArtifactId,
    index: u32,
    /// Deliveries it costs the broker: the artifact's audience then.
    deliveries: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Sent>,
    /// Deliveries of the blocks in `queue`.
    in_flight: u64,
    /// Deliveries confirmed, lost, and blocks confirmed, since the start.
    delivered: u64,
    lost: u64,
    blocks_seen: u64,
    /// When a block last came back (None: never on this connection).
    last_seen: Option<Instant>,
    /// The largest delivery delay and PUBACK latency since the last
    /// [`Flight::take_window`].
    max_delay: Duration,
    max_ack: Duration,
    /// All PUBACK latencies, for the average.
    ack_sum: Duration,
    acks: u64,
    /// Largest delivery delay and PUBACK latency since the start.
    peak_delay: Duration,
    peak_ack: Duration,
}

/// The broker's undelivered broadcast blocks, as seen by the probe.
#[derive(Debug, Default)]
pub struct Flight {
    inner: Mutex<Inner>,
}

/// What one window saw, for the pacing controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlightWindow {
    /// Age of the oldest block not back yet (zero when none is out).
    pub delay: Duration,
    /// Deliveries the broker holds for the audience (blocks out x audience).
    pub in_flight: u64,
    /// Deliveries confirmed since the last window.
    pub delivered: u64,
    /// Deliveries given up as lost since the last window.
    pub lost: u64,
    /// True once any block came back: the probe works on this broker.
    pub probing: bool,
    /// The largest PUBACK latency since the last window.
    pub max_ack: Duration,
}

/// Totals since the start, for `ota bench` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FlightTotals {
    pub blocks_seen: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Largest delivery delay seen by the probe, ms.
    pub peak_delay_ms: u64,
    /// Mean and largest PUBACK latency of the bridge's publishes, ms.
    pub mean_ack_ms: f64,
    pub peak_ack_ms: u64,
}

impl Flight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves plain counters: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker published a broadcast block for `deliveries` devices.
    pub fn sent(&self, artifact: &ArtifactId, index: u32, deliveries: u64, at: Instant) {
        let mut g = self.lock();
        if g.queue.len() >= MAX_TRACKED {
            if let Some(old) = g.queue.pop_front() {
                g.in_flight -= old.deliveries;
                g.lost += old.deliveries;
            }
        }
        g.in_flight += deliveries;
        g.queue.push_back(Sent {
            artifact: artifact.clone(),
            index,
            deliveries,
            at,
        });
    }

    /// A broadcast block came back through the broker at `at`. Blocks sent
    /// before it that did not come back are lost. A block we did not send
    /// (another bridge's, an old one) changes nothing.
    pub fn seen(&self, artifact: &ArtifactId, index: u32, at: Instant) {
        let mut g = self.lock();
        let Some(pos) = g
            .queue
            .iter()
            .position(|s| s.index == index && &s.artifact == artifact)
        else {
            return;
        };
        g.last_seen = Some(at);
        g.blocks_seen += 1;
        for _ in 0..pos {
            if let Some(old) = g.queue.pop_front() {
                g.in_flight -= old.deliveries;
                g.lost += old.deliveries;
            }
        }
        if let Some(s) = g.queue.pop_front() {
            g.in_flight -= s.deliveries;
            g.delivered += s.deliveries;
            let d = at.saturating_duration_since(s.at);
            g.max_delay = g.max_delay.max(d);
            g.peak_delay = g.peak_delay.max(d);
        }
    }

    /// The broker acknowledged one of the bridge's publishes after `latency`.
    pub fn acked(&self, latency: Duration) {
        let mut g = self.lock();
        g.max_ack = g.max_ack.max(latency);
        g.peak_ack = g.peak_ack.max(latency);
        g.ack_sum += latency;
        g.acks += 1;
    }

    /// The egress connection was lost: what was out will not come back on
    /// the new one (a clean session), so it is forgotten, not counted lost.
    pub fn reset(&self) {
        let mut g = self.lock();
        g.queue.clear();
        g.in_flight = 0;
        g.last_seen = None;
    }

    /// This window's signals; `delivered`, `lost` and the maxima restart.
    pub fn take_window(&self, now: Instant, last: &mut FlightTotals) -> FlightWindow {
        let mut g = self.lock();
        while g
            .queue
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > LOST_AFTER)
        {
            if let Some(old) = g.queue.pop_front() {
                g.in_flight -= old.deliveries;
                g.lost += old.deliveries;
            }
        }
        let w = FlightWindow {
            delay: g
                .queue
                .front()
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s.at))
                .max(g.max_delay),
            in_flight: g.in_flight,
            delivered: g.delivered - last.delivered,
            lost: g.lost - last.lost,
            probing: g.last_seen.is_some(),
            max_ack: g.max_ack,
        };
        g.max_delay = Duration::ZERO;
        g.max_ack = Duration::ZERO;
        *last = totals(&g);
        w
    }

    /// Totals since the start.
    pub fn totals(&self) -> FlightTotals {
        totals(&self.lock())
    }
}

impl crate::mqtt::egress::DeliveryProbe for Flight {
    fn block(&self, payload: &[u8], at: Instant) {
        // Our own broadcast, back: only its artifact and index matter.
        if let Ok(b) = Block::decode(payload) {
            self.seen(&b.artifact, b.index, at);
        }
    }

    fn acked(&self, latency: Duration) {
        Flight::acked(self, latency);
    }

    fn reset(&self) {
        Flight::reset(self);
    }
}

fn totals(g: &Inner) -> FlightTotals {
    FlightTotals {
        blocks_seen: g.blocks_seen,
        delivered: g.delivered,
        lost: g.lost,
        peak_delay_ms: g.peak_delay.as_millis() as u64,
        mean_ack_ms: if g.acks == 0 {
            0.0
        } else {
            g.ack_sum.as_secs_f64() * 1000.0 / g.acks as f64
        },
        peak_ack_ms: g.peak_ack.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::artifact as art;

    #[test]
    fn a_block_back_settles_it_and_those_before_it() {
        let f = Flight::default();
        let t = Instant::now();
        let a = art("fw");
        for i in 0..4 {
            f.sent(&a, i, 100, t);
        }
        let mut last = FlightTotals::default();
        let w = f.take_window(t + Duration::from_millis(50), &mut last);
        assert_eq!(w.in_flight, 400);
        assert_eq!(w.delay, Duration::from_millis(50));
        assert!(!w.probing);
        // Block 0 is back after 80 ms; block 2 after 120 ms, so 1 is lost.
        f.seen(&a, 0, t + Duration::from_millis(80));
        f.seen(&a, 2, t + Duration::from_millis(120));
        let w = f.take_window(t + Duration::from_millis(130), &mut last);
        assert_eq!(w.delivered, 200);
        assert_eq!(w.lost, 100);
        assert_eq!(w.in_flight, 100);
        assert!(w.probing);
        assert_eq!(w.delay, Duration::from_millis(130), "block 3 is 130 ms old");
        // Counters are per window.
        f.seen(&a, 3, t + Duration::from_millis(140));
        let w = f.take_window(t + Duration::from_millis(150), &mut last);
        assert_eq!((w.delivered, w.lost, w.in_flight), (100, 0, 0));
        assert_eq!(w.delay, Duration::from_millis(140), "the window's largest");
        let w = f.take_window(t + Duration::from_millis(160), &mut last);
        assert_eq!(w.delay, Duration::ZERO);
        assert_eq!(f.totals().peak_delay_ms, 140);
    }

    #[test]
    fn blocks_we_did_not_send_change_nothing() {
        let f = Flight::default();
        let t = Instant::now();
        f.sent(&art("a"), 1, 10, t);
        f.seen(&art("b"), 1, t);
        f.seen(&art("a"), 2, t);
        let w = f.take_window(t, &mut FlightTotals::default());
        assert_eq!((w.in_flight, w.delivered, w.lost), (10, 0, 0));
        assert!(!w.probing);
    }

    #[test]
    fn old_blocks_are_lost_and_the_queue_is_bounded() {
        let f = Flight::default();
        let t = Instant::now();
        let a = art("fw");
        for i in 0..(MAX_TRACKED as u32 + 10) {
            f.sent(&a, i, 1, t);
        }
        let mut last = FlightTotals::default();
        let w = f.take_window(t, &mut last);
        assert_eq!(w.lost, 10);
        assert_eq!(w.in_flight, MAX_TRACKED as u64);
        let w = f.take_window(t + LOST_AFTER + Duration::from_millis(1), &mut last);
        assert_eq!(w.lost, MAX_TRACKED as u64);
        assert_eq!(w.in_flight, 0);
    }

    #[test]
    fn a_reset_forgets_without_counting_loss() {
        let f = Flight::default();
        let t = Instant::now();
        f.sent(&art("a"), 0, 10, t);
        f.reset();
        let w = f.take_window(t, &mut FlightTotals::default());
        assert_eq!((w.in_flight, w.lost), (0, 0));
        f.acked(Duration::from_millis(3));
        f.acked(Duration::from_millis(5));
        let tot = f.totals();
        assert_eq!(tot.peak_ack_ms, 5);
        assert!((tot.mean_ack_ms - 4.0).abs() < 0.01);
    }
}
