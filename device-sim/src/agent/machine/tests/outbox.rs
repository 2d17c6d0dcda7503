//! Step 9: every Status is delivered. Seq, epoch, the outbox, acks, resend.

use super::*;
use crate::agent::{Notice, TimerId};

/// A device with two unacknowledged Statuses (accepted, downloading).
fn two_pending() -> (Dev, TestImage) {
    let img = image("fw", "1.3.0", Kind::App);
    let d = downloading(&img);
    assert_eq!(d.agent.state().outbox.entries.len(), 2);
    (d, img)
}

#[test]
fn seq_starts_from_the_clock_and_increases_strictly_across_restarts() {
    let (mut d, img) = two_pending();
    let mut seqs: Vec<u64> = d.published().iter().map(|s| s.seq).collect();
    assert_eq!(seqs[0], T0);
    for round in 0..3 {
        d.restart(Box::new(NeverDefer));
        d.online();
        d.join(&["g1"]);
        d.announce("g1", &ann("camp-1", &img));
        d.advance(10_000);
        d.block(&img, round);
        seqs.extend(d.published().iter().map(|s| s.seq));
    }
    // Resends repeat a seq with the same bytes; each new report's seq is
    // above every seq seen before it.
    let mut sorted = Vec::new();
    for s in &seqs {
        if !sorted.contains(s) {
            assert!(sorted.last().is_none_or(|last| s > last), "{seqs:?}");
            sorted.push(*s);
        }
    }
    assert!(sorted.len() >= 5);
    // The state's counter is past every seq used.
    assert!(d.agent.state().outbox.next_seq > *sorted.last().unwrap());
    // Epoch is kept across restarts.
    let epochs: std::collections::BTreeSet<_> =
        d.hellos().iter().map(|h| h.epoch.clone()).collect();
    assert_eq!(epochs.len(), 1);
}

#[test]
fn statuses_wait_after_a_reconnect_until_an_ack_or_2_s() {
    let (mut d, img) = two_pending();
    d.ev(Event::Disconnected);
    d.clear();
    d.ev(Event::Connected {
        session_present: false,
    });
    d.join(&["g1"]);
    d.announce("g1", &ann("camp-1", &img));
    d.advance(5_000);
    d.block(&img, 0);
    // Nothing published yet: waiting for an ack or the 2 s.
    assert!(d.published().is_empty());
    // accepted, downloading, and the progress after 5 s.
    assert_eq!(d.agent.state().outbox.entries.len(), 3);
    // Hello names the lowest unacknowledged seq.
    assert_eq!(d.hellos()[0].outbox, T0);
    d.advance(1_000);
    d.ack(T0);
    let s = d.published();
    let seqs: Vec<u64> = s.iter().map(|s| s.seq).collect();
    assert_eq!(
        seqs,
        [T0 + 1, T0 + 2],
        "oldest first, the acked one dropped"
    );
}

#[test]
fn after_2_s_without_an_ack_the_outbox_is_resent_oldest_first() {
    let (mut d, _img) = two_pending();
    d.ev(Event::Disconnected);
    d.clear();
    d.ev(Event::Connected {
        session_present: false,
    });
    d.advance(1_999);
    d.ev(Event::Timer(TimerId::ResendWait));
    assert!(d.published().is_empty());
    d.advance(1);
    d.ev(Event::Timer(TimerId::ResendWait));
    let seqs: Vec<u64> = d.published().iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [T0, T0 + 1]);
}

#[test]
fn exact_bytes_are_kept_and_resent() {
    let (mut d, _img) = two_pending();
    let first = status_payloads(&d.log);
    d.restart(Box::new(NeverDefer));
    d.online();
    let again = status_payloads(&d.log);
    assert_eq!(first, again);
}

#[test]
fn an_ack_covers_up_to_its_seq_and_one_above_the_last_seq_is_ignored() {
    let (mut d, _img) = two_pending();
    let out = d.ack(T0 + 5);
    assert!(out.contains(&Action::Notice(Notice::AckIgnored { seq: T0 + 5 })));
    assert_eq!(d.agent.state().outbox.entries.len(), 2);
    let out = d.ack(T0);
    assert!(out.contains(&Action::Notice(Notice::Acked { seqs: vec![T0] })));
    assert!(out.contains(&Action::Persist));
    assert_eq!(d.agent.state().outbox.low_water(), T0 + 1);
    d.ack(T0 + 1);
    assert!(d.agent.state().outbox.entries.is_empty());
    assert_eq!(d.agent.state().outbox.low_water(), T0 + 2);
}

#[test]
fn uncovered_statuses_are_resent_every_30_s() {
    let (mut d, _img) = two_pending();
    d.ack(T0);
    d.clear();
    d.advance(29_999);
    d.ev(Event::Timer(TimerId::Resend));
    assert!(d.published().is_empty());
    d.advance(1);
    d.ev(Event::Timer(TimerId::Resend));
    assert_eq!(
        d.published().iter().map(|s| s.seq).collect::<Vec<_>>(),
        [T0 + 1]
    );
    d.ack(T0 + 1);
    d.clear();
    d.advance(60_000);
    d.ev(Event::Timer(TimerId::Resend));
    assert!(d.published().is_empty());
}

#[test]
fn a_status_is_saved_before_it_is_published() {
    let (d, _img) = two_pending();
    let first_status = d
        .log
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Publish {
                    topic: Topic::Status(_),
                    ..
                }
            )
        })
        .unwrap();
    assert!(d.log[..first_status].contains(&Action::Persist));
}

#[test]
fn connect_sequence() {
    let mut d = Dev::new();
    let out = d.ev(Event::Connected {
        session_present: false,
    });
    let id = DeviceId::new("dev-0001").unwrap();
    let subs: Vec<&Topic> = out
        .iter()
        .filter_map(|a| match a {
            Action::Subscribe(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(
        subs,
        [
            &Topic::Groups(id.clone()),
            &Topic::DeviceBlocks(id.clone()),
            &Topic::Ack(id.clone()),
            &Topic::Emergency
        ]
    );
    let h = d.hellos();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].proto, 1);
    assert_eq!(h[0].arch, "esp32");
    assert_eq!(h[0].outbox, T0);
    assert_eq!(
        h[0].labels.get("customer").map(String::as_str),
        Some("acme")
    );
    let out = d.ev(Event::Membership(Membership {
        groups: vec![group("g1")],
    }));
    assert_eq!(
        out,
        [
            Action::Subscribe(Topic::GroupCampaign(group("g1"))),
            Action::Subscribe(Topic::GroupEmergency(group("g1")))
        ]
    );
}
