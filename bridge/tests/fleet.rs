//! Devices register with Hello and are listed to operators; groups assign
//! them and they receive their retained Membership; a restarted bridge
//! republishes what a broker lost. Each test runs against rumqttd and
//! Mosquitto.

mod common;

use bridge::client::OpsClient;
use bridge::ops::fleet_cmds::{DeviceShow, GroupDelete, GroupList, GroupPut};
use common::*;
use schemas::msg::{Presence, StatusState, WireMessage};
use schemas::ops::Command;
use schemas::topic::Topic;
use schemas::{DeviceId, GroupName};

fn g(s: &str) -> GroupName {
    GroupName::new(s).unwrap()
}

async fn hello_registers_a_device_operators_can_list(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let ops = stack.ops().await;
    let mut events = ops.events().await.unwrap();
    let dev = stack.device("dev-0001").await;
    // Online comes from Presence (sent first, as devices do), never from a
    // Hello that anyone could publish.
    dev.publish(
        &Topic::Presence(dev.id.clone()),
        Presence { online: true }.encode(),
    )
    .await;
    dev.hello("ep000001", 1, &[("customer", "acme"), ("line", "3")])
        .await;

    let e = within("the device.registered event", events.next())
        .await
        .unwrap();
    assert_eq!(e.kind, "device.registered");

    let list = ops.device_list(None).await.unwrap();
    assert_eq!(list.devices.len(), 1);
    let d = &list.devices[0];
    assert_eq!(d.record.id.as_str(), "dev-0001");
    assert_eq!(d.record.arch, "esp32");
    assert!(d.record.online);
    assert_eq!(d.record.labels.get("customer"), Some("acme"));

    let show: DeviceShow = ops
        .call_ok(Command::DeviceShow {
            id: DeviceId::new("dev-0001").unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(show.device.record.versions.get("main"), Some("1.0.0"));
    let err = ops
        .call_ok::<DeviceShow>(Command::DeviceShow {
            id: DeviceId::new("nobody").unwrap(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not registered"), "{err}");
}

async fn selector_groups_send_retained_membership(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let ops = stack.ops().await;
    let mut events = ops.events().await.unwrap();
    let mut a = stack.device("dev-a").await;
    let b = stack.device("dev-b").await;
    a.hello("ep000001", 1, &[("customer", "acme"), ("line", "3")])
        .await;
    b.hello("ep000001", 1, &[("customer", "globex")]).await;
    for _ in 0..2 {
        within("registrations", events.next()).await.unwrap();
    }

    let put: GroupPut = ops
        .call_ok(Command::GroupPut {
            name: g("acme-3"),
            selector: Some("customer=acme, line in (3,4)".into()),
            members: None,
        })
        .await
        .unwrap();
    assert_eq!(put.group.devices, 1);
    assert_eq!(put.membership_changed, 1);
    a.wait_groups(&["acme-3"]).await;

    // The membership is retained: a device subscribing later receives it.
    a.disconnect().await;
    let mut a2 = TestDevice::connect(stack.port(), "dev-a").await;
    a2.wait_groups(&["acme-3"]).await;

    // An explicit list adds a second group; only changes are published.
    let canary = || Command::GroupPut {
        name: g("canary"),
        selector: None,
        members: Some(vec![
            DeviceId::new("dev-a").unwrap(),
            DeviceId::new("dev-b").unwrap(),
        ]),
    };
    ops.call_ok::<GroupPut>(canary()).await.unwrap();
    a2.wait_groups(&["acme-3", "canary"]).await;
    let before = stack.metrics().memberships_published;
    ops.call_ok::<GroupPut>(canary()).await.unwrap();
    assert_eq!(
        stack.metrics().memberships_published,
        before,
        "an unchanged group publishes nothing"
    );

    // A label change moves the device out of the selector group.
    a2.hello("ep000001", 1, &[("customer", "acme"), ("line", "7")])
        .await;
    a2.wait_groups(&["canary"]).await;

    let list: GroupList = ops.call_ok(Command::GroupList).await.unwrap();
    let names: Vec<_> = list.groups.iter().map(|g| g.record.name.as_str()).collect();
    assert_eq!(names, ["acme-3", "canary"]);
    let in_canary = ops.device_list(Some(g("canary"))).await.unwrap();
    assert_eq!(in_canary.devices.len(), 2);

    let del: GroupDelete = ops
        .call_ok(Command::GroupDelete { name: g("canary") })
        .await
        .unwrap();
    assert_eq!(del.membership_changed, 2);
    a2.wait_groups(&[]).await;
    let err = ops
        .call_ok::<GroupDelete>(Command::GroupDelete { name: g("canary") })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");

    // A bad selector is refused with the reason.
    let err = ops
        .call_ok::<GroupPut>(Command::GroupPut {
            name: g("bad"),
            selector: Some("customer=".into()),
            members: None,
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("column"), "{err}");
}

/// A signed command this bridge does not know (a newer CLI) is refused
/// with the reason, and the bridge goes on.
async fn an_unknown_command_is_refused_with_the_reason(kind: BrokerKind) {
    use ed25519_dalek::Signer;
    let stack = Stack::start(kind).await;
    let ops = stack.ops().await;
    let body = format!(
        r#"{{"request_id":"req-future","issued_at":{},"command":{{"op":"reboot_everything"}}}}"#,
        bridge::unix_now()
    );
    let env = schemas::ops::CommandEnvelope {
        kid: hex::encode(schemas::keys::kid(&stack.operator.verifying_key())),
        sig: hex::encode(stack.operator.sign(body.as_bytes()).to_bytes()),
        body,
    };
    let id = schemas::RequestId::new("req-future").unwrap();
    let reply = ops.send(env.to_bytes(), &id).await.unwrap();
    assert!(!reply.ok);
    assert!(reply.error.unwrap().contains("reboot_everything"));
    ops.call_ok::<GroupList>(Command::GroupList).await.unwrap();
}

/// `dev` says Hello with the label `site=SITE`, has its Status `seq`
/// acknowledged, and receives its membership of the selector group
/// `site-SITE`: the state the next two tests expect to outlive a bridge.
async fn reported_in_site_group(ops: &OpsClient, dev: &mut TestDevice, seq: u64, site: &str) {
    dev.hello("ep000001", seq, &[("site", site)]).await;
    dev.status(seq, StatusState::Accepted).await;
    dev.wait_ack(Some(seq)).await;
    let group = format!("site-{site}");
    ops.call_ok::<GroupPut>(Command::GroupPut {
        name: g(&group),
        selector: Some(format!("site={site}")),
        members: None,
    })
    .await
    .unwrap();
    dev.wait_groups(&[&group]).await;
}

async fn state_survives_a_restart(kind: BrokerKind) {
    let mut stack = Stack::start(kind).await;
    let ops = stack.ops().await;
    let mut dev = stack.device("dev-r").await;
    reported_in_site_group(&ops, &mut dev, 1, "x").await;

    stack.restart_bridge().await;
    let list = ops.device_list(Some(g("site-x"))).await.unwrap();
    assert_eq!(list.devices.len(), 1);
    // The counter continues: the next report is acknowledged on top.
    dev.status(2, StatusState::Downloading).await;
    dev.wait_ack(Some(2)).await;
}

/// A broker that lost its retained messages heals when the bridge starts:
/// the bridge republishes every retained message it owns from its store.
async fn retained_messages_are_republished_to_a_new_broker(kind: BrokerKind) {
    let mut stack = Stack::start(kind).await;
    let ops = stack.ops().await;
    let mut dev = stack.device("dev-h").await;
    reported_in_site_group(&ops, &mut dev, 10, "y").await;
    stack.stop_bridge().await;

    // A brand-new broker: nothing retained.
    let fresh = TestBroker::start(kind).await;
    stack.config.broker = fresh.bridge_broker_config();
    stack.broker = fresh;
    stack.start_bridge().await;
    dev.disconnect().await;
    let mut dev2 = stack.device("dev-h").await;
    dev2.wait_ack(Some(10)).await;
    dev2.wait_groups(&["site-y"]).await;
    assert!(stack.metrics().retained_republished >= 2);
}

on_both_brokers!(
    hello_registers_a_device_operators_can_list,
    selector_groups_send_retained_membership,
    an_unknown_command_is_refused_with_the_reason,
    state_survives_a_restart,
    retained_messages_are_republished_to_a_new_broker,
);

/// `ota serve` in-process: `run()` with the embedded broker, stopped by
/// the shutdown future it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_the_embedded_broker_until_shutdown() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let embedded = broker::EmbeddedConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        segment_size: 1024 * 1024,
        segment_count: 3,
        ..broker::EmbeddedConfig::default()
    };
    let operator = operator_key();
    let mut config = bridge::Config::with_defaults(
        dir.path().join("data"),
        broker::BrokerConfig::Embedded(embedded),
    );
    let vk = operator.verifying_key();
    config.bridge.operator_keys = [(schemas::keys::kid(&vk), vk)].into();
    config.bridge.director_key = Some(common::director_key());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(bridge::run(config, async {
        let _ = stop_rx.await;
    }));

    // The broker and the bridge come up; an operator sees a device.
    let ops =
        within("the operator client", async {
            loop {
                if let Ok(c) = bridge::client::OpsClient::connect(
                    bridge::client::ClientOptions::new("127.0.0.1", port, operator.clone()),
                )
                .await
                {
                    break c;
                }
            }
        })
        .await;
    let mut events = ops.events().await.unwrap();
    let dev = TestDevice::connect(port, "dev-serve").await;
    // The bridge may not be subscribed yet: say Hello until it is heard.
    within("the device to register", async {
        loop {
            dev.hello("ep000001", 1, &[]).await;
            if let Ok(Some(e)) =
                tokio::time::timeout(std::time::Duration::from_millis(300), events.next()).await
            {
                assert_eq!(e.kind, "device.registered");
                break;
            }
        }
    })
    .await;
    let list = ops.device_list(None).await.unwrap();
    assert_eq!(list.devices.len(), 1);

    stop_tx.send(()).unwrap();
    within("run() to return", serve).await.unwrap().unwrap();
}
