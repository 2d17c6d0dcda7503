//! `resend_after`: a pass right behind a pass is not sent, and a device
//! that asks after a pass still has its blocks in bounded time. The clock
//! is the tests': every `want` and `take` is given its instant.

use std::collections::{BTreeMap, BTreeSet};

use super::tests::{art, dev, shape, COST};
use super::*;

const WINDOW: Duration = Duration::from_millis(150);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sched(resend_after: Duration) -> Scheduler {
    Scheduler::new(ScheduleConfig {
        broadcast: true,
        max_devices: 10_000,
        resend_after,
    })
}

/// Devices 1 and 2 ask for all `blocks` of `a` at `asked`, and the window
/// at `at` sends them to both: a pass. How many blocks it sent.
fn pass(s: &mut Scheduler, a: &ArtifactId, blocks: u32, asked: Instant, at: Instant) -> usize {
    s.want(&dev(1), a, shape(blocks), 0..blocks, asked);
    s.want(&dev(2), a, shape(blocks), 0..blocks, asked);
    s.take(100 * COST, 100, at).len()
}

/// What a simulated campaign of one 9-block artifact measured.
#[derive(Debug)]
struct Run {
    /// Most times one block was sent (broadcast or unicast).
    passes: u32,
    /// Broadcasts of the block sent most often.
    broadcasts: u32,
    /// The longest a device waited from its ask to its last block.
    worst_wait: Duration,
}

/// `devices` each ask for all 9 blocks, one every `gap` from `t`; the
/// server takes a window every 150 ms with room for everything. A device
/// is subscribed from its ask on: it gets every broadcast from then, and
/// what is sent to its own topic.
fn campaign(resend_after: Duration, devices: u32, gap: Duration) -> Run {
    const BLOCKS: u32 = 9;
    let t = Instant::now();
    let mut s = sched(resend_after);
    let a = art("delta-from-1.0.0");
    let asked: Vec<Instant> = (0..devices).map(|n| t + gap * n).collect();
    let mut got: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); devices as usize];
    let mut done: Vec<Option<Instant>> = vec![None; devices as usize];
    let mut sends: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    let mut next_ask = 0;
    let mut now = t;
    while done.iter().any(Option::is_none) {
        assert!(
            now < t + Duration::from_secs(30),
            "not every device got its blocks"
        );
        while next_ask < devices && asked[next_ask as usize] <= now {
            s.want(
                &dev(next_ask),
                &a,
                shape(BLOCKS),
                0..BLOCKS,
                asked[next_ask as usize],
            );
            next_ask += 1;
        }
        for x in s.take(1000 * COST, 1000, now) {
            let e = sends.entry(x.index).or_default();
            e.0 += 1;
            e.1 += u32::from(x.target == Target::Broadcast);
            for d in 0..next_ask {
                let reaches = match &x.target {
                    Target::Broadcast => true,
                    Target::Device(id) => *id == dev(d),
                };
                if reaches && got[d as usize].insert(x.index) && got[d as usize].len() == 9 {
                    done[d as usize] = Some(now);
                }
            }
        }
        now += WINDOW;
    }
    Run {
        passes: sends.values().map(|c| c.0).max().unwrap_or(0),
        broadcasts: sends.values().map(|c| c.1).max().unwrap_or(0),
        worst_wait: done
            .iter()
            .zip(&asked)
            .map(|(d, a)| d.unwrap().duration_since(*a))
            .max()
            .unwrap(),
    }
}

#[test]
fn asks_spread_over_a_second_share_one_more_pass_not_one_per_window() {
    // 40 devices asking over a second, as the announcement reaches them.
    let before = campaign(Duration::ZERO, 40, ms(25));
    assert!(before.passes >= 6, "without the wait: {before:?}");
    let after = campaign(ms(1000), 40, ms(25));
    // One window's askers (unicast if there is one), one pass, and one
    // more for everyone who asked during that pass's second.
    assert!(after.passes <= 3, "{after:?}");
    assert!(after.broadcasts <= 2, "{after:?}");
    // Nobody waited past the wait and a window: below the quiet spell.
    assert!(after.worst_wait <= ms(1000) + WINDOW, "{after:?}");
}

#[test]
fn asks_spread_over_three_seconds_take_a_pass_a_second() {
    let before = campaign(Duration::ZERO, 60, ms(50));
    let after = campaign(ms(1000), 60, ms(50));
    assert!(before.passes >= 15, "{before:?}");
    assert!(after.passes <= 5, "{after:?}");
    assert!(after.worst_wait <= ms(1000) + WINDOW, "{after:?}");
}

#[test]
fn a_device_asking_after_a_pass_gets_its_blocks_within_resend_after() {
    let t = Instant::now();
    let a = art("fw");
    let mut s = sched(ms(1000));
    assert_eq!(pass(&mut s, &a, 3, t, t), 3, "the first pass at once");
    // Asked 300 ms after it: waits for the broadcast to be 1 s old.
    s.want(&dev(3), &a, shape(3), [0, 2], t + ms(300));
    assert!(!s.is_idle());
    assert!(!s.has_ready());
    assert_eq!(s.pending_blocks(), 2);
    for w in 3..7 {
        assert!(s.take(100 * COST, 100, t + WINDOW * w).is_empty());
    }
    let out = s.take(100 * COST, 100, t + ms(1050));
    assert_eq!(
        out.iter()
            .map(|x| (x.index, x.target.clone()))
            .collect::<Vec<_>>(),
        vec![(0, Target::Device(dev(3))), (2, Target::Device(dev(3)))],
        "only device 3 wants them: to its own topic"
    );
    assert!(s.is_idle());
    // Asked 1.2 s after the pass (a late joiner, a device back from a
    // power loss): the next window.
    s.want(&dev(4), &a, shape(3), [1], t + ms(1200));
    assert_eq!(s.take(100 * COST, 100, t + ms(1200)).len(), 1);
}

#[test]
fn asking_again_while_deferred_merges_and_turns_it_into_a_broadcast() {
    let t = Instant::now();
    let a = art("fw");
    let mut s = sched(ms(1000));
    pass(&mut s, &a, 2, t, t);
    s.want(&dev(3), &a, shape(2), [0], t + ms(100));
    assert_eq!(
        s.want(&dev(4), &a, shape(2), [0, 1], t + ms(200)),
        Wanted::Added { new: 1, merged: 1 }
    );
    assert_eq!(s.pending_blocks(), 2);
    let out = s.take(100 * COST, 100, t + ms(1000));
    assert_eq!(
        out.iter()
            .map(|x| (x.index, x.target.clone()))
            .collect::<Vec<_>>(),
        vec![(0, Target::Broadcast), (1, Target::Device(dev(4)))]
    );
}

#[test]
fn a_unicast_block_is_not_a_pass() {
    let t = Instant::now();
    let a = art("fw");
    let mut s = sched(ms(1000));
    s.want(&dev(1), &a, shape(2), [0], t);
    assert_eq!(s.take(100 * COST, 100, t).len(), 1);
    // Device 2 did not get device 1's block: no wait.
    s.want(&dev(2), &a, shape(2), [0], t + ms(150));
    assert_eq!(
        s.take(100 * COST, 100, t + ms(150))
            .iter()
            .map(|x| x.target.clone())
            .collect::<Vec<_>>(),
        vec![Target::Device(dev(2))]
    );
}

#[test]
fn deferred_blocks_leave_the_window_to_others() {
    let t = Instant::now();
    let (a, b) = (art("a"), art("b"));
    let mut s = sched(ms(1000));
    assert_eq!(pass(&mut s, &a, 4, t, t), 4);
    s.want(&dev(3), &a, shape(4), 0..4, t + ms(100));
    s.want(&dev(4), &b, shape(100), 0..100, t + ms(100));
    // a's blocks wait: b has every window to itself, no turn skipped.
    let out = s.take(10 * COST, 100, t + ms(150));
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|x| x.artifact == b));
    let later = s.take(10 * COST, 100, t + ms(1050));
    assert_eq!(later.iter().filter(|x| x.artifact == a).count(), 4);
}

#[test]
fn an_emergencys_blocks_go_again_at_once() {
    let t = Instant::now();
    let e = art("e");
    let mut s = sched(ms(1000));
    s.set_emergency(&e, true);
    pass(&mut s, &e, 2, t, t);
    s.want(&dev(3), &e, shape(2), 0..2, t + ms(100));
    assert_eq!(s.take(100 * COST, 100, t + ms(150)).len(), 2);
    // Deferred before the campaign became an emergency: released at once.
    let n = art("n");
    pass(&mut s, &n, 2, t, t + ms(150));
    s.want(&dev(3), &n, shape(2), 0..2, t + ms(200));
    assert!(s.take(100 * COST, 100, t + ms(300)).is_empty());
    s.set_emergency(&n, true);
    assert_eq!(s.take(100 * COST, 100, t + ms(450)).len(), 2);
}

#[test]
fn removing_an_artifact_forgets_its_passes() {
    let t = Instant::now();
    let a = art("fw");
    let mut s = sched(ms(1000));
    pass(&mut s, &a, 2, t, t);
    s.want(&dev(3), &a, shape(2), 0..2, t + ms(100));
    s.remove_artifact(&a);
    assert!(s.is_idle());
    assert_eq!(s.tracked_devices(), 0);
    s.want(&dev(3), &a, shape(2), 0..2, t + ms(150));
    assert_eq!(s.take(100 * COST, 100, t + ms(150)).len(), 2);
}
