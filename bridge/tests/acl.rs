//! PROTOCOL.md E1 enforced by the bridge's embedded broker (issue 12), end
//! to end: the bridge runs rumqttd with accounts and its `Identity` as the
//! broker's authority, as `ota serve` does; reference devices log in with
//! their own provisioned credentials; an attacker holds one provisioned
//! device's login (`mallory`, customer evil) and, while a campaign to the
//! real devices runs, subscribes and publishes where E1 forbids. Every
//! attempt is refused (SUBACK 0x80, or acked and dropped) and counted, and
//! the campaign completes. A revoked or rotated device is disconnected at
//! once and cannot log in again with its old secret. The block server
//! serves an artifact only to devices a campaign announces it to, and a
//! flood of block requests under other ids is refused while a download
//! completes.

mod blocks_common;
mod campaign_common;
mod common;
mod secured_common;

use std::collections::BTreeMap;

use bridge::blocks::{BlocksConfig, Refusal};
use bridge::client::provision::{self, Mode};
use bridge::identity::Refused;
use campaign_common::*;
use common::Stack;
use harness::attacker;
use harness::raw::{Got, RawClient};
use rumqttc::{QoS, SubscribeReasonCode};
use schemas::msg::{BlockRequest, Kind, WireMessage};
use schemas::ops::Command;
use schemas::topic::{Topic, Topics};
use schemas::{ArtifactId, CampaignId, DeviceId};
use secured_common::*;
use serde_json::json;

/// The reference devices acme-1 and acme-2 (customer acme), each with its
/// own login.
fn acme_devices(stack: &Stack, logins: &BTreeMap<DeviceId, (String, String)>) -> Devices {
    let mut devices = Devices::default();
    for id in ["acme-1", "acme-2"] {
        devices.spawn(
            stack,
            DeviceOpts::new(id, "acme").login(logins[&dev(id)].clone()),
        );
    }
    devices
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_with_one_devices_login_is_refused_and_counted_while_a_campaign_completes() {
    let stack = secured_stack().await;
    let ops = alice(&stack).await;
    let port = stack.port();
    let (acme, evil) = (group_name("acme"), group_name("evil"));
    let (victim, me) = (dev("acme-1"), dev("mallory"));
    let campaign = CampaignId::new("fw-2").unwrap();
    artifact(
        &stack,
        Release::new("fw-2.0.0-esp32", Kind::Firmware, "2.0.0"),
    )
    .await;
    group(&ops, acme.as_str(), "acme").await;
    group(&ops, evil.as_str(), "evil").await;
    let ids: Vec<DeviceId> = ["acme-1", "acme-2", "acme-3", "mallory"]
        .into_iter()
        .map(dev)
        .collect();
    let logins = provision::logins(&ops, &ids, None)
        .await
        .expect("provisioned");
    let mut devices = acme_devices(&stack, &logins);
    let scene = attacker::Scene {
        port,
        topics: Topics::default(),
        me: me.clone(),
        victim,
        group: acme,
        campaign: campaign.clone(),
        member: (
            dev("acme-3"),
            logins[&dev("acme-3")].1.clone(),
            "acme".into(),
        ),
    };
    let mut mallory = RawClient::login(port, me.as_str(), &logins[&me].1)
        .await
        .expect("mallory logs in with its own secret");
    mallory.hello(&scene.topics, &me, "evil").await.unwrap();
    registered(&stack, 3).await;
    let (sub0, pub0) = (
        refused(&stack, Refused::Subscribe),
        refused(&stack, Refused::Publish),
    );

    // (a) Every subscription outside E1 gets 0x80, each one counted.
    let n = scene.subscribe_everywhere(&mut mallory).await.unwrap();
    assert_eq!(refused(&stack, Refused::Subscribe) - sub0, n as u64);

    // (d) Meanwhile the real campaign, and (b) during it reports under
    // acme-1's name: either, heard, would change the campaign.
    launch(
        &ops,
        json!({
            "id": "fw-2", "kind": "firmware", "release": ["fw-2.0.0-esp32"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"success_bar_bp": 10000, "min_sample": 1, "wave_timeout_secs": 30}
        }),
    )
    .await;
    scene.forge_reports(&mallory).await.unwrap();
    let done = wait_state(&ops, "fw-2", "completed", LONG).await;
    let c = done.current.expect("a tally").counts;
    assert_eq!((c.members, c.success, c.failure), (2, 2, 0));

    // (b) After it, retained garbage on what devices obey: acked and
    // dropped. Hello, Status, ack, campaign, emergency: only the Hello
    // was its own. No legitimate client was refused anything.
    scene
        .forge_announcements_and_check(&mut mallory, 5)
        .await
        .unwrap();
    assert_eq!(refused(&stack, Refused::Publish) - pub0, 4);
    assert_eq!(refused(&stack, Refused::Subscribe) - sub0, n as u64);

    // A will on acme-1's Presence (heard, acme-1 would show offline) is
    // refused at CONNECT, before the CONNACK, and forgotten.
    let offline = schemas::msg::Presence { online: false }.encode();
    let will = (scene.topics.build(&Topic::Presence(dev("acme-1"))), offline);
    let _again = RawClient::login_with_will(port, me.as_str(), &logins[&me].1, Some(will))
        .await
        .expect("mallory logs in again");
    assert_eq!(refused(&stack, Refused::Publish) - pub0, 5);
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_rotated_device_is_disconnected_at_once_and_its_old_secret_stays_out() {
    let stack = secured_stack().await;
    let ops = alice(&stack).await;
    let port = stack.port();
    let (k1, k2) = (dev("kick-1"), dev("kick-2"));
    let logins = provision::logins(&ops, &[k1.clone(), k2.clone()], None)
        .await
        .expect("provisioned");
    let (pw1, pw2) = (logins[&k1].1.clone(), logins[&k2].1.clone());
    let mut one = RawClient::login(port, "kick-1", &pw1)
        .await
        .expect("kick-1 in");
    let mut two = RawClient::login(port, "kick-2", &pw2)
        .await
        .expect("kick-2 in");
    let revoked0 = refused(&stack, Refused::Revoked);

    let _: serde_json::Value = ops
        .call_ok(Command::DeviceRevoke { id: k1.clone() })
        .await
        .expect("revoke");
    one.closed().await.expect("kick-1 is disconnected");
    // The other device was not touched.
    let (codes, _) = two
        .subscribe(&[Topics::default().build(&Topic::Groups(k2.clone()))])
        .await
        .unwrap();
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    // And the revoked one stays out.
    assert!(RawClient::login(port, "kick-1", &pw1).await.is_err());
    assert!(refused(&stack, Refused::Revoked) > revoked0);

    // Rotate: the connection on the old secret is closed, the old secret
    // refused, the new one let in.
    let bad0 = refused(&stack, Refused::BadCredentials);
    let new_pw = schemas::provisioning::generate_password();
    provision::send_batch(
        &ops,
        &[(k2.clone(), BTreeMap::new(), new_pw.clone())],
        Mode::Rotate,
        None,
    )
    .await
    .expect("rotate");
    two.closed().await.expect("kick-2 is disconnected");
    assert!(RawClient::login(port, "kick-2", &pw2).await.is_err());
    assert!(refused(&stack, Refused::BadCredentials) > bad0);
    RawClient::login(port, "kick-2", &new_pw)
        .await
        .expect("the new secret logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_go_only_to_devices_an_announcement_names_and_a_request_flood_leaves_a_download_alone(
) {
    let stack = secured_stack().await;
    let ops = alice(&stack).await;
    let port = stack.port();
    let t = Topics::default();
    let a = ArtifactId::new("fw-3.0.0-esp32").unwrap();
    artifact(
        &stack,
        Release::new(a.as_str(), Kind::Firmware, "3.0.0").sized(64 * 1024),
    )
    .await;
    group(&ops, "acme", "acme").await;
    group(&ops, "evil", "evil").await;
    let (victim, me) = (dev("acme-1"), dev("mallory"));
    let ids = vec![victim.clone(), dev("acme-2"), me.clone()];
    let logins = provision::logins(&ops, &ids, None)
        .await
        .expect("provisioned");
    let mut devices = acme_devices(&stack, &logins);
    let mut mallory = RawClient::login(port, me.as_str(), &logins[&me].1)
        .await
        .expect("mallory logs in with its own secret");
    let own_blocks = t.build(&Topic::DeviceBlocks(me.clone()));
    let (codes, _) = mallory
        .subscribe(std::slice::from_ref(&own_blocks))
        .await
        .unwrap();
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    mallory.hello(&t, &me, "evil").await.unwrap();
    registered(&stack, 3).await;

    create(
        &ops,
        json!({
            "id": "fw-3", "kind": "firmware", "release": [a.as_str()],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"success_bar_bp": 10000, "min_sample": 1, "wave_timeout_secs": 30}
        }),
    )
    .await;
    let identity = stack.bridge().identity().clone();
    let blocks = stack.bridge().blocks().metrics().clone();
    let (pub0, blocks0) = (
        refused(&stack, Refused::Publish),
        refused(&stack, Refused::Blocks),
    );
    call(
        &ops,
        Command::CampaignStart {
            id: CampaignId::new("fw-3").unwrap(),
        },
    )
    .await;
    wait("the release to be announced to acme", LONG, || {
        identity.may_fetch(&victim, &a)
    })
    .await;
    assert!(
        !identity.may_fetch(&me, &a),
        "mallory is in no group of fw-3"
    );

    // Mallory asks for the artifact on its own topic, then floods: under
    // the victim's id, under invented ids, and under its own.
    let req = BlockRequest {
        artifact: a.clone(),
        offset: 0,
        bitmap: vec![0xff; 8],
    }
    .encode();
    let (others, own) = (200usize, 300usize);
    for i in 0..others / 2 {
        for id in [victim.clone(), dev(&format!("ghost-{i}"))] {
            mallory
                .publish(&t.build(&Topic::Request(id)), false, req.clone())
                .await
                .unwrap();
        }
    }
    for _ in 0..own {
        mallory
            .publish(&t.build(&Topic::Request(me.clone())), false, req.clone())
            .await
            .unwrap();
    }
    // Every one is acked by the broker (the Hello's PUBACK came first).
    let mut seen = mallory.pubacks(1 + others + own).await.unwrap();
    // Under other ids: dropped by the broker's ACL, each counted.
    assert_eq!(refused(&stack, Refused::Publish) - pub0, others as u64);
    // Under its own: refused by the block server, as not announced to it
    // or over its rate, each counted.
    wait("the block server to refuse every request", LONG, || {
        let s = blocks.snapshot();
        s.refused(Refusal::NotAnnounced) + s.refused(Refusal::RateLimited) >= own as u64
    })
    .await;
    let s = blocks.snapshot();
    let not_announced = s.refused(Refusal::NotAnnounced);
    assert!(
        not_announced >= u64::from(BlocksConfig::default().device_request_burst),
        "the burst reached the ACL check: {s:?}"
    );
    assert_eq!(
        refused(&stack, Refused::Blocks) - blocks0,
        not_announced,
        "the identity counts each one too"
    );

    // Meanwhile the real download completes.
    let done = wait_state(&ops, "fw-3", "completed", LONG).await;
    let c = done.current.expect("a tally").counts;
    assert_eq!((c.members, c.success, c.failure), (2, 2, 0));
    // And not one block came to mallory.
    seen.extend(mallory.drain());
    assert!(
        !seen
            .iter()
            .any(|g| matches!(g, Got::Publish { topic, .. } if *topic == own_blocks)),
        "a block was sent to mallory"
    );
    devices.stop_all().await;
}
