//! Operators are not fooled (issue 13, part 5): with a director key the
//! bridge signs its replies and events in the envelope of commands; a CLI
//! that pins the bridge's key refuses a forged reply loudly and never shows
//! an unsigned event; a command addressed to another bridge is refused.
//! Each test runs against rumqttd and Mosquitto (both anonymous: anyone
//! may publish a reply).

mod common;

use std::time::Duration;

use bridge::client::{ClientError, ClientOptions, OpsClient};
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::ops::{Command, CommandBody, CommandEnvelope, Reply};
use schemas::topic::{Topic, Topics};
use schemas::RequestId;

async fn pinned(stack: &Stack) -> OpsClient {
    let mut o = ClientOptions::new("127.0.0.1", stack.port(), stack.operator.clone());
    o.bridge_key = Some(director_key().verifying_key());
    o.timeout = Duration::from_secs(3);
    within("the pinned client to connect", OpsClient::connect(o))
        .await
        .expect("connects")
}

/// A forger that answers every command on `P/ops/commands` with an empty
/// device list, unsigned, at once.
async fn forger(port: u16) {
    let mut o = MqttOptions::new("forger", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let topics = Topics::default();
    client
        .subscribe(topics.build(&Topic::OpsCommands), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.try_send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(env) = CommandEnvelope::parse(&p.payload) else {
                        continue;
                    };
                    let Ok(body) = serde_json::from_str::<CommandBody>(&env.body) else {
                        continue;
                    };
                    let reply = Reply::ok(
                        body.request_id.clone(),
                        serde_json::json!({"devices": [], "next": null}),
                    );
                    let _ = client.try_publish(
                        topics.build(&Topic::OpsReply(body.request_id)),
                        QoS::AtLeastOnce,
                        false,
                        serde_json::to_vec(&reply).unwrap(),
                    );
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    within("the forger's subscription", ready.recv()).await;
}

async fn replies_are_signed_and_a_forged_one_fails_the_pinned_client(kind: BrokerKind) {
    let mut stack = Stack::start(kind).await;
    // With the bridge up, the pinned client reads its signed replies.
    let client = pinned(&stack).await;
    let reply = client
        .call(Command::GroupList)
        .await
        .expect("a signed reply");
    assert!(reply.ok, "{reply:?}");
    // With the bridge away, only the forger answers: the unpinned client
    // is fooled, the pinned one refuses loudly.
    stack.stop_bridge().await;
    forger(stack.port()).await;
    let fooled = stack.ops().await;
    let r = fooled
        .call(Command::GroupList)
        .await
        .expect("the forged reply");
    assert!(
        r.ok,
        "the forger's reply reads as a success to an unpinned client"
    );
    let e = client.call(Command::GroupList).await.unwrap_err();
    assert!(matches!(e, ClientError::Forged(_)), "{e}");
    assert!(
        e.to_string()
            .contains("not signed by the pinned bridge key"),
        "{e}"
    );
}

async fn a_command_for_another_bridge_is_refused(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let ops = stack.ops().await;
    let id = RequestId::new("req-elsewhere-0001").unwrap();
    let body = CommandBody {
        request_id: id.clone(),
        issued_at: bridge::unix_now(),
        command: Command::GroupList,
        audience: Some("00112233445566ff".into()),
    };
    let env = CommandEnvelope::sign(&body, &stack.operator).to_bytes();
    let reply = ops.send(env, &id).await.expect("a reply");
    assert!(!reply.ok);
    let error = reply.error.unwrap_or_default();
    assert!(error.contains("meant for the bridge"), "{error}");
    // Addressed to this bridge (the pinned client names it): it runs.
    let client = pinned(&stack).await;
    assert!(client.call(Command::GroupList).await.unwrap().ok);
}

async fn events_not_signed_by_the_bridge_are_never_shown(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let client = pinned(&stack).await;
    let mut events = client.events().await.unwrap();
    // A forged event, then a real one (a device registering).
    let dev = stack.device("dev-e").await;
    let forged = schemas::ops::Event {
        ts: 1,
        kind: "campaign.completed".into(),
        campaign: None,
        message: "forged".into(),
        data: serde_json::Value::Null,
    };
    dev.client
        .publish(
            Topics::default().build(&Topic::OpsEvents),
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&forged).unwrap(),
        )
        .await
        .unwrap();
    dev.hello("ep000001", 1, &[]).await;
    let e = within("the bridge's event", events.next()).await.unwrap();
    assert_eq!(e.kind, "device.registered", "the forged one was dropped");
}

on_both_brokers!(
    replies_are_signed_and_a_forged_one_fails_the_pinned_client,
    a_command_for_another_bridge_is_refused,
    events_not_signed_by_the_bridge_are_never_shown,
);
