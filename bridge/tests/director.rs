//! E2 on the bridge: every Membership and StatusAck it retains is signed
//! by its director key for its exact topic, with a counter that only goes
//! up, across restarts too; retained messages are re-signed before they
//! expire. Each test runs against rumqttd and Mosquitto.

mod common;

use std::time::Duration;

use bridge::ops::fleet_cmds::GroupPut;
use common::*;
use schemas::control::{self, ControlBody, DirectorKeys, Expect, Verified};
use schemas::msg::{Membership, StatusAck, StatusState, WireMessage};
use schemas::ops::Command;
use schemas::{DeviceId, GroupName};
use tokio::sync::mpsc::Receiver;

fn directors() -> DirectorKeys {
    DirectorKeys::new([director_key().verifying_key()])
}

/// The next message on `topic` that is not empty, verified as E2 says.
async fn next_signed<M: ControlBody>(
    rx: &mut Receiver<(String, Vec<u8>)>,
    topic: &str,
) -> Verified<M> {
    within(&format!("a signed message on {topic}"), async {
        loop {
            let (t, payload) = rx.recv().await.expect("the watcher runs");
            if t != topic || payload.is_empty() {
                continue;
            }
            let expect = Expect {
                topic,
                last_counter: None,
                now: Some(bridge::unix_now()),
            };
            return control::verify::<M>(&payload, expect, &directors())
                .unwrap_or_else(|e| panic!("{topic}: {e}"));
        }
    })
    .await
}

async fn acks_and_memberships_are_signed_and_counters_only_grow(kind: BrokerKind) {
    let mut stack = Stack::start(kind).await;
    let ack_topic = "ota/v1/devices/dev-a/ack".to_string();
    let groups_topic = "ota/v1/devices/dev-a/groups".to_string();
    let mut rx = watch_topics(
        stack.port(),
        "watcher",
        &[ack_topic.clone(), groups_topic.clone()],
    )
    .await;
    let mut dev = stack.device("dev-a").await;
    dev.hello("ep000001", 1, &[]).await;
    dev.status(1, StatusState::Accepted).await;
    dev.wait_ack(Some(1)).await;
    let ack = loop {
        let v = next_signed::<StatusAck>(&mut rx, &ack_topic).await;
        if v.body.seq == 1 {
            break v;
        }
    };

    let ops = stack.ops().await;
    ops.call_ok::<GroupPut>(Command::GroupPut {
        name: GroupName::new("canary").unwrap(),
        selector: None,
        members: Some(vec![DeviceId::new("dev-a").unwrap()]),
    })
    .await
    .unwrap();
    dev.wait_groups(&["canary"]).await;
    let m = next_signed::<Membership>(&mut rx, &groups_topic).await;
    assert_eq!(m.body.groups, [GroupName::new("canary").unwrap()]);
    assert!(m.stamp.counter > ack.stamp.counter, "one counter, rising");
    assert_eq!(
        m.stamp.expires - m.stamp.issued,
        7 * 86_400,
        "the default ttl"
    );

    // After a restart: re-signed, above every counter signed before.
    // (Core and the status ingest republish in either order.)
    stack.restart_bridge().await;
    let (mut again, mut ack2) = (None, None);
    within("both re-signed after the restart", async {
        while again.is_none() || ack2.is_none() {
            let (t, payload) = rx.recv().await.expect("the watcher runs");
            let expect = Expect {
                topic: &t,
                last_counter: Some(m.stamp.counter),
                now: Some(bridge::unix_now()),
            };
            if t == groups_topic {
                again = control::verify::<Membership>(&payload, expect, &directors()).ok();
            } else if t == ack_topic {
                ack2 = control::verify::<StatusAck>(&payload, expect, &directors()).ok();
            }
        }
    })
    .await;
    let (again, ack2) = (again.unwrap(), ack2.unwrap());
    assert_eq!(again.body, m.body);
    assert!(again.stamp.counter > m.stamp.counter);
    assert_eq!(ack2.body.seq, 1);
    assert!(ack2.stamp.counter > m.stamp.counter);
    drop(ops);
}

async fn retained_memberships_are_re_signed_before_they_expire(kind: BrokerKind) {
    // A ttl of 60 s: re-signed every 6 s.
    let stack = Stack::start_with(kind, |c| {
        c.bridge.control_ttl = Duration::from_secs(60);
    })
    .await;
    let groups_topic = "ota/v1/devices/dev-b/groups".to_string();
    let mut rx = watch_topics(stack.port(), "watcher", std::slice::from_ref(&groups_topic)).await;
    let mut dev = stack.device("dev-b").await;
    dev.hello("ep000001", 1, &[]).await;
    let ops = stack.ops().await;
    until("dev-b registered", || stack.metrics().hellos >= 1).await;
    ops.call_ok::<GroupPut>(Command::GroupPut {
        name: GroupName::new("line-1").unwrap(),
        selector: None,
        members: Some(vec![DeviceId::new("dev-b").unwrap()]),
    })
    .await
    .unwrap();
    dev.wait_groups(&["line-1"]).await;
    let first = next_signed::<Membership>(&mut rx, &groups_topic).await;
    assert_eq!(first.stamp.expires - first.stamp.issued, 60);
    let refreshed = next_signed::<Membership>(&mut rx, &groups_topic).await;
    assert_eq!(refreshed.body, first.body);
    assert!(refreshed.stamp.counter > first.stamp.counter);
    assert!(refreshed.stamp.issued >= first.stamp.issued);
}

async fn foreign_retained_payloads_are_overwritten_within_seconds(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let groups_topic = "ota/v1/devices/dev-c/groups".to_string();
    let ghost_topic = "ota/v1/groups/ghost/campaign".to_string();
    let mut rx = watch_topics(
        stack.port(),
        "watcher",
        &[groups_topic.clone(), ghost_topic.clone()],
    )
    .await;
    let mut dev = stack.device("dev-c").await;
    dev.hello("ep000001", 1, &[]).await;
    until("dev-c registered", || stack.metrics().hellos >= 1).await;
    let ops = stack.ops().await;
    ops.call_ok::<GroupPut>(Command::GroupPut {
        name: GroupName::new("canary").unwrap(),
        selector: None,
        members: Some(vec![DeviceId::new("dev-c").unwrap()]),
    })
    .await
    .unwrap();
    dev.wait_groups(&["canary"]).await;
    let genuine = next_signed::<Membership>(&mut rx, &groups_topic).await;

    // An attacker's retained Membership, and a campaign on a topic the
    // bridge never announced on.
    let forged = Membership {
        groups: vec![GroupName::new("attackers").unwrap()],
    };
    dev.client
        .publish(
            &groups_topic,
            rumqttc::QoS::AtLeastOnce,
            true,
            forged.encode(),
        )
        .await
        .unwrap();
    dev.client
        .publish(&ghost_topic, rumqttc::QoS::AtLeastOnce, true, vec![0xa0])
        .await
        .unwrap();
    let (mut healed, mut withdrawn) = (false, false);
    within("both repaired by the bridge", async {
        while !(healed && withdrawn) {
            let (t, payload) = rx.recv().await.expect("the watcher runs");
            if t == groups_topic {
                let expect = Expect {
                    topic: &t,
                    last_counter: Some(genuine.stamp.counter),
                    now: None,
                };
                healed = control::verify::<Membership>(&payload, expect, &directors())
                    .is_ok_and(|v| v.body == genuine.body);
            } else if t == ghost_topic {
                withdrawn = payload.is_empty();
            }
        }
    })
    .await;
    dev.wait_groups(&["canary"]).await;
    assert!(
        stack.metrics().foreign_retained >= 2,
        "{:?}",
        stack.metrics()
    );
}

on_both_brokers!(
    acks_and_memberships_are_signed_and_counters_only_grow,
    retained_memberships_are_re_signed_before_they_expire,
    foreign_retained_payloads_are_overwritten_within_seconds,
);
