//! A refused subscription (SUBACK 0x80) is retried with back-off until the
//! broker grants it (docs/protocol.md "A refused subscription").

use super::*;
use crate::agent::{Notice, TimerId};

/// The refusal notice in `out`: (attempt, retry_in_ms), and the
/// Resubscribe timer it set.
fn refusal(out: &[Action]) -> (u32, u64, u64) {
    let (attempt, wait) = out
        .iter()
        .find_map(|a| match a {
            Action::Notice(Notice::SubscribeRefused {
                attempt,
                retry_in_ms,
                ..
            }) => Some((*attempt, *retry_in_ms)),
            _ => None,
        })
        .expect("a SubscribeRefused notice");
    let at = out
        .iter()
        .find_map(|a| match a {
            Action::SetTimer {
                id: TimerId::Resubscribe,
                at_ms,
            } => Some(*at_ms),
            _ => None,
        })
        .expect("a Resubscribe timer");
    (attempt, wait, at)
}

fn subscribes(out: &[Action], t: &Topic) -> usize {
    out.iter()
        .filter(|a| matches!(a, Action::Subscribe(x) if x == t))
        .count()
}

fn refused(d: &mut Dev, t: &Topic) -> Vec<Action> {
    d.ev(Event::Subscribed {
        topic: t.clone(),
        granted: false,
    })
}

#[test]
fn a_refused_subscription_is_retried_with_backoff_until_granted() {
    let mut d = Dev::new();
    d.online();
    d.join(&["line-1"]);
    let t = Topic::GroupCampaign(group("line-1"));
    assert!(d.subscribed_to(&t));
    // Granted at once: nothing more to do.
    let other = Topic::GroupEmergency(group("line-1"));
    let out = d.ev(Event::Subscribed {
        topic: other.clone(),
        granted: true,
    });
    assert!(out.is_empty(), "{out:?}");

    // Refused: a retry after 0.5 to 1 s, not at once.
    let out = refused(&mut d, &t);
    let (attempt, wait, at) = refusal(&out);
    assert_eq!(attempt, 1);
    assert!((500..=1_000).contains(&wait), "{wait}");
    assert_eq!(at, d.now + wait);
    assert_eq!(subscribes(&out, &t), 0);
    // A timer that fires early re-arms itself and subscribes to nothing.
    d.advance(wait - 1);
    let out = d.ev(Event::Timer(TimerId::Resubscribe));
    assert_eq!(subscribes(&out, &t), 0);
    d.advance(1);
    let out = d.ev(Event::Timer(TimerId::Resubscribe));
    assert_eq!(subscribes(&out, &t), 1);
    assert_eq!(subscribes(&out, &other), 0);

    // Refused again and again: the wait doubles, up to 60 s.
    let mut waits = vec![wait];
    for n in 2..=9 {
        let (attempt, wait, _) = refusal(&refused(&mut d, &t));
        assert_eq!(attempt, n);
        let base = (1_000u64 << (n - 1)).min(60_000);
        assert!((base / 2..=base).contains(&wait), "retry {n}: {wait} ms");
        waits.push(wait);
        d.advance(wait);
        let out = d.ev(Event::Timer(TimerId::Resubscribe));
        assert_eq!(subscribes(&out, &t), 1, "retry {n}");
    }
    assert!(waits.iter().all(|w| *w <= 60_000), "{waits:?}");

    // Granted: said once, and no more retries.
    let out = d.ev(Event::Subscribed {
        topic: t.clone(),
        granted: true,
    });
    assert!(
        out.contains(&Action::Notice(Notice::SubscribeGranted {
            topic: t.clone(),
            refused: 9
        })),
        "{out:?}"
    );
    d.clear();
    d.advance(120_000);
    d.ev(Event::Timer(TimerId::Resubscribe));
    assert_eq!(subscribes(&d.log, &t), 0, "{:?}", d.log);
    // A later refusal starts the back-off from 1 s again.
    let (attempt, wait, _) = refusal(&refused(&mut d, &t));
    assert_eq!((attempt, wait <= 1_000), (1, true));
}

#[test]
fn a_refused_topic_no_longer_wanted_is_not_retried() {
    let mut d = Dev::new();
    d.online();
    d.join(&["line-1"]);
    let t = Topic::GroupCampaign(group("line-1"));
    let (_, wait, _) = refusal(&refused(&mut d, &t));
    // The device leaves the group before the back-off ends.
    d.join(&["line-2"]);
    d.clear();
    d.advance(wait);
    d.ev(Event::Timer(TimerId::Resubscribe));
    assert_eq!(subscribes(&d.log, &t), 0);
    // A late refusal of a topic it does not want: no retry.
    let out = refused(&mut d, &t);
    assert!(out.is_empty(), "{out:?}");
    // Another device's topic is never retried.
    let foreign = Topic::Ack(schemas::DeviceId::new("dev-0002").unwrap());
    assert!(refused(&mut d, &foreign).is_empty());
}

#[test]
fn a_reconnect_drops_pending_retries_and_subscribes_anew() {
    let mut d = Dev::new();
    d.online();
    let t = Topic::Emergency;
    let (_, wait, _) = refusal(&refused(&mut d, &t));
    d.ev(Event::Disconnected);
    d.clear();
    d.advance(wait);
    d.ev(Event::Timer(TimerId::Resubscribe));
    assert_eq!(subscribes(&d.log, &t), 0, "offline: nothing");
    d.ev(Event::Connected {
        session_present: false,
    });
    d.ev(Event::Timer(TimerId::Resubscribe));
    // The connect's own subscription, and no retry on top.
    assert_eq!(subscribes(&d.log, &t), 1);
}
