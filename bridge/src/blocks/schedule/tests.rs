//! The scheduler's rules, without a broker.

use super::*;

/// What a block costs in these tests (and `resend_tests`).
pub(super) const COST: u64 = 100;

pub(super) fn dev(n: u32) -> DeviceId {
    DeviceId::new(format!("dev-{n}")).unwrap()
}

pub(super) fn art(name: &str) -> ArtifactId {
    ArtifactId::new(name).unwrap()
}

pub(super) fn shape(blocks: u32) -> Shape {
    Shape { blocks, cost: COST }
}

/// The scheduler as it was before `resend_after`: these rules hold
/// whatever it is.
fn sched(broadcast: bool, max_devices: usize) -> Scheduler {
    Scheduler::new(ScheduleConfig {
        broadcast,
        max_devices,
        resend_after: Duration::ZERO,
    })
}

/// The one instant the tests without a clock use.
fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn targets(out: &[Send]) -> Vec<(u32, Target)> {
    out.iter().map(|s| (s.index, s.target.clone())).collect()
}

#[test]
fn one_device_gets_unicast_several_get_broadcast() {
    let mut s = sched(true, 10);
    let a = art("fw");
    assert_eq!(
        s.want(&dev(1), &a, shape(4), [0, 1, 2], t0()),
        Wanted::Added { new: 3, merged: 0 }
    );
    assert_eq!(
        s.want(&dev(2), &a, shape(4), [1, 3], t0()),
        Wanted::Added { new: 1, merged: 1 }
    );
    let out = s.take(10 * COST, 100, t0());
    assert_eq!(
        targets(&out),
        vec![
            (0, Target::Device(dev(1))),
            (1, Target::Broadcast),
            (2, Target::Device(dev(1))),
            (3, Target::Device(dev(2))),
        ]
    );
    assert!(s.is_idle());
    assert_eq!(
        s.tracked_devices(),
        0,
        "slots are freed once nothing is pending"
    );
}

#[test]
fn a_block_goes_out_once_per_window_however_often_it_is_asked() {
    let mut s = sched(true, 10);
    let a = art("fw");
    for n in 0..50 {
        s.want(&dev(n), &a, shape(2), [0, 1], t0());
        s.want(&dev(n), &a, shape(2), [0], t0());
    }
    let out = s.take(100 * COST, 100, t0());
    assert_eq!(
        targets(&out),
        vec![(0, Target::Broadcast), (1, Target::Broadcast)]
    );
    // A request after the window's take makes it pending again.
    s.want(&dev(7), &a, shape(2), [1], t0());
    assert_eq!(
        targets(&s.take(100 * COST, 100, t0())),
        vec![(1, Target::Device(dev(7)))]
    );
}

#[test]
fn the_same_device_asking_twice_stays_unicast() {
    let mut s = sched(true, 10);
    let a = art("fw");
    s.want(&dev(1), &a, shape(2), [0], t0());
    assert_eq!(
        s.want(&dev(1), &a, shape(2), [0], t0()),
        Wanted::Added { new: 0, merged: 0 }
    );
    assert_eq!(
        targets(&s.take(COST, 10, t0())),
        vec![(0, Target::Device(dev(1)))]
    );
}

#[test]
fn the_budget_and_item_limit_hold_the_rest_back() {
    let mut s = sched(true, 10);
    let a = art("fw");
    s.want(&dev(1), &a, shape(10), 0..10, t0());
    assert_eq!(s.take(3 * COST + 50, 100, t0()).len(), 3);
    assert_eq!(s.pending_blocks(), 7);
    // 50 carried over + 250 = 3 blocks.
    assert_eq!(s.take(250, 100, t0()).len(), 3);
    assert_eq!(s.take(100 * COST, 2, t0()).len(), 2);
    assert_eq!(s.pending_blocks(), 2);
    // Indices go out in order, continuing where the last window stopped.
    let rest: Vec<u32> = s
        .take(100 * COST, 100, t0())
        .iter()
        .map(|x| x.index)
        .collect();
    assert_eq!(rest, vec![8, 9]);
}

#[test]
fn a_budget_below_one_block_still_makes_progress() {
    let mut s = sched(true, 10);
    let a = art("fw");
    s.want(&dev(1), &a, shape(3), 0..3, t0());
    let sent: usize = (0..30).map(|_| s.take(COST / 10, 10, t0()).len()).sum();
    assert_eq!(sent, 3);
}

#[test]
fn emergencies_go_first_but_others_keep_a_tenth() {
    let mut s = sched(true, 10);
    let (e, n) = (art("emergency-fw"), art("normal-fw"));
    s.set_emergency(&e, true);
    s.want(&dev(1), &n, shape(1000), 0..1000, t0());
    s.want(&dev(2), &e, shape(1000), 0..1000, t0());
    let (mut urgent, mut normal) = (0, 0);
    for _ in 0..20 {
        for x in s.take(10 * COST, 1000, t0()) {
            if x.artifact == e {
                urgent += 1;
            } else {
                normal += 1;
            }
        }
    }
    assert_eq!(urgent + normal, 200);
    assert_eq!(normal, 20, "one tenth stays with the other campaigns");
    assert_eq!(urgent, 180);
}

#[test]
fn a_tenth_smaller_than_a_block_is_still_served() {
    let mut s = sched(true, 10);
    let (e, n) = (art("e"), art("n"));
    s.set_emergency(&e, true);
    s.want(&dev(1), &n, shape(100), 0..100, t0());
    s.want(&dev(2), &e, shape(100), 0..100, t0());
    // A window of 3 blocks: the tenth is 30 bytes of a 100-byte block.
    let normal: usize = (0..30)
        .map(|_| {
            s.take(3 * COST, 100, t0())
                .iter()
                .filter(|x| x.artifact == n)
                .count()
        })
        .sum();
    assert!(
        (8..=10).contains(&normal),
        "{normal} normal blocks in 30 windows"
    );
}

#[test]
fn an_idle_class_leaves_its_share() {
    let mut s = sched(true, 10);
    let e = art("e");
    s.set_emergency(&e, true);
    s.want(&dev(1), &e, shape(100), 0..100, t0());
    assert_eq!(s.take(10 * COST, 100, t0()).len(), 10);
    let mut s = sched(true, 10);
    let (e, n) = (art("e"), art("n"));
    s.set_emergency(&e, true);
    s.want(&dev(1), &e, shape(100), 0..2, t0());
    s.want(&dev(2), &n, shape(100), 0..100, t0());
    // 2 emergency blocks, then the normal artifact takes the rest.
    let out = s.take(10 * COST, 100, t0());
    assert_eq!(out.iter().filter(|x| x.artifact == e).count(), 2);
    assert_eq!(out.len(), 10);
}

#[test]
fn artifacts_of_one_class_take_turns() {
    let mut s = sched(true, 10);
    let (a, b) = (art("a"), art("b"));
    s.want(&dev(1), &a, shape(10), 0..10, t0());
    s.want(&dev(1), &b, shape(10), 0..10, t0());
    let out = s.take(4 * COST, 100, t0());
    let names: Vec<&str> = out.iter().map(|x| x.artifact.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "a", "b"]);
}

#[test]
fn past_the_device_cap_blocks_are_broadcast() {
    let mut s = sched(true, 2);
    let a = art("fw");
    s.want(&dev(1), &a, shape(3), [0], t0());
    s.want(&dev(2), &a, shape(3), [1], t0());
    assert_eq!(
        s.want(&dev(3), &a, shape(3), [2], t0()),
        Wanted::Added { new: 1, merged: 0 }
    );
    assert_eq!(s.tracked_devices(), 2);
    assert_eq!(
        targets(&s.take(10 * COST, 10, t0())),
        vec![
            (0, Target::Device(dev(1))),
            (1, Target::Device(dev(2))),
            (2, Target::Broadcast),
        ]
    );
}

#[test]
fn unicast_only_sends_to_each_device_and_refuses_past_the_cap() {
    let mut s = sched(false, 2);
    let a = art("fw");
    s.want(&dev(1), &a, shape(2), [0, 1], t0());
    s.want(&dev(2), &a, shape(2), [0], t0());
    assert_eq!(s.want(&dev(3), &a, shape(2), [0], t0()), Wanted::Overloaded);
    let mut out = targets(&s.take(10 * COST, 10, t0()));
    out.sort_by_key(|(i, t)| (*i, format!("{t:?}")));
    assert_eq!(
        out,
        vec![
            (0, Target::Device(dev(1))),
            (0, Target::Device(dev(2))),
            (1, Target::Device(dev(1))),
        ]
    );
    assert!(s.is_idle());
    assert_eq!(s.tracked_devices(), 0);
    // Slots came free: device 3 is welcome now.
    assert_eq!(
        s.want(&dev(3), &a, shape(2), [0], t0()),
        Wanted::Added { new: 1, merged: 0 }
    );
}

#[test]
fn removing_an_artifact_frees_everything() {
    let mut s = sched(true, 10);
    let a = art("fw");
    s.set_emergency(&a, true);
    s.want(&dev(1), &a, shape(5), [0, 1], t0());
    s.want(&dev(2), &a, shape(5), [3], t0());
    s.remove_artifact(&a);
    assert!(s.is_idle());
    assert_eq!(s.tracked_devices(), 0);
    assert!(!s.is_emergency(&a));
    assert!(s.take(100 * COST, 100, t0()).is_empty());
}

#[test]
fn indices_past_the_end_are_ignored() {
    let mut s = sched(true, 10);
    let a = art("fw");
    assert_eq!(
        s.want(&dev(1), &a, shape(2), [5, 9], t0()),
        Wanted::Added { new: 0, merged: 0 }
    );
    assert!(s.is_idle());
    assert_eq!(s.tracked_devices(), 0);
}

#[test]
fn memory_stays_bounded_under_many_devices() {
    let mut s = sched(true, 100);
    let a = art("fw");
    for n in 0..10_000 {
        s.want(&dev(n), &a, shape(64), [n % 64], t0());
    }
    assert!(s.tracked_devices() <= 100);
    assert_eq!(s.pending_blocks(), 64);
    assert_eq!(s.take(1000 * COST, 1000, t0()).len(), 64);
    assert_eq!(s.tracked_devices(), 0);
}

#[test]
fn dropping_wants_keeps_the_priority() {
    let mut s = sched(true, 10);
    let a = art("fw");
    s.set_emergency(&a, true);
    s.want(&dev(1), &a, shape(5), [0, 1], t0());
    s.want(&dev(2), &a, shape(5), [1, 3], t0());
    s.drop_wants(&a);
    assert!(s.is_idle());
    assert_eq!(s.tracked_devices(), 0);
    assert!(s.is_emergency(&a));
    assert!(s.take(100 * COST, 100, t0()).is_empty());
}
