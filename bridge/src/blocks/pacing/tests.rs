//! The pacer against a simulated broker, on an injected clock.

use super::*;

const W: Duration = Duration::from_millis(100);

/// The injected clock: each window exactly `W` after the last.
fn next(p: &Pacer) -> Instant {
    p.last.map_or_else(Instant::now, |t| t + W)
}

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
        let a = p.on_window(&w, true, next(p));
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
    // The rate may stay above it (up to RATE_OVER_BW x bw); the delivery
    // window is what holds: the queue in front of the broker stays short.
    assert!(
        p.rate() <= 20_000.0 * RATE_OVER_BW + 1.0,
        "still at {:.0}/s",
        p.rate()
    );
    assert!(slow[150..].iter().all(|(_, w)| w.delay < DELAY_HIGH * 2));
    assert!(
        slow[150..].iter().all(|(_, w)| w.in_flight <= 20_000),
        "more than a second of the slow broker queued"
    );
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
        let a = p.on_window(&w, true, next(&p));
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
        p.on_window(&calm(0), false, next(&p));
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
        total += p.on_window(&blind, true, next(&p)).deliveries;
    }
    assert_eq!(p.rate(), BLIND_RATE);
    // No queue bound without a probe: the blind rate still flows.
    assert_eq!(total, 15_000);
}

#[test]
fn the_ceiling_caps_and_the_floor_holds() {
    let mut p = Pacer::new(W, Some(5_000));
    for _ in 0..20 {
        p.on_window(&calm(100), true, next(&p));
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
        p.on_window(&bad, true, next(&p));
    }
    assert_eq!(p.rate(), MIN_RATE);
}

#[test]
fn one_overload_is_one_step_down() {
    let mut p = Pacer::new(W, None);
    for _ in 0..5 {
        p.on_window(&calm(3_000), true, next(&p));
    }
    let high = p.rate();
    let late = FlightWindow {
        delay: Duration::from_millis(1500),
        delivered: 3_000,
        probing: true,
        ..FlightWindow::default()
    };
    p.on_window(&late, true, next(&p));
    assert_eq!(p.backoffs(), 1);
    let after = p.rate();
    assert!(after < high && after >= high * MAX_STEP_DOWN);
    // The same late queue, still draining: held, no second step.
    for _ in 0..(MAX_HOLD - 1) {
        p.on_window(&late, true, next(&p));
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
    assert_eq!(p.on_window(&full, true, next(&p)).deliveries, 0);
}

#[test]
fn a_lost_block_backs_off_even_with_a_short_delay() {
    let mut p = Pacer::new(W, None);
    for _ in 0..5 {
        p.on_window(&calm(3_000), true, next(&p));
    }
    let high = p.rate();
    let lost = FlightWindow {
        lost: 10,
        ..calm(3_000)
    };
    p.on_window(&lost, true, next(&p));
    assert_eq!(p.backoffs(), 1);
    assert!(p.rate() < high);
}
