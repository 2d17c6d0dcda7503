//! ota patch 7 (OTA-PATCHES.md): the topic ACL and disconnects by client
//! id, against a real router with in-process links.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flume::{RecvTimeoutError, Sender};

use super::{Ack, Event, Meter, Notification, Router};
use crate::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use crate::protocol::{
    Filter, LastWill, Packet, PubAck, Publish, QoS, RetainForwardRule, Subscribe,
    SubscribeReasonCode,
};
use crate::{AclHandler, ConnectionId, Disconnector, RouterConfig, TopicAcl};

const WAIT: Duration = Duration::from_secs(5);

/// `boss` may do anything; everyone else may publish under `{id}/` and
/// subscribe to filters without wildcards that are not under `boss/`.
struct TestAcl;

impl TopicAcl for TestAcl {
    fn may_publish(&self, client_id: &str, topic: &str) -> bool {
        client_id == "boss" || topic.starts_with(&format!("{client_id}/"))
    }

    fn may_subscribe(&self, client_id: &str, filter: &str) -> bool {
        client_id == "boss" || !(filter.contains(['+', '#']) || filter.starts_with("boss/"))
    }
}

fn router() -> Sender<(ConnectionId, Event)> {
    let config = RouterConfig {
        max_connections: 10,
        max_outgoing_packet_count: 200,
        max_segment_size: 1024 * 1024,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
        acl: Some(AclHandler(Arc::new(TestAcl))),
    };
    Router::new(0, config).spawn()
}

fn connect(tx: &Sender<(ConnectionId, Event)>, id: &str, will: Option<&str>) -> (LinkTx, LinkRx) {
    let will = will.map(|topic| LastWill {
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        message: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
    });
    let (link_tx, link_rx, _ack) = LinkBuilder::new(id, tx.clone())
        .last_will(will)
        .build()
        .unwrap();
    (link_tx, link_rx)
}

fn send(link: &mut LinkTx, packet: Packet) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(link.send(packet)).unwrap();
}

fn subscribe(link: &mut LinkTx, pkid: u16, filters: &[&str]) {
    let filters = filters
        .iter()
        .map(|f| Filter {
            path: f.to_string(),
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        })
        .collect();
    send(link, Packet::Subscribe(Subscribe { pkid, filters }, None));
}

fn publish(link: &mut LinkTx, topic: &str, payload: &str, qos: QoS, pkid: u16, retain: bool) {
    let publish = Publish {
        dup: false,
        qos,
        retain,
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        pkid,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    };
    send(link, Packet::Publish(publish, None));
}

/// The next notification `pick` takes, skipping others; panics after 5 s.
fn next<T>(rx: &mut LinkRx, mut pick: impl FnMut(Notification) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.recv_deadline(deadline) {
            Ok(Some(n)) => {
                if let Some(t) = pick(n) {
                    return t;
                }
            }
            Ok(None) => {}
            Err(e) => panic!("nothing picked within {WAIT:?}: {e}"),
        }
    }
}

fn suback(rx: &mut LinkRx, pkid: u16) -> Vec<SubscribeReasonCode> {
    next(rx, |n| match n {
        Notification::DeviceAck(Ack::SubAck(s)) if s.pkid == pkid => Some(s.return_codes),
        _ => None,
    })
}

fn puback(rx: &mut LinkRx) -> PubAck {
    next(rx, |n| match n {
        Notification::DeviceAck(Ack::PubAck(p)) => Some(p),
        _ => None,
    })
}

/// The topic and payload of the next delivered publish.
fn delivery(rx: &mut LinkRx) -> (String, String) {
    next(rx, |n| match n {
        Notification::Forward(f) => Some((
            String::from_utf8_lossy(&f.publish.topic).into_owned(),
            String::from_utf8_lossy(&f.publish.payload).into_owned(),
        )),
        _ => None,
    })
}

#[test]
fn ota_patch_a_refused_filter_gets_0x80_and_the_others_are_served() {
    let tx = router();
    let (mut a_tx, mut a_rx) = connect(&tx, "a", None);
    let (mut boss_tx, _boss_rx) = connect(&tx, "boss", None);

    subscribe(&mut a_tx, 1, &["news", "#", "boss/secrets", "a/inbox"]);
    assert_eq!(
        suback(&mut a_rx, 1),
        [
            SubscribeReasonCode::QoS0,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::QoS0,
        ]
    );

    // Nothing reaches `a` through the refused filters: the secret comes
    // first, so a delivery through `#` or `boss/secrets` would be seen first.
    publish(&mut boss_tx, "boss/secrets", "s", QoS::AtMostOnce, 0, false);
    publish(&mut boss_tx, "news", "n", QoS::AtMostOnce, 0, false);
    assert_eq!(delivery(&mut a_rx), ("news".into(), "n".into()));
    publish(&mut boss_tx, "a/inbox", "i", QoS::AtMostOnce, 0, false);
    assert_eq!(delivery(&mut a_rx), ("a/inbox".into(), "i".into()));
}

#[test]
fn ota_patch_a_refused_publish_is_acked_dropped_counted_and_not_retained() {
    let tx = router();
    let meters = crate::meters::MetersLink::new(tx.clone()).unwrap();
    let (mut a_tx, mut a_rx) = connect(&tx, "a", None);
    let (mut boss_tx, mut boss_rx) = connect(&tx, "boss", None);
    subscribe(&mut boss_tx, 1, &["#"]);
    assert_eq!(suback(&mut boss_rx, 1), [SubscribeReasonCode::QoS0]);

    // Retained on someone else's topic, at QoS 1: acked, so the client
    // does not resend it, and dropped.
    publish(&mut a_tx, "b/status", "forged", QoS::AtLeastOnce, 7, true);
    assert_eq!(puback(&mut a_rx).pkid, 7);
    // Its own topic still works: the client was not disconnected.
    publish(&mut a_tx, "a/status", "mine", QoS::AtLeastOnce, 8, true);
    assert_eq!(puback(&mut a_rx).pkid, 8);
    assert_eq!(delivery(&mut boss_rx), ("a/status".into(), "mine".into()));

    // Nothing was retained on the refused topic: a new subscriber to both
    // gets the allowed retained message only.
    let (mut b_tx, mut b_rx) = connect(&tx, "b", None);
    subscribe(&mut b_tx, 2, &["b/status", "a/status"]);
    assert_eq!(
        suback(&mut b_rx, 2),
        [SubscribeReasonCode::QoS0, SubscribeReasonCode::QoS0]
    );
    assert_eq!(delivery(&mut b_rx), ("a/status".into(), "mine".into()));
    publish(&mut boss_tx, "b/status", "real", QoS::AtMostOnce, 0, false);
    assert_eq!(delivery(&mut b_rx), ("b/status".into(), "real".into()));

    // Counted in the router's meter.
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        tx.send((0, Event::SendMeters)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let found = meters.recv().ok().and_then(|ms| {
            ms.into_iter().find_map(|m| match m {
                Meter::Router(_, r) => Some(r.refused_publishes),
                _ => None,
            })
        });
        if let Some(n) = found {
            break n;
        }
        assert!(Instant::now() < deadline, "no router meter within {WAIT:?}");
    };
    assert_eq!(refused, 1);
}

#[test]
fn ota_patch_a_refused_will_is_forgotten() {
    let tx = router();
    let (mut boss_tx, mut boss_rx) = connect(&tx, "boss", None);
    subscribe(&mut boss_tx, 1, &["#"]);
    assert_eq!(suback(&mut boss_rx, 1), [SubscribeReasonCode::QoS0]);

    let _forger = connect(&tx, "a", Some("b/presence"));
    let _honest = connect(&tx, "c", Some("c/presence"));
    // What the listener sends when a connection ends without DISCONNECT.
    for id in ["a", "c"] {
        tx.send((0, Event::PublishWill((id.to_owned(), None))))
            .unwrap();
    }
    assert_eq!(delivery(&mut boss_rx), ("c/presence".into(), "gone".into()));
}

#[test]
fn ota_patch_a_client_is_disconnected_by_its_id() {
    let tx = router();
    let kick = Disconnector::new(tx.clone());
    let (_a_tx, mut a_rx) = connect(&tx, "a", None);
    let (mut b_tx, mut b_rx) = connect(&tx, "b", None);

    assert!(kick.disconnect("nobody"));
    assert!(kick.disconnect("a"));
    // The router dropped a's link: its receiver ends.
    let deadline = Instant::now() + WAIT;
    loop {
        match a_rx.recv_deadline(deadline) {
            Ok(_) => continue,
            Err(LinkError::RecvTimeout(RecvTimeoutError::Disconnected)) => break,
            Err(e) => panic!("a is still connected after {WAIT:?}: {e}"),
        }
    }
    // b was not touched.
    subscribe(&mut b_tx, 1, &["b/inbox"]);
    assert_eq!(suback(&mut b_rx, 1), [SubscribeReasonCode::QoS0]);
}
