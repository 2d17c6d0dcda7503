//! Bad input on every topic (issue 3, §5) is dropped or refused, counted,
//! and the bridge keeps working: after each case a good message still gets
//! its answer. Each test runs against rumqttd and Mosquitto.

mod common;

use bridge::ops::fleet_cmds::GroupList;
use bridge::DropReason;
use common::*;
use schemas::cbor::{MapBuilder, Value};
use schemas::keys::SigningKey;
use schemas::msg::{Presence, StatusState, WireMessage};
use schemas::ops::{Command, CommandBody, CommandEnvelope};
use schemas::topic::Topic;
use schemas::RequestId;

/// A device that said Hello, and proof the bridge still acknowledges it.
async fn still_works(dev: &mut TestDevice, seq: u64) {
    dev.status(seq, StatusState::Downloading).await;
    dev.wait_ack(Some(seq)).await;
}

async fn bad_device_payloads_are_dropped_and_counted(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut dev = stack.device("dev-bad").await;
    dev.hello("ep000001", 1, &[]).await;
    still_works(&mut dev, 1).await;
    let status_topic = Topic::Status(dev.id.clone());

    // Not CBOR at all.
    dev.publish(&status_topic, b"\xff\x00 not cbor".to_vec())
        .await;
    until("malformed status counted", || {
        stack.metrics().dropped(DropReason::Malformed) == 1
    })
    .await;
    still_works(&mut dev, 2).await;

    // A valid Status followed by trailing bytes.
    let mut trailing = common::status(3, StatusState::Downloading).encode();
    trailing.push(0x00);
    dev.publish(&status_topic, trailing).await;
    until("trailing bytes counted", || {
        stack.metrics().dropped(DropReason::Malformed) == 2
    })
    .await;

    // A map with a key twice.
    let dup = schemas::cbor::encode(&Value::Map(vec![
        (Value::Text("seq".into()), Value::Integer(3.into())),
        (Value::Text("seq".into()), Value::Integer(4.into())),
        (Value::Text("state".into()), Value::Text("accepted".into())),
        (Value::Text("versions".into()), Value::Map(vec![])),
    ]));
    dev.publish(&status_topic, dup).await;
    until("duplicate key counted", || {
        stack.metrics().dropped(DropReason::Malformed) == 3
    })
    .await;

    // A malformed Hello and a malformed Presence.
    dev.publish(
        &Topic::Hello(dev.id.clone()),
        MapBuilder::new().put("proto", 1u64).encode(),
    )
    .await;
    dev.publish(&Topic::Presence(dev.id.clone()), b"\x01\x02".to_vec())
        .await;
    until("malformed hello and presence counted", || {
        stack.metrics().dropped(DropReason::Malformed) == 5
    })
    .await;
    still_works(&mut dev, 3).await;

    // A payload over its bound (16 KiB for a Status).
    dev.publish(&status_topic, vec![0xa0; 20 * 1024]).await;
    until("oversized counted", || {
        stack.metrics().dropped(DropReason::Oversized) == 1
    })
    .await;
    still_works(&mut dev, 4).await;

    // A good Presence after all that is still read.
    dev.publish(
        &Topic::Presence(dev.id.clone()),
        Presence { online: false }.encode(),
    )
    .await;
    until("presence counted", || stack.metrics().presence == 1).await;
    assert_eq!(stack.metrics().statuses_stored, 4);
}

async fn bad_topics_are_dropped_and_counted(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut dev = stack.device("dev-t").await;
    dev.hello("ep000001", 1, &[]).await;
    let good = common::status(1, StatusState::Accepted).encode();
    // An id over 64 characters, and one outside the alphabet.
    dev.publish_raw(
        &format!("ota/v1/devices/{}/status", "x".repeat(65)),
        good.clone(),
    )
    .await;
    dev.publish_raw("ota/v1/devices/bad id/status", good.clone())
        .await;
    dev.publish_raw("ota/v1/devices/é/hello", good.clone())
        .await;
    until("bad topics counted", || {
        stack.metrics().dropped(DropReason::BadTopic) == 3
    })
    .await;
    still_works(&mut dev, 1).await;
}

async fn a_status_from_an_unknown_device_is_dropped(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut ghost = stack.device("dev-ghost").await;
    ghost.status(1, StatusState::Accepted).await;
    until("unknown device counted", || {
        stack.metrics().dropped(DropReason::UnknownDevice) == 1
    })
    .await;
    assert_eq!(stack.metrics().statuses_stored, 0);
    assert_eq!(*ghost.ack.borrow(), None);
    // Once it says Hello, its reports count.
    ghost.hello("ep000001", 1, &[]).await;
    still_works(&mut ghost, 1).await;
}

fn body(id: &str, issued_at: u64) -> CommandBody {
    CommandBody {
        request_id: RequestId::new(id).unwrap(),
        issued_at,
        command: Command::GroupList,
        audience: None,
    }
}

async fn forged_replayed_and_stale_commands_are_refused(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let ops = stack.ops().await;
    let now = bridge::unix_now();

    // Signed by a key the bridge does not trust.
    let stranger = ops_client(stack.port(), SigningKey::from_bytes(&[7; 32])).await;
    let reply = stranger.call(Command::GroupList).await.unwrap();
    assert!(!reply.ok);
    assert!(reply.error.unwrap().contains("unknown operator key"));

    // A trusted kid, but the body was changed after signing.
    let mut env = CommandEnvelope::sign(&body("req-tampered", now), &stack.operator);
    env.body = env.body.replace("group_list", "device_list");
    let reply = ops
        .send(env.to_bytes(), &RequestId::new("req-tampered").unwrap())
        .await
        .unwrap();
    assert!(reply.error.unwrap().contains("does not verify"));
    assert_eq!(stack.metrics().dropped(DropReason::CommandForged), 2);

    // Replayed: the same signed envelope twice.
    let env = CommandEnvelope::sign(&body("req-once", now), &stack.operator).to_bytes();
    let id = RequestId::new("req-once").unwrap();
    assert!(ops.send(env.clone(), &id).await.unwrap().ok);
    let reply = ops.send(env, &id).await.unwrap();
    assert!(reply.error.unwrap().contains("already received"));
    assert_eq!(stack.metrics().dropped(DropReason::CommandReplayed), 1);

    // Stale: issued an hour ago.
    let env = CommandEnvelope::sign(&body("req-old", now - 3600), &stack.operator).to_bytes();
    let reply = ops
        .send(env, &RequestId::new("req-old").unwrap())
        .await
        .unwrap();
    assert!(reply.error.unwrap().contains("outside the bridge's window"));
    assert_eq!(stack.metrics().dropped(DropReason::CommandStale), 1);

    // Not an envelope at all: no request id to reply to; counted.
    let dev = stack.device("dev-op").await;
    dev.publish(&Topic::OpsCommands, b"{\"kid\": 1}".to_vec())
        .await;
    until("malformed command counted", || {
        stack.metrics().dropped(DropReason::CommandMalformed) == 1
    })
    .await;

    // Every command, accepted or refused, is in the audit tree.
    let audit = stack.bridge().store().audit.since(0).unwrap();
    assert_eq!(audit.iter().filter(|e| e.accepted).count(), 1);
    // Two forged, one replayed, one stale, one malformed.
    assert_eq!(audit.iter().filter(|e| !e.accepted).count(), 5);
    assert_eq!(stack.metrics().commands_refused, 5);

    // And the bridge still takes good commands.
    ops.call_ok::<GroupList>(Command::GroupList).await.unwrap();
}

/// The replay cache is seeded from the audit tree: a restart does not
/// reopen a replay window.
async fn a_replay_after_a_restart_is_refused(kind: BrokerKind) {
    let mut stack = Stack::start(kind).await;
    let env =
        CommandEnvelope::sign(&body("req-restart", bridge::unix_now()), &stack.operator).to_bytes();
    let id = RequestId::new("req-restart").unwrap();
    {
        let ops = stack.ops().await;
        assert!(ops.send(env.clone(), &id).await.unwrap().ok);
    }
    stack.restart_bridge().await;
    let ops = stack.ops().await;
    let reply = ops.send(env, &id).await.unwrap();
    assert!(reply.error.unwrap().contains("already received"));
}

/// Quotas (issue 12): a device that floods Hellos is held at
/// `[status] hellos_per_minute`, and its reports still count.
async fn a_hello_flood_is_held_at_the_quota(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut dev = stack.device("dev-flood").await;
    const FLOOD: u64 = 200;
    for _ in 0..FLOOD {
        dev.hello("ep000001", 1, &[]).await;
    }
    until("every Hello taken or held", || {
        let m = stack.metrics();
        m.hellos + m.dropped(DropReason::HelloRate) == FLOOD
    })
    .await;
    let m = stack.metrics();
    // 30 a minute: at most 60 if the flood spans a minute's turn.
    assert!(m.hellos >= 1 && m.hellos <= 60, "{} Hellos taken", m.hellos);
    assert!(m.dropped(DropReason::HelloRate) >= FLOOD - 60);
    still_works(&mut dev, 1).await;
}

/// Conflicting reports kept aside are bounded per device: past the bound
/// they are counted, not stored.
async fn conflicts_past_the_bound_are_counted_not_kept(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut dev = stack.device("dev-conflict").await;
    dev.hello("ep000001", 1, &[]).await;
    still_works(&mut dev, 1).await;
    let bound = bridge::store::status::MAX_CONFLICTS_PER_DEVICE as u64;
    let sent = bound + 10;
    for i in 0..sent {
        let mut s = common::status(1, StatusState::Downloading);
        s.progress = Some(i + 1);
        dev.publish(&Topic::Status(dev.id.clone()), s.encode())
            .await;
    }
    until("every conflict counted", || {
        stack.metrics().statuses_conflict == sent
    })
    .await;
    assert_eq!(stack.metrics().dropped(DropReason::ConflictNotKept), 10);
    let kept = stack.bridge().store().status.conflicts_of(&dev.id).unwrap();
    assert_eq!(kept.len() as u64, bound);
    still_works(&mut dev, 2).await;
}

/// A flood of refused commands is counted, and audited only up to the
/// budget a minute.
async fn a_flood_of_refused_commands_is_counted_not_all_audited(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let ops = stack.ops().await;
    let dev = stack.device("dev-junk").await;
    const FLOOD: u64 = 300;
    for i in 0..FLOOD {
        dev.publish(
            &Topic::OpsCommands,
            format!("{{\"junk\": {i}}}").into_bytes(),
        )
        .await;
    }
    until("every refusal counted", || {
        stack.metrics().commands_refused == FLOOD
    })
    .await;
    let audited = stack
        .bridge()
        .store()
        .audit
        .since(0)
        .unwrap()
        .iter()
        .filter(|e| !e.accepted)
        .count() as u64;
    let budget = bridge::ops::REFUSALS_AUDITED_PER_MINUTE as u64;
    // One minute's budget, two if the flood spans a minute's turn.
    assert!(
        audited >= budget && audited <= 2 * budget,
        "{audited} refusals audited"
    );
    // Good commands are still taken, and audited.
    ops.call_ok::<GroupList>(Command::GroupList).await.unwrap();
}

on_both_brokers!(
    a_hello_flood_is_held_at_the_quota,
    conflicts_past_the_bound_are_counted_not_kept,
    a_flood_of_refused_commands_is_counted_not_all_audited,
    bad_device_payloads_are_dropped_and_counted,
    bad_topics_are_dropped_and_counted,
    a_status_from_an_unknown_device_is_dropped,
    forged_replayed_and_stale_commands_are_refused,
    a_replay_after_a_restart_is_refused,
);

/// A bad config file is refused with the key named; the bridge does not
/// start without operator keys.
#[tokio::test]
async fn bad_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota.toml");
    std::fs::write(&path, "[status]\nmax_batch = \"many\"\n").unwrap();
    let e = bridge::Config::load(&path).unwrap_err().to_string();
    assert!(e.contains("max_batch"), "{e}");
    // An anonymous broker, allowed, so that the [bridge] keys are checked.
    let anonymous = "[broker]\nallow_anonymous = true\n";
    std::fs::write(
        &path,
        format!("{anonymous}[bridge]\noperator_keys = [\"nope.pub\"]\n"),
    )
    .unwrap();
    let e = bridge::Config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("[bridge] operator_keys[0]") && e.contains("nope.pub"),
        "{e}"
    );
    std::fs::write(&path, format!("{anonymous}[bridge]\ndata_dir = \"d\"\n")).unwrap();
    let config = bridge::Config::load(&path).unwrap();
    let e = bridge::Bridge::start(config)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("operator_keys"), "{e}");
    // With an operator key but no director key: refused too, saying what
    // to run and what to write.
    std::fs::write(
        dir.path().join("op.pub"),
        schemas::keys::verifying_key_to_text(&common::operator_key().verifying_key()),
    )
    .unwrap();
    std::fs::write(
        &path,
        format!("{anonymous}[bridge]\ndata_dir = \"d\"\noperator_keys = [\"op.pub\"]\n"),
    )
    .unwrap();
    let config = bridge::Config::load(&path).unwrap();
    let e = bridge::Bridge::start(config)
        .await
        .err()
        .expect("no director key, no start")
        .to_string();
    for want in [
        "no [bridge] director_key",
        "ota keygen",
        "director_key = \"keys/director.key\" under [bridge]",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
}
