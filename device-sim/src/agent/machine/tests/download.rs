//! Step 6: requests, block verification, quiet spells, timeout, progress.

use super::*;
use crate::agent::{Notice, TimerId};

fn rejected(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notice(Notice::BlockRejected { reason, .. }) => Some(*reason),
            _ => None,
        })
        .collect()
}

fn quiet_at(actions: &[Action]) -> Option<u64> {
    actions.iter().rev().find_map(|a| match a {
        Action::SetTimer {
            id: TimerId::Quiet,
            at_ms,
        } => Some(*at_ms),
        _ => None,
    })
}

#[test]
fn requests_what_it_lacks() {
    let img = image("fw", "1.3.0", Kind::App);
    let d = downloading(&img);
    let r = d.requests();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].offset, 0);
    assert_eq!(r[0].wanted().collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(r[0].artifact, img.manifest.artifact);
}

#[test]
fn requests_hold_at_most_1024_blocks_and_the_next_go_out_when_those_are_in() {
    let img = TestImage::new(
        "big",
        Kind::App,
        "main",
        "1.3.0",
        "esp32",
        pattern_image(3000 * 256, 5),
        256,
    )
    .unwrap();
    let mut cfg = config("dev-0001");
    cfg.timing.requests_in_flight = 2;
    let mut d = Dev::with(cfg, Box::new(NeverDefer));
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("c", &img));
    let r = d.requests();
    assert_eq!(r.len(), 2);
    for q in &r {
        assert!(q.bitmap.len() <= 128);
        assert_eq!(q.wanted().count(), 1024);
    }
    assert_eq!((r[0].offset, r[1].offset), (0, 1024));
    d.clear();
    d.blocks(&img, 0..2047);
    assert!(d.requests().is_empty());
    d.block(&img, 2047);
    let r = d.requests();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].offset, 2048);
    assert_eq!(r[0].wanted().count(), 3000 - 2048);
}

#[test]
fn blocks_failing_their_checks_are_dropped() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = downloading(&img);
    let mut bad = block_of(&img, 1);
    bad.data[10] ^= 0xff;
    let out = d.ev(Event::Block(bad));
    assert_eq!(rejected(&out), ["merkle proof failed"]);
    assert!(stored(&out).is_empty());

    let mut short = block_of(&img, 0);
    short.data.pop();
    assert_eq!(rejected(&d.ev(Event::Block(short))), ["wrong length"]);

    let mut wrong_proof = block_of(&img, 0);
    wrong_proof.proof = block_of(&img, 1).proof;
    assert_eq!(
        rejected(&d.ev(Event::Block(wrong_proof))),
        ["merkle proof failed"]
    );

    let mut past = block_of(&img, 2);
    past.index = 3;
    assert_eq!(
        rejected(&d.ev(Event::Block(past))),
        ["index past the image"]
    );

    // The genuine block is still wanted, kept once, duplicates ignored.
    assert_eq!(stored(&d.block(&img, 1)), [1]);
    assert!(stored(&d.block(&img, 1)).is_empty());
    // A block of another artifact is not taken.
    let other = image("fw-other", "1.3.0", Kind::App);
    assert!(stored(&d.block(&other, 0)).is_empty());
}

#[test]
fn re_requests_after_a_quiet_spell_with_jitter() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = downloading(&img);
    let start = d.now;
    let first = quiet_at(&d.log).unwrap();
    assert!(
        (start + 2_000..=start + 4_000).contains(&first),
        "{}",
        first - start
    );
    d.advance(first - start - 1);
    d.block(&img, 0);
    d.now = start;
    d.clear();
    // A new block pushed the spell back: firing at the old time re-arms.
    d.advance(first - start);
    let out = d.ev(Event::Timer(TimerId::Quiet));
    assert!(requests(&out).is_empty());
    let next = quiet_at(&out).unwrap();
    assert!(next > d.now);
    d.now = next;
    let out = d.ev(Event::Timer(TimerId::Quiet));
    let r = requests(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].wanted().collect::<Vec<_>>(), [1, 2]);
    let again = quiet_at(&out).unwrap();
    assert!((d.now + 2_000..=d.now + 4_000).contains(&again));
}

#[test]
fn jitter_differs_between_devices() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..8u64 {
        let cfg = Arc::new(config("dev-0001"));
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let st = DeviceState::fresh(versions("1.2.0"), T0, &mut rng);
        let mut a = Agent::new(cfg, st, Box::new(NeverDefer), seed);
        let mut out = a.handle(
            T0,
            Event::Connected {
                session_present: false,
            },
        );
        out.extend(a.handle(
            T0,
            Event::Membership(Membership {
                groups: vec![group("g1")],
            }),
        ));
        out.extend(a.handle(
            T0,
            Event::Announcement {
                topic: Topic::GroupCampaign(group("g1")),
                payload: Some(ann("c", &img)),
            },
        ));
        seen.insert(quiet_at(&out).unwrap());
    }
    assert!(seen.len() > 1);
}

#[test]
fn times_out_after_two_minutes_without_a_new_block_not_counting_pauses() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = downloading(&img);
    // 100 s of quiet spells.
    for _ in 0..25 {
        d.advance(4_000);
        d.ev(Event::Timer(TimerId::Quiet));
    }
    // Paused for 10 minutes: not counted.
    d.announce("g1", &paused(ann("camp-1", &img)));
    d.advance(600_000);
    d.announce("g1", &ann("camp-1", &img));
    // Offline for 10 minutes: not counted either.
    d.ev(Event::Disconnected);
    d.advance(600_000);
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("camp-1", &img));
    assert!(!d.states().contains(&StatusState::Failed));
    // 2 s of the reconnect wait were not downloading; 20 s more pass the 2 min.
    for _ in 0..6 {
        d.advance(4_000);
        d.ev(Event::Timer(TimerId::Quiet));
    }
    let s = d.published();
    let last = s.last().unwrap();
    assert_eq!(
        (last.state, last.error),
        (StatusState::Failed, Some(ErrorCode::Timeout))
    );
}

#[test]
fn a_new_block_resets_the_timeout() {
    let img = image_of("fw", Kind::App, "main", "1.3.0", 8, 1);
    let mut d = downloading(&img);
    for i in 0..7 {
        for _ in 0..25 {
            d.advance(4_000);
            d.ev(Event::Timer(TimerId::Quiet));
        }
        d.block(&img, i);
    }
    assert!(!d.states().contains(&StatusState::Failed));
}

#[test]
fn progress_at_most_every_interval() {
    let img = TestImage::new(
        "fw",
        Kind::App,
        "main",
        "1.3.0",
        "esp32",
        pattern_image(40 * 256, 1),
        256,
    )
    .unwrap();
    let mut cfg = config("dev-0001");
    cfg.timing.progress_every_ms = 2_000;
    let mut d = Dev::with(cfg, Box::new(NeverDefer));
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("c", &img));
    for i in 0..39 {
        d.advance(250);
        d.block(&img, i);
    }
    let times: Vec<u64> = d
        .published()
        .iter()
        .filter(|s| s.state == StatusState::Downloading)
        .map(|s| s.progress.unwrap())
        .collect();
    // 39 blocks over 9.75 s: the first report, then one per 2 s.
    assert_eq!(times, [0, 8, 16, 24, 32]);
}

#[test]
fn offline_stops_the_download_and_it_resumes_when_announced_again() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = downloading(&img);
    d.block(&img, 0);
    d.ev(Event::Disconnected);
    d.clear();
    d.advance(10_000);
    d.ev(Event::Timer(TimerId::Quiet));
    assert!(d.log.iter().all(|a| !matches!(a, Action::Publish { .. })));
    d.online();
    assert!(
        d.requests().is_empty(),
        "waits for the retained announcement"
    );
    d.join(&["g1"]);
    d.announce("g1", &ann("camp-1", &img));
    assert_eq!(d.requests()[0].wanted().collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_lost_block_is_asked_for_again() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = downloading(&img);
    d.block(&img, 0);
    d.ev(Event::BlockLost {
        artifact: img.manifest.artifact.clone(),
        index: 0,
    });
    d.clear();
    d.advance(4_001);
    d.ev(Event::Timer(TimerId::Quiet));
    assert_eq!(d.requests()[0].wanted().collect::<Vec<_>>(), [0, 1, 2]);
}
