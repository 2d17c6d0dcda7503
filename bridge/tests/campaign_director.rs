//! E2 end to end: devices provisioned with the director key, a real bridge
//! on an anonymous broker where anyone may publish anything. An attacker's
//! client replays an older announcement after a newer one, forges an
//! `aborted` announcement, moves a genuine announcement to another group's
//! topic, forges a StatusAck and a Membership. Each is refused by the
//! device it reached, for E2's reason, and changes nothing; the real
//! campaign then completes.

mod blocks_common;
mod campaign_common;
mod common;

use std::time::Duration;

use campaign_common::*;
use common::{director_key, watch_topics, within};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use schemas::control::{self, Stamp};
use schemas::msg::{
    Announcement, CampaignState, Kind, Membership, StatusAck, StatusState, WireMessage,
};
use schemas::ops::Command;
use schemas::{DeviceId, GroupName};
use serde_json::json;
use tokio::sync::mpsc::Receiver;

/// A client of the anonymous broker that publishes whatever it likes.
async fn attacker(port: u16) -> AsyncClient {
    let mut o = MqttOptions::new("attacker", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

async fn retain(client: &AsyncClient, topic: &str, payload: Vec<u8>) {
    client
        .publish(topic, QoS::AtLeastOnce, true, payload)
        .await
        .expect("the attacker publishes");
}

/// The next genuine announcement payload whose state is `state`.
async fn next_announcement(rx: &mut Receiver<(String, Vec<u8>)>, state: CampaignState) -> Vec<u8> {
    within(&format!("a {state:?} announcement"), async {
        loop {
            let (_, payload) = rx.recv().await.expect("the watcher runs");
            if Announcement::decode(&payload).is_ok_and(|a| a.state == state) {
                return payload;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgeries_change_nothing_and_the_real_campaign_completes() {
    let stack = stack().await;
    let port = stack.port();
    let ops = stack.ops().await;
    artifact(
        &stack,
        Release::new("app-1.1.0", Kind::App, "1.1.0").sized(8 * 1024),
    )
    .await;
    group(&ops, "acme", "acme").await;
    group(&ops, "globex", "globex").await;
    let acme_topic = "ota/v1/groups/acme/campaign";
    let globex_topic = "ota/v1/groups/globex/campaign";
    let mut rx = watch_topics(port, "attacker-eyes", &[acme_topic.to_string()]).await;
    let evil = attacker(port).await;

    let mut devices = Devices::default();
    // acme-1 puts the campaign off for 3 s: it is deferred, not installing,
    // while the forgeries arrive (an abort it believed would cancel it).
    let a = devices.spawn(
        &stack,
        DeviceOpts::new("acme-1", "acme").deferring_once(3_000),
    );
    let g = devices.spawn(&stack, DeviceOpts::new("globex-1", "globex"));
    registered(&stack, 2).await;

    launch(
        &ops,
        json!({
            "id": "app-1", "kind": "app", "release": ["app-1.1.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 120}
        }),
    )
    .await;
    let active = next_announcement(&mut rx, CampaignState::Active).await;
    wait("acme-1 deferred", LONG, || {
        state(&stack, &a, "app-1") == Some(StatusState::Deferred)
    })
    .await;
    call(&ops, Command::CampaignPause { id: cid("app-1") }).await;
    next_announcement(&mut rx, CampaignState::Paused).await;

    // 1. The older `active` replayed after the newer `paused`.
    retain(&evil, acme_topic, active.clone()).await;
    // 2. A forged `aborted`: the v1 keys, no auth.
    let mut aborted = Announcement::decode(&active).unwrap();
    aborted.state = CampaignState::Aborted;
    retain(&evil, acme_topic, aborted.encode()).await;
    // 3. acme's genuine announcement moved to globex's topic.
    retain(&evil, globex_topic, active.clone()).await;
    // 4. A StatusAck covering everything, signed by a key of the attacker's.
    let stranger = schemas::keys::SigningKey::from_bytes(&[0xee; 32]);
    let ack_topic = "ota/v1/devices/acme-1/ack";
    let stamp = Stamp {
        counter: u64::MAX,
        issued: 0,
        expires: u64::MAX,
    };
    let ack = control::sign(
        &StatusAck { seq: u64::MAX - 1 },
        ack_topic,
        stamp,
        &stranger,
    );
    retain(&evil, ack_topic, ack).await;
    // 5. A forged Membership putting globex-1 into acme.
    let forged = Membership {
        groups: vec![
            GroupName::new("acme").unwrap(),
            GroupName::new("globex").unwrap(),
        ],
    };
    retain(&evil, "ota/v1/devices/globex-1/groups", forged.encode()).await;

    let drops = devices.drops.clone();
    let refused = |d: &DeviceId, reason: &str| drops.count(d, reason) >= 1;
    wait("every forgery refused for its reason", LONG, || {
        refused(&a, "old_counter")
            && refused(&a, "missing_auth")
            && refused(&g, "wrong_topic")
            && refused(&a, "unknown_key")
            && refused(&g, "missing_auth")
    })
    .await;
    assert_eq!(
        state(&stack, &a, "app-1"),
        Some(StatusState::Deferred),
        "not cancelled"
    );
    assert_eq!(state(&stack, &g, "app-1"), None, "globex-1 never took part");

    // The real campaign: resumed, it completes on acme-1 alone.
    call(&ops, Command::CampaignResume { id: cid("app-1") }).await;
    let done = wait_state(&ops, "app-1", "completed", LONG).await;
    assert_eq!(state(&stack, &a, "app-1"), Some(StatusState::Success));
    assert_eq!(
        state(&stack, &g, "app-1"),
        None,
        "the forged Membership moved no one"
    );
    assert_eq!(done.current.as_ref().map(|c| c.counts.success), Some(1));
    // The director key was never the release key, and the device with it
    // knows only the director's public half.
    assert_ne!(
        director_key().verifying_key(),
        blocks_common::release_key().verifying_key()
    );
    devices.stop_all().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), evil.disconnect()).await;
}
