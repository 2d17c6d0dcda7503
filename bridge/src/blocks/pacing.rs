//! [`Pacer`]: how many block deliveries the broker is asked for in each
//! merge window, found from what it actually delivers. A pure state
//! machine: the server feeds it one [`FlightWindow`] per window (the probe's
//! view of the broker's queue, see [`super::flight`]) with the time, and
//! gets the window's allowance back. No clock of its own, no I/O.
//!
//! A delivery is one block to one device: a block broadcast to an artifact
//! downloaded by N devices costs N.
//!
//! Two limits, the smaller wins:
//!
//! - **A window of deliveries out, clocked by the probe** (as TCP's
//!   congestion window is clocked by ACKs). The broker's delivery rate
//!   (`bw`) is the largest rate the probe saw confirmed (over three
//!   windows: the copies come back in bursts) in the last [`BW_SAMPLES`]
//!   windows in which the bridge had more to send (a window with nothing
//!   to send says nothing about the broker). At most
//!   `bw x (base + window + QUEUE_TARGET)` deliveries are out at once:
//!   one round trip (the broker's own latency, `base`, the lowest delay
//!   seen with a short queue, plus one merge window, as blocks leave at a
//!   window's start) plus [`QUEUE_TARGET`] of queue. By Little's law a broker at its limit then
//!   holds about `QUEUE_TARGET` of queue, whatever its speed, and a broker
//!   that slows down stops getting blocks as soon as it stops returning
//!   them, not a second later when a delay threshold trips. Under its
//!   limit the window fills faster than the blocks come back (more than
//!   `bw` goes out), so `bw` grows until the queue appears: a slow start
//!   that doubles per round trip, and a steady state without a sawtooth.
//! - **A rate**, deliveries per second: the first [`INITIAL_RATE`], then
//!   twice as much each window while the delay stays under [`DELAY_LOW`]
//!   and the allowance was the limit, until the delay first rises; after
//!   that 5% a window while the delay is under [`DELAY_GROW`]. Never more
//!   than [`RATE_OVER_BW`] times `bw`: an unused rate does not grow without
//!   bound. It **backs off** when the delay passes [`DELAY_HIGH`] or the
//!   probe lost a block (a broker with a late spike, the window's bound not
//!   enough): to nine tenths of what the broker delivered lately (never
//!   below half the old rate in one step), then holds for as long as the
//!   queue needs to drain (three to ten windows) before judging again.
//!
//! And always:
//!
//! - **Bounded queue.** The deliveries out at once stay under half a
//!   second of the rate and [`MAX_IN_FLIGHT`]: that bounds the broker's
//!   memory (per-delivery bookkeeping; the payload is shared).
//! - **Blind.** Until a block came back through the broker (a broker that
//!   refuses the bridge's subscription, say), there is no signal: the rate
//!   stays at [`BLIND_RATE`] and nothing is raised.
//! - **Ceiling.** `[blocks] fanout_per_sec`, when set, caps the rate.
//! - **Queueing, not latency.** The delay thresholds are judged on the
//!   queueing delay: the probe's delay less the base (counted from
//!   [`DELAY_LOW`] up to [`BASE_CAP`], so a quick broker is judged on its
//!   delays as they come). A loaded machine whose every block takes 600 ms
//!   to come back is not read as a queue. The base is first taken on the
//!   first window with blocks out; until then there is no delay to judge
//!   and the start goes on (a loss still backs off).
//! - **Real time.** A window's rates are taken over the time since the
//!   last one, as given: a runtime that ticks late under load neither
//!   inflates nor starves the estimate.
//!
//! The queue the window allows (about [`QUEUE_TARGET`]) and the thresholds
//! are far below the devices' 2 s quiet spell: a broker held under them
//! delivers every block before any device asks again, so no block is sent
//! twice for being late.

use std::time::{Duration, Instant};

use super::flight::FlightWindow;

/// The first rate, deliveries per second.
pub const INITIAL_RATE: f64 = 50_000.0;
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
/// The queue the delivery window allows on top of the broker's latency.
pub const QUEUE_TARGET: Duration = Duration::from_millis(300);
/// Windows (with more to send) over which the broker's rate is the largest
/// seen: 1.5 s at the default window.
pub const BW_SAMPLES: usize = 10;
/// Windows a rate sample spans.
const SPAN: usize = 3;
/// The rate is at most this many times the broker's measured rate.
pub const RATE_OVER_BW: f64 = 3.0;
/// The deliveries out at once are at most this much of the rate...
const QUEUE_SECS: f64 = 0.5;
/// ... and at most this many (about 300 bytes of broker bookkeeping each).
pub const MAX_IN_FLIGHT: u64 = 200_000;
/// Windows held after a back-off, at least.
const MIN_HOLD: u32 = 3;
const STARTUP_GAIN: f64 = 2.0;
const STEADY_GAIN: f64 = 1.05;
const BACKOFF: f64 = 0.9;
/// One back-off keeps at least this share of the rate.
const MAX_STEP_DOWN: f64 = 0.5;
/// Windows held after a back-off, at most (1.5 s at the default window).
const MAX_HOLD: u32 = 10;
/// The base delay is taken off the delay up to this much: a broker whose
/// blocks all take longer than it is slow, whatever its queue.
pub const BASE_CAP: Duration = Duration::from_millis(500);
/// A window's time is taken as at least a quarter and at most four times
/// the nominal window (a stalled runtime is not a broker's rate).
const ELAPSED_RANGE: (f64, f64) = (0.25, 4.0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Startup,
    Steady,
}

/// The controller's knobs; [`Tuning::default`] is what the bridge runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    pub initial_rate: f64,
    pub startup_gain: f64,
    /// `None`: no delivery window (the rate alone, as before issue 15's
    /// second step), for comparison.
    pub queue_target: Option<Duration>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            initial_rate: INITIAL_RATE,
            startup_gain: STARTUP_GAIN,
            queue_target: Some(QUEUE_TARGET),
        }
    }
}

/// The controller's state.
#[derive(Debug, Clone)]
pub struct Pacer {
    window: Duration,
    ceiling: Option<f64>,
    tuning: Tuning,
    rate: f64,
    phase: Phase,
    /// Windows to wait before the next back-off or growth.
    hold: u32,
    /// Deliveries confirmed per second, smoothed over a few windows.
    delivered_rate: f64,
    /// Confirmed rates of the last windows that had more to send (a ring).
    bw: [f64; BW_SAMPLES],
    /// The last windows' deliveries and seconds: a sample is taken over
    /// them, not one window (the probe's copies come back in bursts).
    span: [(u64, f64); SPAN],
    span_next: usize,
    bw_next: usize,
    /// Fractional deliveries carried to the next window.
    carry: f64,
    backoffs: u64,
    /// The base delay: the lowest delay seen with a short queue.
    base: Option<Duration>,
    /// The hold after a back-off just ended: the queue drained.
    drained: bool,
    /// When the last window was judged.
    last: Option<Instant>,
    /// The last window's allowance held blocks back (its sample counts).
    was_limited: bool,
}

/// What the pacer decided for one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowance {
    /// Deliveries the broker may be asked for in this window.
    pub deliveries: u64,
    /// The rate behind it, deliveries per second.
    pub rate: f64,
    /// The most deliveries it lets be out at once.
    pub window: u64,
}

impl Pacer {
    /// A pacer for windows of `window`, capped at `ceiling` deliveries/s.
    pub fn new(window: Duration, ceiling: Option<u64>) -> Self {
        Self::with_tuning(window, ceiling, Tuning::default())
    }

    /// The same with other knobs (tests and measurements).
    pub fn with_tuning(window: Duration, ceiling: Option<u64>, tuning: Tuning) -> Self {
        let ceiling = ceiling.map(|c| (c as f64).max(MIN_RATE));
        let mut p = Self {
            window,
            ceiling,
            tuning,
            rate: tuning.initial_rate,
            phase: Phase::Startup,
            hold: 0,
            delivered_rate: 0.0,
            bw: [0.0; BW_SAMPLES],
            bw_next: 0,
            span: [(0, 0.0); SPAN],
            span_next: 0,
            carry: 0.0,
            backoffs: 0,
            base: None,
            drained: false,
            last: None,
            was_limited: false,
        };
        p.rate = p.clamp(p.rate);
        p
    }

    /// The current rate, deliveries per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The broker's delivery rate as measured (0 before any sample).
    pub fn bandwidth(&self) -> f64 {
        self.bw.iter().copied().fold(0.0, f64::max)
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

    /// The time this window stands for: since the last one, within range.
    fn elapsed(&mut self, now: Instant) -> f64 {
        let nominal = self.window.as_secs_f64();
        let secs = self
            .last
            .map_or(nominal, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last = Some(now);
        secs.clamp(nominal * ELAPSED_RANGE.0, nominal * ELAPSED_RANGE.1)
    }

    /// One window at `now`: `w` is what the probe saw since the last call,
    /// `limited` whether the last allowance held blocks back (more was
    /// pending).
    pub fn on_window(&mut self, w: &FlightWindow, limited: bool, now: Instant) -> Allowance {
        let secs = self.elapsed(now);
        if !w.probing {
            self.rate = self.clamp(self.rate.min(BLIND_RATE));
            return self.allow(secs, None);
        }
        let measured = w.delivered as f64 / secs;
        self.span[self.span_next] = (w.delivered, secs);
        self.span_next = (self.span_next + 1) % SPAN;
        let (n, t) = self
            .span
            .iter()
            .fold((0u64, 0.0f64), |(n, t), (d, s)| (n + d, t + s));
        let sample = if t > 0.0 { n as f64 / t } else { 0.0 };
        self.delivered_rate = if self.delivered_rate == 0.0 {
            measured
        } else {
            0.7 * self.delivered_rate + 0.3 * measured
        };
        // A window that had nothing more to send measured the bridge, not
        // the broker: it counts only if it beats what is known.
        if limited || self.was_limited || sample > self.bandwidth() {
            self.bw[self.bw_next] = sample;
            self.bw_next = (self.bw_next + 1) % BW_SAMPLES;
        }
        self.was_limited = limited;
        // Samples only where the broker's queue is known short: at the
        // start, and in the window after a back-off drained it. A delay
        // taken under a standing queue would hide that queue.
        let short_queue = self.phase == Phase::Startup || self.drained || self.base.is_none();
        let busy = w.in_flight > 0 || w.delivered > 0;
        if short_queue && busy {
            self.base = Some(self.base.map_or(w.delay, |b| b.min(w.delay)));
        }
        self.drained = false;
        if self.base.is_none() && w.lost == 0 {
            // Nothing out yet: no delay to judge (and a delay judged
            // without its base would end the start on a loaded machine).
            return self.allow(secs, Some(w.in_flight));
        }
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
            let drain = (queueing.as_secs_f64() / self.window.as_secs_f64()).ceil() as u32;
            self.hold = drain.clamp(MIN_HOLD, MAX_HOLD);
        } else if limited {
            let gain = match self.phase {
                Phase::Startup if queueing < DELAY_LOW => self.tuning.startup_gain,
                Phase::Startup => {
                    self.phase = Phase::Steady;
                    1.0
                }
                Phase::Steady if queueing < DELAY_GROW => STEADY_GAIN,
                Phase::Steady => 1.0,
            };
            let bw = self.bandwidth();
            let mut grown = self.rate * gain;
            if bw > 0.0 {
                grown = grown.min((bw * RATE_OVER_BW).max(self.tuning.initial_rate));
            }
            self.rate = self.clamp(grown);
        }
        self.allow(secs, Some(w.in_flight))
    }

    /// The most deliveries out at once: half a second of the rate, the
    /// broker's rate over its latency and the target queue, and
    /// [`MAX_IN_FLIGHT`].
    fn in_flight_cap(&self) -> f64 {
        let mut cap = (self.rate * QUEUE_SECS).min(MAX_IN_FLIGHT as f64);
        let bw = self.bandwidth();
        if let (Some(q), true) = (self.tuning.queue_target, bw > 0.0) {
            // A block goes out at a window's start at the earliest: the
            // round trip is the broker's latency plus one window.
            let round = self.base.unwrap_or_default().min(BASE_CAP) + self.window;
            // At least one window of the smallest rate: never shut.
            let by_bw = (bw * (round + q).as_secs_f64()).max(MIN_RATE * self.window.as_secs_f64());
            cap = cap.min(by_bw);
        }
        cap
    }

    /// The window's deliveries at the current rate over `secs`, within the
    /// queue bound (`None`: no probe, no bound to read).
    fn allow(&mut self, secs: f64, in_flight: Option<u64>) -> Allowance {
        let mut d = self.rate * secs + self.carry;
        let cap = self.in_flight_cap();
        if let Some(out) = in_flight {
            d = d.min((cap - out as f64).max(0.0));
        }
        let whole = d.floor();
        // Carry at most one window's worth: an idle spell does not bank.
        self.carry = (d - whole).min(self.rate * secs);
        Allowance {
            deliveries: whole as u64,
            rate: self.rate,
            window: cap as u64,
        }
    }
}

#[cfg(test)]
mod tests;
