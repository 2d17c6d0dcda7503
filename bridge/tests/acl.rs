//! PROTOCOL.md E1 enforced by the bridge's embedded broker (issue 12), end
//! to end: the bridge runs rumqttd with accounts and its `Identity` as the
//! broker's authority, as `ota serve` does; reference devices log in with
//! their own provisioned credentials; an attacker holds one provisioned
//! device's login (`mallory`, customer evil) and, while a campaign to the
//! real devices runs, subscribes and publishes where E1 forbids. Every
//! attempt is refused (SUBACK 0x80, or acked and dropped) and counted, and
//! the campaign completes. A revoked or rotated device is disconnected at
//! once and cannot log in again with its old secret.

mod blocks_common;
mod campaign_common;
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bridge::blocks::BlocksConfig;
use bridge::client::provision::{self, Mode};
use bridge::client::{ClientOptions, OpsClient};
use bridge::identity::{Admission, Refused};
use bridge::{Bridge, Config};
use campaign_common::*;
use common::{Stack, TestBroker};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use schemas::msg::{
    Announcement, ErrorCode, Kind, Membership, StatusAck, StatusState, WireMessage,
};
use schemas::ops::Command;
use schemas::topic::{Topic, Topics};
use schemas::{CampaignId, DeviceId};
use serde_json::json;
use tokio::sync::mpsc;

const BRIDGE: (&str, &str) = ("bridge", "bridge-secret-0123456789");
const ALICE: (&str, &str) = ("alice", "alice-secret-0123456789");

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).expect("a device id")
}

fn creds((username, password): (&str, &str)) -> broker::Credentials {
    broker::Credentials {
        username: username.into(),
        password: password.into(),
    }
}

/// A bridge with its embedded broker, accounts for itself and the
/// operator alice, and only provisioned devices admitted.
async fn secured_stack() -> Stack {
    common::init_tracing();
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("a temp dir");
    let embedded = broker::EmbeddedConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("an address"),
        segment_size: 1024 * 1024,
        segment_count: 3,
        users: [BRIDGE, ALICE]
            .into_iter()
            .map(|(u, p)| (u.to_owned(), p.to_owned()))
            .collect(),
        ..broker::EmbeddedConfig::default()
    };
    let mut config = Config::with_defaults(
        dir.path().join("data"),
        broker::BrokerConfig::Embedded(embedded),
    );
    let operator = common::operator_key();
    let vk = operator.verifying_key();
    config.bridge.operator_keys = [(schemas::keys::kid(&vk), vk)].into();
    let rk = blocks_common::release_key().verifying_key();
    config.bridge.release_keys = [(schemas::keys::kid(&rk), rk)].into();
    config.bridge.credentials = Some(creds(BRIDGE));
    config.bridge.metrics_interval = Duration::from_secs(3600);
    config.devices.admission = Admission::Provisioned;
    config.blocks = BlocksConfig {
        merge_window_ms: 20,
        ..BlocksConfig::default()
    };
    let bridge = Bridge::start(config.clone())
        .await
        .expect("the bridge starts");
    common::within("the bridge to subscribe", bridge.ready()).await;
    Stack {
        broker: TestBroker::in_bridge(port),
        bridge: Some(bridge),
        dir,
        operator,
        config,
    }
}

/// The operator alice.
async fn alice(stack: &Stack) -> OpsClient {
    let mut o = ClientOptions::new("127.0.0.1", stack.port(), stack.operator.clone());
    o.credentials = Some(creds(ALICE));
    common::within("alice to connect", OpsClient::connect(o))
        .await
        .expect("alice connects")
}

/// What a raw client's connection brought, in order.
#[derive(Debug)]
enum Got {
    ConnAck,
    SubAck(Vec<SubscribeReasonCode>),
    PubAck,
    Publish(String, Vec<u8>),
    /// The connection ended (refused, or closed by the broker).
    Closed(String),
}

/// A device's own MQTT client, not the reference agent: it does exactly
/// what the test says and never reconnects.
struct Raw {
    client: AsyncClient,
    got: mpsc::UnboundedReceiver<Got>,
    /// PUBACKs received so far.
    pubacks: usize,
}

impl Raw {
    /// Connects as `id` with this password; `Err` when no CONNACK comes
    /// (rumqttd closes a refused connection without one).
    async fn login(port: u16, id: &str, password: &str) -> Result<Raw, String> {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_credentials(id, password);
        o.set_keep_alive(Duration::from_secs(10));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, got) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let g = match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Got::ConnAck,
                    Ok(Event::Incoming(Packet::SubAck(s))) => Got::SubAck(s.return_codes),
                    Ok(Event::Incoming(Packet::PubAck(_))) => Got::PubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Got::Publish(p.topic, p.payload.to_vec())
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Got::Closed(e.to_string()));
                        return;
                    }
                };
                if tx.send(g).is_err() {
                    return;
                }
            }
        });
        let mut raw = Raw {
            client,
            got,
            pubacks: 0,
        };
        match raw.next().await {
            Got::ConnAck => Ok(raw),
            other => Err(format!("{other:?}")),
        }
    }

    async fn next(&mut self) -> Got {
        let g = common::within("the client's next event", self.got.recv())
            .await
            .unwrap_or(Got::Closed("the event task ended".into()));
        if matches!(g, Got::PubAck) {
            self.pubacks += 1;
        }
        g
    }

    /// Waits until `n` PUBACKs came in all; returns what else came.
    async fn pubacks(&mut self, n: usize) -> Vec<Got> {
        let mut seen = Vec::new();
        while self.pubacks < n {
            match self.next().await {
                Got::Closed(why) => panic!("the connection ended: {why}; before: {seen:?}"),
                g => seen.push(g),
            }
        }
        seen
    }

    /// The next event `pick` takes; what it skips is returned too.
    async fn until<T>(&mut self, mut pick: impl FnMut(&Got) -> Option<T>) -> (T, Vec<Got>) {
        let mut skipped = Vec::new();
        loop {
            let g = self.next().await;
            if let Some(t) = pick(&g) {
                return (t, skipped);
            }
            if let Got::Closed(why) = &g {
                panic!("the connection ended while waiting: {why}; before: {skipped:?}");
            }
            skipped.push(g);
        }
    }

    async fn subscribe(&mut self, filters: &[String]) -> (Vec<SubscribeReasonCode>, Vec<Got>) {
        self.client
            .subscribe_many(
                filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
            )
            .await
            .expect("the subscribe is queued");
        self.until(|g| match g {
            Got::SubAck(codes) => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    async fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("the publish is queued");
    }

    /// Says Hello as device `id` of this customer.
    async fn hello(&self, id: &str, customer: &str) {
        let hello = common::hello("ep000001", 0, &[("customer", customer)]);
        let topic = Topics::default().build(&Topic::Hello(dev(id)));
        self.publish(&topic, false, hello.encode()).await;
    }

    /// Waits until the broker closes this connection.
    async fn closed(&mut self) -> String {
        self.until(|g| match g {
            Got::Closed(why) => Some(why.clone()),
            _ => None,
        })
        .await
        .0
    }
}

fn refused(stack: &Stack, why: Refused) -> u64 {
    stack.bridge().identity().refusals().get(why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_with_one_devices_login_is_refused_and_counted_while_a_campaign_completes() {
    let stack = secured_stack().await;
    let ops = alice(&stack).await;
    let port = stack.port();
    let t = Topics::default();
    artifact(
        &stack,
        "fw-2.0.0-esp32",
        Kind::Firmware,
        "main",
        "2.0.0",
        "esp32",
        3000,
    )
    .await;
    group(&ops, "acme", "acme").await;
    group(&ops, "evil", "evil").await;
    let ids: Vec<DeviceId> = ["acme-1", "acme-2", "acme-3", "mallory"]
        .into_iter()
        .map(dev)
        .collect();
    let logins = provision::logins(&ops, &ids).await.expect("provisioned");

    let mut devices = Devices::default();
    for id in ["acme-1", "acme-2"] {
        devices.spawn(
            &stack,
            DeviceOpts::new(id, "acme").login(logins[&dev(id)].clone()),
        );
    }
    let mut mallory = Raw::login(port, "mallory", &logins[&dev("mallory")].1)
        .await
        .expect("mallory logs in with its own secret");
    let own_groups = t.build(&Topic::Groups(dev("mallory")));
    mallory.hello("mallory", "evil").await;
    registered(&stack, 3).await;

    // (a) Subscriptions outside E1: every one refused with 0x80, its own
    // Membership granted, in one SUBSCRIBE.
    let (sub0, pub0) = (
        refused(&stack, Refused::Subscribe),
        refused(&stack, Refused::Publish),
    );
    let forbidden = [
        "#".to_string(),
        "ota/v1/ops/#".to_string(),
        t.build(&Topic::OpsCommands),
        "ota/v1/devices/+/status".to_string(),
        t.build(&Topic::Groups(dev("acme-1"))),
        t.build(&Topic::Ack(dev("acme-1"))),
        t.build(&Topic::GroupCampaign(
            schemas::GroupName::new("acme").unwrap(),
        )),
    ];
    let mut filters = forbidden.to_vec();
    filters.push(own_groups.clone());
    let (codes, _) = mallory.subscribe(&filters).await;
    let mut want = vec![SubscribeReasonCode::Failure; forbidden.len()];
    want.push(SubscribeReasonCode::Success(QoS::AtLeastOnce));
    assert_eq!(codes, want);
    assert_eq!(
        refused(&stack, Refused::Subscribe) - sub0,
        forbidden.len() as u64
    );

    // (d) Meanwhile the real campaign.
    create(
        &ops,
        json!({
            "id": "fw-2", "kind": "firmware", "release": ["fw-2.0.0-esp32"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"success_bar_bp": 10000, "min_sample": 1, "wave_timeout_secs": 30}
        }),
    )
    .await;
    call(
        &ops,
        Command::CampaignStart {
            id: CampaignId::new("fw-2").unwrap(),
        },
    )
    .await;
    // (b) During it: a `failed` Status and a StatusAck under acme-1's
    // name, both retained. Either, heard, would change the campaign.
    let mut forged = schemas::msg::Status {
        campaign: Some(CampaignId::new("fw-2").unwrap()),
        ..common::status(1, StatusState::Failed)
    };
    forged.error = Some(ErrorCode::InstallFailed);
    mallory
        .publish(
            &t.build(&Topic::Status(dev("acme-1"))),
            true,
            forged.encode(),
        )
        .await;
    mallory
        .publish(
            &t.build(&Topic::Ack(dev("acme-1"))),
            true,
            StatusAck { seq: 1_000_000 }.encode(),
        )
        .await;
    let done = wait_state(&ops, "fw-2", "completed", LONG).await;
    let c = done.current.expect("a tally").counts;
    assert_eq!((c.members, c.success, c.failure), (2, 2, 0));

    // (b) After it: retained payloads on what every device obeys. Each
    // is acked (the client need not resend) and dropped.
    let campaign_topic = t.build(&Topic::GroupCampaign(
        schemas::GroupName::new("acme").unwrap(),
    ));
    let emergency = t.build(&Topic::Emergency);
    for topic in [&campaign_topic, &emergency] {
        mallory.publish(topic, true, b"forged".to_vec()).await;
    }
    // Hello, Status, ack, campaign, emergency: only the Hello was its own.
    let seen = mallory.pubacks(5).await;
    assert_eq!(refused(&stack, Refused::Publish) - pub0, 4);

    // The retained announcement is still the bridge's: a device that
    // joins acme now reads it (its emergency topic first: a forged
    // retained emergency would arrive before the announcement).
    let mut observer = Raw::login(port, "acme-3", &logins[&dev("acme-3")].1)
        .await
        .expect("acme-3 logs in");
    let observer_groups = t.build(&Topic::Groups(dev("acme-3")));
    observer
        .subscribe(std::slice::from_ref(&observer_groups))
        .await;
    observer.hello("acme-3", "acme").await;
    observer
        .until(|g| match g {
            Got::Publish(topic, p) if *topic == observer_groups => Membership::decode_retained(p)
                .ok()
                .filter(|m| m.groups.iter().any(|g| g.as_str() == "acme")),
            _ => None,
        })
        .await;
    let (codes, before) = observer
        .subscribe(&[emergency.clone(), campaign_topic.clone()])
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce); 2]);
    let (retained, before_it) = observer
        .until(|g| match g {
            Got::Publish(topic, p) if *topic == campaign_topic => Some(p.clone()),
            _ => None,
        })
        .await;
    let a = Announcement::decode_retained(&retained)
        .expect("the retained announcement decodes")
        .expect("an announcement");
    assert_eq!(a.campaign.as_str(), "fw-2");
    for g in before.iter().chain(&before_it) {
        if let Got::Publish(topic, p) = g {
            assert!(
                !(topic == &emergency && p == b"forged"),
                "the forged emergency was retained"
            );
        }
    }

    // Through all of it mallory heard nothing but its own Membership.
    for g in seen {
        if let Got::Publish(topic, _) = g {
            assert_eq!(topic, own_groups, "mallory heard {topic}");
        }
    }
    while let Ok(g) = mallory.got.try_recv() {
        if let Got::Publish(topic, _) = g {
            assert_eq!(topic, own_groups, "mallory heard {topic}");
        }
    }
    // Subscriptions refused with the topics: acme-3's were all granted.
    assert_eq!(
        refused(&stack, Refused::Subscribe) - sub0,
        forbidden.len() as u64
    );
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_rotated_device_is_disconnected_at_once_and_its_old_secret_stays_out() {
    let stack = secured_stack().await;
    let ops = alice(&stack).await;
    let port = stack.port();
    let (k1, k2) = (dev("kick-1"), dev("kick-2"));
    let logins = provision::logins(&ops, &[k1.clone(), k2.clone()])
        .await
        .expect("provisioned");
    let (pw1, pw2) = (logins[&k1].1.clone(), logins[&k2].1.clone());
    let mut one = Raw::login(port, "kick-1", &pw1).await.expect("kick-1 in");
    let mut two = Raw::login(port, "kick-2", &pw2).await.expect("kick-2 in");
    let revoked0 = refused(&stack, Refused::Revoked);

    let _: serde_json::Value = ops
        .call_ok(Command::DeviceRevoke { id: k1.clone() })
        .await
        .expect("revoke");
    let why = one.closed().await;
    assert!(!why.is_empty());
    // The other device was not touched.
    let (codes, _) = two
        .subscribe(&[Topics::default().build(&Topic::Groups(k2.clone()))])
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    // And the revoked one stays out.
    assert!(Raw::login(port, "kick-1", &pw1).await.is_err());
    assert!(refused(&stack, Refused::Revoked) > revoked0);

    // Rotate: the connection on the old secret is closed, the old secret
    // refused, the new one let in.
    let bad0 = refused(&stack, Refused::BadCredentials);
    let new_pw = schemas::provisioning::generate_password();
    provision::send_batch(
        &ops,
        &[(k2.clone(), BTreeMap::new(), new_pw.clone())],
        Mode::Rotate,
    )
    .await
    .expect("rotate");
    two.closed().await;
    assert!(Raw::login(port, "kick-2", &pw2).await.is_err());
    assert!(refused(&stack, Refused::BadCredentials) > bad0);
    let _back = Raw::login(port, "kick-2", &new_pw)
        .await
        .expect("the new secret logs in");
}
