//! [`Pacer`]: how many block deliveries the broker is asked for in each
//! merge window, found from what it actually delivers. A pure state
//! machine: the server feeds it one [`FlightWindow`] per window (the probe's
//! view of the broker's queue, see [`super::flight`]) and gets the window's
//! allowance back. No clock, no I/O.
//!
//! A delivery is one block to one device: a block broadcast to an artifact
//! downloaded by N devices costs N.
//!
//! - **Start.** 20,000 deliveries/s, then half as much again each window
//!   while the broker keeps its delivery delay under [`DELAY_LOW`] and the
//!   allowance was the limit, until the delay first rises.
//! - **Back off** when the delay passes [`DELAY_HIGH`] or the probe lost a
//!   block: to nine tenths of what the broker delivered lately (never below
//!   half the old rate in one step), then hold for as long as the queue
//!   needs to drain (the delay, three to ten windows) before judging
//!   again. So one overload is one step down, not a step per window while
//!   the queue it left drains.
//! - **Grow** by 5% a window while the delay is under [`DELAY_GROW`] and
//!   the allowance was the limit (an idle bridge does not inflate its rate).
//! - **Bounded queue.** Whatever the rate, the deliveries out at once stay
//!   under half a second of the rate and [`MAX_IN_FLIGHT`]: that bounds the
//!   broker's memory (per-delivery bookkeeping; the payload is shared).
//! - **Blind.** Until a block came back through the broker (a broker that
//!   refuses the bridge's subscription, say), there is no signal: the rate
//!   stays at [`BLIND_RATE`] and nothing is raised.
//! - **Ceiling.** `[blocks] fanout_per_sec`, when set, caps the rate.
//! - **Queueing, not latency.** The delays above are judged on the
//!   queueing delay: the probe's delay less the lowest delay seen with
//!   blocks out and a short queue (at the start, and right after a
//!   back-off's hold drained it): the broker's and the machine's own
//!   latency, as BBR takes its base RTT. The lowest ever, so a standing
//!   queue can never raise it; it counts from [`DELAY_LOW`] up to
//!   [`BASE_CAP`], so a quick broker is judged on its delays as they come,
//!   as before. A loaded machine whose every block takes 600 ms
//!   to come back is not read as a queue: the pacer still grows until the
//!   delay rises above that base.
//!
//! Both delays are far below the devices' 2 s quiet spell: a broker held
//! under them delivers every block before any device asks again, so no
//! block is sent twice for being late.

use std::time::Duration;

use super::flight::FlightWindow;

/// The first rate, deliveries per second.
pub const INITIAL_RATE: f64 = 20_000.0;
/// The rate never goes below this.
pub const MIN_RATE: f64 = 1_000.0;
/// The rate while the probe has seen nothing: what the embedded broker
/// delivered of 4 KiB blocks to 10,000 devices with room to spare.
pub const BLIND_RATE: f64 = 15_000.0;
/// Under this delivery delay the broker keeps up: grow.
pub const DELAY_LOW: Duration = Duration::from_millis(250);
/// Once past the start, growth goes on under this delay: a broker whose
/// own latency is high (a busy machine) is not starved for it.
pub const DELAY_GROW: Duration = Duration::from_millis(500);
/// Over it the broker is queueing: back off.
pub const DELAY_HIGH: Duration = Duration::from_millis(1000);
/// The deliveries out at once are at most this much of the rate...
const QUEUE_SECS: f64 = 0.5;
/// ... and at most this many (about 300 bytes of broker bookkeeping each).
pub const MAX_IN_FLIGHT: u64 = 200_000;
/// Windows held after a back-off, at least.
const MIN_HOLD: u32 = 3;
const STARTUP_GAIN: f64 = 1.5;
const STEADY_GAIN: f64 = 1.05;
const BACKOFF: f64 = 0.9;
/// One back-off keeps at least this share of the rate.
const MAX_STEP_DOWN: f64 = 0.5;
/// Windows held after a back-off, at most (1.5 s at the default window).
const MAX_HOLD: u32 = 10;
/// The base delay is taken off the delay up to this much: a broker whose
/// blocks all take longer than it is slow, whatever its queue.
pub const BASE_CAP: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Startup,
    Steady,
}

/// The controller's state.
#[derive(Debug, Clone)]
pub struct Pacer {
    window: Duration,
    ceiling: Option<f64>,
    rate: f64,
    phase: Phase,
    /// Windows to wait before the next back-off or growth.
    hold: u32,
    /// Deliveries confirmed per second, smoothed over a few windows.
    delivered_rate: f64,
    /// Fractional deliveries carried to the next window.
    carry: f64,
    backoffs: u64,
    /// The base delay: the lowest delay seen with a short queue.
    base: Option<Duration>,
    /// The hold after a back-off just ended: the queue drained.
    drained: bool,
}

/// What the pacer decided for one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowance {
    /// Deliveries the broker may be asked for in this window.
    pub deliveries: u64,
    /// The rate behind it, deliveries per second.
    pub rate: f64,
}

impl Pacer {
    /// A pacer for windows of `window`, capped at `ceiling` deliveries/s.
    pub fn new(window: Duration, ceiling: Option<u64>) -> Self {
        let ceiling = ceiling.map(|c| (c as f64).max(MIN_RATE));
        let mut p = Self {
            window,
            ceiling,
            rate: INITIAL_RATE,
            phase: Phase::Startup,
            hold: 0,
            delivered_rate: 0.0,
            carry: 0.0,
            backoffs: 0,
            base: None,
            drained: false,
        };
        p.rate = p.clamp(p.rate);
        p
    }

    /// The current rate, deliveries per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The base delay taken off the probe's delay (see the module doc).
    pub fn base_delay(&self) -> Duration {
        let base = self.base.unwrap_or_default();
        if base < DELAY_LOW {
            // A quick broker: judged on its delays as they come.
            return Duration::ZERO;
        }
        base.min(BASE_CAP)
    }

    /// Back-offs so far (each one overload seen).
    pub fn backoffs(&self) -> u64 {
        self.backoffs
    }

    fn clamp(&self, r: f64) -> f64 {
        let r = r.max(MIN_RATE);
        self.ceiling.map_or(r, |c| r.min(c))
    }

    /// One window: `w` is what the probe saw since the last call, `limited`
    /// whether the last allowance held blocks back (more was pending).
    pub fn on_window(&mut self, w: &FlightWindow, limited: bool) -> Allowance {
        let secs = self.window.as_secs_f64();
        if !w.probing {
            self.rate = self.clamp(self.rate.min(BLIND_RATE));
            return self.allow(secs, None);
        }
        let measured = w.delivered as f64 / secs;
        self.delivered_rate = if self.delivered_rate == 0.0 {
            measured
        } else {
            0.7 * self.delivered_rate + 0.3 * measured
        };
        // Samples only where the broker's queue is known short: at the
        // start, and in the window after a back-off drained it. A delay
        // taken under a standing queue would hide that queue.
        let short_queue = self.phase == Phase::Startup || self.drained;
        let busy = w.in_flight > 0 || w.delivered > 0;
        if short_queue && busy {
            self.base = Some(self.base.map_or(w.delay, |b| b.min(w.delay)));
        }
        self.drained = false;
        let queueing = w.delay.saturating_sub(self.base_delay());
        let overloaded = queueing > DELAY_HIGH || w.lost > 0;
        if self.hold > 0 {
            self.hold -= 1;
            self.drained = self.hold == 0;
        } else if overloaded {
            let target = (self.delivered_rate * BACKOFF).max(self.rate * MAX_STEP_DOWN);
            self.rate = self.clamp(target.min(self.rate));
            self.phase = Phase::Steady;
            self.backoffs += 1;
            let drain = (queueing.as_secs_f64() / secs).ceil() as u32;
            self.hold = drain.clamp(MIN_HOLD, MAX_HOLD);
        } else if limited {
            let gain = match self.phase {
                Phase::Startup if queueing < DELAY_LOW => STARTUP_GAIN,
                Phase::Steady if queueing < DELAY_GROW => STEADY_GAIN,
                _ => 1.0,
            };
            self.rate = self.clamp(self.rate * gain);
        }
        self.allow(secs, Some(w.in_flight))
    }

    /// The window's deliveries at the current rate, within the queue bound
    /// (`None`: no probe, no bound to read).
    fn allow(&mut self, secs: f64, in_flight: Option<u64>) -> Allowance {
        let mut d = self.rate * secs + self.carry;
        if let Some(out) = in_flight {
            let cap = (self.rate * QUEUE_SECS).min(MAX_IN_FLIGHT as f64);
            d = d.min((cap - out as f64).max(0.0));
        }
        let whole = d.floor();
        // Carry at most one window's worth: an idle spell does not bank.
        self.carry = (d - whole).min(self.rate * secs);
        Allowance {
            deliveries: whole as u64,
            rate: self.rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(100);

    fn calm(delivered: u64) -> FlightWindow {
        FlightWindow {
            delay: Duration::from_millis(20),
            delivered,
            probing: true,
            ..FlightWindow::default()
        }
    }

    /// A broker that delivers `capacity` deliveries/s with a queue in front:
    /// what is asked beyond it waits, and the wait is the delay.
    struct Broker {
        capacity: f64,
        queue: f64,
    }

    /// The same broker on a loaded machine: every block also takes `base`
    /// to come back, queue or not.
    fn slow_machine(w: FlightWindow, base: Duration) -> FlightWindow {
        FlightWindow {
            delay: w.delay + base,
            ..w
        }
    }

    impl Broker {
        fn window(&mut self, asked: u64) -> FlightWindow {
            let secs = W.as_secs_f64();
            self.queue += asked as f64;
            let delivered = self.queue.min(self.capacity * secs);
            self.queue -= delivered;
            FlightWindow {
                delay: Duration::from_secs_f64(0.02 + self.queue / self.capacity),
                in_flight: self.queue as u64,
                delivered: delivered as u64,
                lost: 0,
                probing: true,
                max_ack: Duration::ZERO,
            }
        }
    }

    fn run(p: &mut Pacer, b: &mut Broker, windows: usize) -> Vec<(f64, FlightWindow)> {
        let mut w = b.window(0);
        let mut out = Vec::new();
        for _ in 0..windows {
            let a = p.on_window(&w, true);
            w = b.window(a.deliveries);
            out.push((a.rate, w));
        }
        out
    }

    #[test]
    fn it_finds_the_brokers_rate_and_keeps_the_delay_low() {
        for capacity in [30_000.0, 120_000.0, 400_000.0] {
            let mut p = Pacer::new(W, None);
            let mut b = Broker {
                capacity,
                queue: 0.0,
            };
            let trace = run(&mut p, &mut b, 300);
            let tail = &trace[100..];
            let mean = tail.iter().map(|(_, w)| w.delivered).sum::<u64>() as f64
                / (tail.len() as f64 * W.as_secs_f64());
            assert!(
                mean > 0.8 * capacity,
                "{capacity}/s broker: only {mean:.0}/s used"
            );
            let worst = tail.iter().map(|(_, w)| w.delay).max().unwrap();
            assert!(
                worst < Duration::from_secs(1),
                "{capacity}/s broker: delay up to {worst:?}, devices would re-ask"
            );
            // Bounded queue: never more than half a second of the rate out.
            assert!(tail
                .iter()
                .all(|(r, w)| w.in_flight as f64 <= r * QUEUE_SECS + 1.0));
        }
    }

    #[test]
    fn it_does_not_oscillate_once_it_found_the_rate() {
        let mut p = Pacer::new(W, None);
        let mut b = Broker {
            capacity: 100_000.0,
            queue: 0.0,
        };
        let trace = run(&mut p, &mut b, 400);
        let before = p.backoffs();
        let _ = run(&mut p, &mut b, 100);
        // A sawtooth, but a slow one: at most one back-off per second.
        assert!(
            p.backoffs() - before <= 10,
            "{} back-offs in 10 s",
            p.backoffs() - before
        );
        let rates: Vec<f64> = trace[300..].iter().map(|(r, _)| *r).collect();
        let (lo, hi) = rates
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), r| (l.min(*r), h.max(*r)));
        assert!(hi / lo < 2.0, "rate swings from {lo:.0} to {hi:.0}");
    }

    #[test]
    fn it_tracks_a_broker_that_slows_down_and_recovers() {
        let mut p = Pacer::new(W, None);
        let mut b = Broker {
            capacity: 200_000.0,
            queue: 0.0,
        };
        run(&mut p, &mut b, 100);
        b.capacity = 20_000.0;
        // Ten times slower: the queue it left drains, then stays short.
        let slow = run(&mut p, &mut b, 200);
        assert!(p.rate() < 40_000.0, "still at {:.0}/s", p.rate());
        assert!(slow[150..].iter().all(|(_, w)| w.delay < DELAY_HIGH * 2));
        b.capacity = 200_000.0;
        run(&mut p, &mut b, 100);
        assert!(p.rate() > 100_000.0, "only back to {:.0}/s", p.rate());
    }

    #[test]
    fn a_machines_own_latency_is_not_read_as_a_queue() {
        let base = Duration::from_millis(600);
        let mut p = Pacer::new(W, None);
        let mut b = Broker {
            capacity: 120_000.0,
            queue: 0.0,
        };
        let mut w = slow_machine(b.window(0), base);
        let mut tail = Vec::new();
        for i in 0..300 {
            let a = p.on_window(&w, true);
            w = slow_machine(b.window(a.deliveries), base);
            if i >= 100 {
                tail.push(w);
            }
        }
        let mean = tail.iter().map(|w| w.delivered).sum::<u64>() as f64
            / (tail.len() as f64 * W.as_secs_f64());
        assert!(
            mean > 0.8 * 120_000.0,
            "only {mean:.0}/s used at a 600 ms base"
        );
        assert!(p.base_delay() >= Duration::from_millis(500));
        // The queue it keeps is still short: the delay above the base.
        let worst = tail.iter().map(|w| w.delay).max().unwrap();
        assert!(worst < base + Duration::from_secs(1), "{worst:?}");
    }

    #[test]
    fn an_idle_bridge_does_not_inflate_its_rate() {
        let mut p = Pacer::new(W, None);
        for _ in 0..50 {
            p.on_window(&calm(0), false);
        }
        assert_eq!(p.rate(), INITIAL_RATE);
    }

    #[test]
    fn without_a_probe_it_stays_at_the_blind_rate() {
        let mut p = Pacer::new(W, None);
        let blind = FlightWindow {
            in_flight: 1_000_000,
            ..FlightWindow::default()
        };
        let mut total = 0;
        for _ in 0..10 {
            total += p.on_window(&blind, true).deliveries;
        }
        assert_eq!(p.rate(), BLIND_RATE);
        // No queue bound without a probe: the blind rate still flows.
        assert_eq!(total, 15_000);
    }

    #[test]
    fn the_ceiling_caps_and_the_floor_holds() {
        let mut p = Pacer::new(W, Some(5_000));
        for _ in 0..20 {
            p.on_window(&calm(100), true);
        }
        assert_eq!(p.rate(), 5_000.0);
        let mut p = Pacer::new(W, None);
        let bad = FlightWindow {
            delay: Duration::from_secs(3),
            lost: 10,
            probing: true,
            ..FlightWindow::default()
        };
        for _ in 0..1000 {
            p.on_window(&bad, true);
        }
        assert_eq!(p.rate(), MIN_RATE);
    }

    #[test]
    fn one_overload_is_one_step_down() {
        let mut p = Pacer::new(W, None);
        for _ in 0..5 {
            p.on_window(&calm(3_000), true);
        }
        let high = p.rate();
        let late = FlightWindow {
            delay: Duration::from_millis(1500),
            delivered: 3_000,
            probing: true,
            ..FlightWindow::default()
        };
        p.on_window(&late, true);
        assert_eq!(p.backoffs(), 1);
        let after = p.rate();
        assert!(after < high && after >= high * MAX_STEP_DOWN);
        // The same late queue, still draining: held, no second step.
        for _ in 0..(MAX_HOLD - 1) {
            p.on_window(&late, true);
        }
        assert_eq!(p.backoffs(), 1);
        assert_eq!(p.rate(), after);
    }

    #[test]
    fn a_full_queue_allows_nothing_more() {
        let mut p = Pacer::new(W, None);
        let full = FlightWindow {
            in_flight: MAX_IN_FLIGHT,
            delay: Duration::from_millis(50),
            probing: true,
            ..FlightWindow::default()
        };
        assert_eq!(p.on_window(&full, true).deliveries, 0);
    }
}
