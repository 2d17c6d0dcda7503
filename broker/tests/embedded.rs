//! The embedded broker carries OTA-sized messages, keeps retained messages
//! for late subscribers, and refuses to start on a taken port.

mod common;

use std::net::TcpListener;

use broker::{BrokerError, EmbeddedConfig};
use common::*;
use rumqttc::QoS;

/// A 64 KiB block plus its 2 KiB overhead.
const BLOCK_MESSAGE: usize = 64 * 1024 + 2 * 1024;

#[tokio::test]
async fn a_block_sized_message_makes_the_round_trip() {
    let broker = start(config()).await;
    let (sub, mut sub_events) = connect(&broker, "sub", None).await;
    sub.subscribe("ota/test/blocks/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_suback(&mut sub_events).await;

    let (publisher, mut pub_events) = connect(&broker, "pub", None).await;
    let payload: Vec<u8> = (0..BLOCK_MESSAGE).map(|i| (i % 251) as u8).collect();
    publisher
        .publish(
            "ota/test/blocks/7",
            QoS::AtLeastOnce,
            false,
            payload.clone(),
        )
        .await
        .unwrap();
    // Drive the publisher's connection until the broker has taken it.
    let publisher_task = tokio::spawn(async move {
        wait_for(&mut pub_events, "PUBACK", |e| {
            matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))).then_some(())
        })
        .await;
        pub_events
    });

    let got = wait_publish(&mut sub_events).await;
    assert_eq!(&got.topic, "ota/test/blocks/7");
    assert_eq!(got.payload.len(), BLOCK_MESSAGE);
    assert!(got.payload[..] == payload[..], "payload changed on the way");
    publisher_task.await.unwrap();
}

#[tokio::test]
async fn a_packet_over_max_payload_size_disconnects_its_sender() {
    let cfg = EmbeddedConfig {
        max_payload_size: broker::MIN_MAX_PAYLOAD_SIZE,
        ..config()
    };
    let limit = cfg.max_payload_size;
    let broker = start(cfg).await;
    let (publisher, mut events) = connect(&broker, "big", None).await;
    publisher
        .publish(
            "ota/test/big",
            QoS::AtLeastOnce,
            false,
            vec![0u8; limit + 1],
        )
        .await
        .unwrap();
    wait_disconnect(&mut events, "sender of an oversized packet").await;
    // The broker itself is fine.
    connect(&broker, "after-big", None).await;
}

#[tokio::test]
async fn a_retained_message_reaches_a_late_subscriber() {
    let broker = start(config()).await;
    let (publisher, mut pub_events) = connect(&broker, "retainer", None).await;
    publisher
        .publish(
            "ota/test/groups/dev-1",
            QoS::AtLeastOnce,
            true,
            b"g1,g2".to_vec(),
        )
        .await
        .unwrap();
    wait_for(&mut pub_events, "PUBACK", |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))).then_some(())
    })
    .await;

    // Subscribes only after the publish was acknowledged.
    let (late, mut late_events) = connect(&broker, "late", None).await;
    late.subscribe("ota/test/groups/dev-1", QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = wait_publish(&mut late_events).await;
    assert_eq!(&got.topic, "ota/test/groups/dev-1");
    assert_eq!(&got.payload[..], b"g1,g2");
    assert!(
        got.retain,
        "a retained message arrives with the retain flag"
    );
}

/// Why `broker::start` refuses `cfg` (off the runtime: it blocks);
/// `started` is the failure if it does start.
async fn start_refused(cfg: EmbeddedConfig, started: &str) -> BrokerError {
    tokio::task::spawn_blocking(move || broker::start(&cfg))
        .await
        .unwrap()
        .err()
        .expect(started)
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    init_logs();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = EmbeddedConfig {
        listen: addr,
        ..EmbeddedConfig::default()
    };
    let err = start_refused(cfg, "started on a taken port").await;
    assert!(matches!(err, BrokerError::AddrInUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("address {addr} is in use: stop the other broker or set [broker] listen")
    );
}

#[tokio::test]
async fn a_second_broker_on_the_same_port_is_refused() {
    let first = start(config()).await;
    let cfg = EmbeddedConfig {
        listen: first.addr(),
        ..EmbeddedConfig::default()
    };
    let err = start_refused(cfg, "second broker started").await;
    assert!(matches!(err, BrokerError::AddrInUse { .. }), "{err:?}");
    assert!(first.is_running());
}

#[tokio::test]
async fn an_invalid_config_is_refused_before_binding() {
    let cfg = EmbeddedConfig {
        max_payload_size: 20 * 1024,
        ..config()
    };
    let err = broker::start(&cfg)
        .err()
        .expect("started with a tiny payload limit");
    assert!(
        err.to_string().contains("[broker] max_payload_size"),
        "{err}"
    );
}

#[tokio::test]
async fn unreadable_tls_files_are_refused_at_start() {
    let cfg = EmbeddedConfig {
        tls: Some(broker::TlsListener {
            listen: common::free_addr(),
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
        }),
        ..config()
    };
    let err = broker::start(&cfg)
        .err()
        .expect("started without TLS files");
    let text = err.to_string();
    assert!(
        text.starts_with("[broker.tls] cannot read cert_file /nonexistent/cert.pem"),
        "{text}"
    );
}
