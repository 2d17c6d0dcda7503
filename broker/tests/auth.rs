//! Who may connect: `[broker.users]`, the credential check, client ids, and
//! the connection guard that keeps rumqttd below its router limit.

mod common;

use std::sync::Arc;
use std::time::Duration;

use broker::{BrokerError, EmbeddedConfig};
use common::*;
use rumqttc::QoS;
use tokio::time::timeout;

const BRIDGE: (&str, &str) = ("bridge", "bridge-pw");

#[tokio::test]
async fn a_wrong_password_gets_no_connack() {
    let broker = start(config_with_users(&[BRIDGE])).await;
    for _ in 0..2 {
        // Twice with the same client id: a refused retry must not hurt the
        // listener (it does when rumqttd's router refuses; see auth.rs).
        let refused = try_connect(&broker, "bridge-1", Some(("bridge", "wrong"))).await;
        assert!(refused.is_err(), "wrong password accepted");
    }
    let refused = try_connect(&broker, "bridge-1", None).await;
    assert!(refused.is_err(), "missing login accepted");
    let refused = try_connect(&broker, "bridge-1", Some(("nobody", "bridge-pw"))).await;
    assert!(refused.is_err(), "unknown user accepted");

    let (client, mut events) = connect(&broker, "bridge-1", Some(BRIDGE)).await;
    client
        .subscribe("ota/test/x", QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_suback(&mut events).await;
}

#[tokio::test]
async fn the_credential_check_admits_registered_devices() {
    let broker = start(config_with_users(&[BRIDGE])).await;
    assert!(
        try_connect(&broker, "dev-1", Some(("dev-1", "dev-1-token")))
            .await
            .is_err()
    );
    broker
        .set_credential_check(Arc::new(|client_id, user, pass| {
            client_id == user && pass == format!("{user}-token")
        }))
        .unwrap();
    connect(&broker, "dev-1", Some(("dev-1", "dev-1-token"))).await;
    assert!(
        try_connect(&broker, "dev-2", Some(("dev-1", "dev-1-token")))
            .await
            .is_err()
    );
    // The static users still work.
    connect(&broker, "bridge-1", Some(BRIDGE)).await;
}

#[tokio::test]
async fn an_anonymous_broker_takes_anyone_and_no_credential_check() {
    let broker = start(config()).await;
    connect(&broker, "anyone", None).await;
    connect(&broker, "anyone-else", Some(("who", "ever"))).await;
    let err = broker
        .set_credential_check(Arc::new(|_, _, _| true))
        .unwrap_err();
    assert!(matches!(err, BrokerError::Anonymous), "{err:?}");
    assert!(!broker.connection_stats().guarded);
}

#[tokio::test]
async fn client_ids_rumqttd_cannot_take_are_refused_and_the_listener_lives() {
    let broker = start(config_with_users(&[BRIDGE])).await;
    for _ in 0..2 {
        assert!(try_connect(&broker, "bad+id", Some(BRIDGE)).await.is_err());
    }
    connect(&broker, "good-id", Some(BRIDGE)).await;
}

/// The guard refuses past `max_connections`, the listener survives the
/// refused client's retries, and a slot freed by a disconnect is reused once
/// the router has reported it.
#[tokio::test]
async fn the_connection_guard_refuses_past_the_limit_and_recovers() {
    let cfg = EmbeddedConfig {
        max_connections: 2,
        ..config_with_users(&[BRIDGE])
    };
    let broker = start(cfg).await;
    let stats = broker.connection_stats();
    assert!(stats.guarded);
    assert_eq!(stats.limit, 2);

    let a = connect(&broker, "a", Some(BRIDGE)).await;
    let b = connect(&broker, "b", Some(BRIDGE)).await;
    for _ in 0..3 {
        assert!(
            try_connect(&broker, "c", Some(BRIDGE)).await.is_err(),
            "third connection admitted with max_connections = 2"
        );
    }

    // Keep `a` alive; close `b` and wait for the router's count to show it.
    let (_a_client, mut a_events) = a;
    let a_task = tokio::spawn(async move { while a_events.poll().await.is_ok() {} });
    let (b_client, mut b_events) = b;
    b_client.disconnect().await.unwrap();
    let _ = timeout(WAIT, async { while b_events.poll().await.is_ok() {} }).await;

    timeout(Duration::from_secs(15), async {
        loop {
            let s = broker.connection_stats();
            if s.estimate < s.limit {
                assert_eq!(s.live, Some(1), "router reports a and not b: {s:?}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "guard never saw the disconnect: {:?}",
            broker.connection_stats()
        )
    });

    connect(&broker, "c", Some(BRIDGE)).await;
    assert!(try_connect(&broker, "d", Some(BRIDGE)).await.is_err());
    assert!(broker.is_running());
    a_task.abort();
}
