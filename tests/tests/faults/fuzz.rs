//! Seeded bad input on every topic the bridge reads (hello, presence,
//! status, request, ops/commands) and on bad topics: random bytes, valid
//! messages of the wrong kind, mutated messages. Afterwards the bridge
//! still answers commands, registers a good device and stores its Status,
//! and its metrics counted the drops.

use std::time::Duration;

use bridge::DropReason;
use harness::faults::{self, payloads::Fuzzer};
use harness::{Stack, StackOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::msg::{Hello, Status, StatusAck, StatusState, WireMessage};
use schemas::ops::Command;
use schemas::topic::{Topic, Topics};
use schemas::{ComponentName, DeviceId, Epoch};

/// A raw MQTT client whose event loop runs in its own task; incoming
/// publishes go to `rx`.
fn client(
    port: u16,
    id: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::Receiver<rumqttc::Publish>,
    tokio::task::JoinHandle<()>,
) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    let (c, mut el) = AsyncClient::new(o, 64);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.try_send(p);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (c, rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_on_every_topic_are_dropped_and_counted() {
    let _one = faults::serial().await;
    let panics = faults::panics();
    let cases = faults::sized(3_000, 100_000);
    let mut stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");
    let metrics = stack.bridge().expect("running").metrics().clone();
    let before = metrics.snapshot();

    let (fuzz, _rx, fuzz_task) = client(stack.port, "fuzzer");
    let mut fuzzer = Fuzzer::new(faults::seed(), 50, &stack.keys.operator);
    let mut sent = 0u64;
    for _ in 0..cases {
        let (_, topic, payload) = fuzzer.next_case();
        // Topics with wildcards are refused by the client itself.
        if fuzz
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .is_ok()
        {
            sent += 1;
        }
    }
    // Every bad payload is counted: wait for the counters to reach most
    // of what was sent (some mutations stay valid, and are handled).
    let counted = faults::poll("drops counted", Duration::from_secs(60), || {
        let s = metrics.snapshot();
        let n = s.dropped_total() - before.dropped_total();
        async move { (n >= sent / 2).then_some(s) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", metrics.snapshot()));
    for r in [
        DropReason::Malformed,
        DropReason::BadTopic,
        DropReason::CommandMalformed,
    ] {
        assert!(counted.dropped(r) > before.dropped(r), "{r:?}: {counted:?}");
    }

    // The bridge still answers commands...
    stack
        .ops()
        .call_ok::<serde_json::Value>(Command::GroupList)
        .await
        .expect("the bridge answers after the fuzz");
    // ...registers a good device, and stores and acknowledges its Status.
    let topics = Topics::default();
    let id = DeviceId::new("good-00001").expect("an id");
    let epoch = Epoch::new("ep-good").expect("an epoch");
    let (dev, mut acks, dev_task) = client(stack.port, id.as_str());
    dev.subscribe(topics.build(&Topic::Ack(id.clone())), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let versions: std::collections::BTreeMap<_, _> = [(
        ComponentName::new("main").expect("a name"),
        "1.0.0".to_string(),
    )]
    .into();
    let hello = Hello {
        proto: 1,
        arch: "esp32".into(),
        versions: versions.clone(),
        labels: Default::default(),
        boot_id: "boot-good".into(),
        epoch: epoch.clone(),
        outbox: 1,
        features: Vec::new(),
    };
    dev.publish(
        topics.build(&Topic::Hello(id.clone())),
        QoS::AtLeastOnce,
        false,
        hello.encode(),
    )
    .await
    .expect("hello");
    faults::poll(
        "the good device registered",
        Duration::from_secs(20),
        || async {
            let all = stack.ops().all_devices(None).await.ok()?;
            all.iter().any(|d| d.record.id == id).then_some(())
        },
    )
    .await
    .unwrap();
    let status = Status {
        seq: 1,
        campaign: None,
        artifact: None,
        state: StatusState::Downloading,
        progress: Some(1),
        error: None,
        detail: None,
        versions,
    }
    .encode();
    dev.publish(
        topics.build(&Topic::Status(id.clone())),
        QoS::AtLeastOnce,
        false,
        status.clone(),
    )
    .await
    .expect("status");
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(p) = acks.recv().await {
            if StatusAck::decode(&p.payload).is_ok_and(|a| a.seq == 1) {
                return;
            }
        }
    })
    .await
    .expect("the good Status is acknowledged");
    assert_eq!(
        faults::panics(),
        panics,
        "a thread panicked during the fuzz"
    );
    let last = metrics.snapshot();
    println!(
        "fuzz: {sent} payloads, {} dropped ({:?})",
        last.dropped_total() - before.dropped_total(),
        last.dropped
    );
    dev_task.abort();
    fuzz_task.abort();
    stack.stop_bridge().await.expect("the bridge stops");
    let store = bridge::store::Store::open(stack.bridge_dir()).expect("the store opens");
    assert_eq!(
        store.status.get(&id, &epoch, 1).expect("read"),
        Some(status),
        "the good Status is stored"
    );
}
