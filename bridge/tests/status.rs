//! Durable status end to end (PROTOCOL.md, "What the bridge promises"):
//! a stored Status is acknowledged with a retained StatusAck; duplicates
//! are stored once; a conflict is kept aside and still covered; a gap
//! holds the ack until the re-send fills it; a new epoch restarts the
//! counter at its outbox. Each test runs against rumqttd and Mosquitto.

mod common;

use common::*;
use schemas::msg::{StatusState, WireMessage};
use schemas::{CampaignId, DeviceId, Epoch};

fn d(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

async fn a_status_is_stored_then_acknowledged(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut dev = stack.device("dev-s").await;
    dev.hello("ep000001", 1, &[]).await;
    // Before any report the ack is outbox - 1.
    dev.wait_ack(Some(0)).await;
    let bytes = dev.status(1, StatusState::Accepted).await;
    dev.wait_ack(Some(1)).await;
    let stored = stack
        .bridge()
        .store()
        .status
        .get(&d("dev-s"), &Epoch::new("ep000001").unwrap(), 1)
        .unwrap();
    assert_eq!(stored, Some(bytes), "the exact bytes are stored");
    let cur = stack
        .bridge()
        .store()
        .status
        .current(&d("dev-s"), &CampaignId::new("camp-1").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(cur.state, StatusState::Accepted);
    assert_eq!(stack.metrics().statuses_stored, 1);
}

async fn duplicates_conflicts_and_gaps(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut dev = stack.device("dev-x").await;
    dev.hello("ep000001", 1, &[]).await;
    dev.status(1, StatusState::Accepted).await;
    dev.wait_ack(Some(1)).await;

    // The same report again: stored once, ack unchanged.
    dev.status(1, StatusState::Accepted).await;
    until("the duplicate to be counted", || {
        stack.metrics().statuses_duplicate == 1
    })
    .await;
    assert_eq!(stack.metrics().statuses_stored, 1);

    // Other content under a stored seq: kept aside, still covered.
    dev.status(1, StatusState::Downloading).await;
    until("the conflict to be counted", || {
        stack.metrics().statuses_conflict == 1
    })
    .await;
    let conflicts = stack
        .bridge()
        .store()
        .status
        .conflicts_of(&d("dev-x"))
        .unwrap();
    assert_eq!(conflicts.len(), 1);

    // A gap: 3 is stored at once but not acknowledged until 2 arrives.
    dev.status(3, StatusState::Downloading).await;
    until("seq 3 to be stored", || {
        stack.metrics().statuses_stored == 2
    })
    .await;
    assert_eq!(*dev.ack.borrow(), Some(1));
    dev.status(2, StatusState::Downloading).await;
    dev.wait_ack(Some(3)).await;
}

async fn a_new_epoch_restarts_the_counter(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut dev = stack.device("dev-e").await;
    dev.hello("ep000001", 100, &[]).await;
    for seq in 100..=104 {
        dev.status(seq, StatusState::Downloading).await;
    }
    dev.wait_ack(Some(104)).await;

    // Factory reset: a new epoch, counting from 1 again. The bridge
    // republishes the ack at once (outbox - 1), not leaving 104 standing.
    dev.hello("ep000002", 1, &[]).await;
    dev.wait_ack(Some(0)).await;
    // Seq 1 is new in this epoch, whatever the old one held.
    dev.status(1, StatusState::Accepted).await;
    dev.wait_ack(Some(1)).await;
    assert_eq!(stack.metrics().statuses_stored, 6);
    assert_eq!(stack.metrics().statuses_conflict, 0);

    // The same epoch again with a lower outbox keeps what is stored.
    dev.status(2, StatusState::Downloading).await;
    dev.wait_ack(Some(2)).await;
    dev.hello("ep000002", 2, &[]).await;
    dev.wait_ack(Some(2)).await;
}

async fn outbox_zero_withdraws_the_old_ack(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut dev = stack.device("dev-z").await;
    dev.hello("ep000001", 5, &[]).await;
    dev.status(5, StatusState::Accepted).await;
    dev.wait_ack(Some(5)).await;
    dev.hello("ep000002", 0, &[]).await;
    dev.wait_ack(None).await;
    dev.status(0, StatusState::Accepted).await;
    dev.wait_ack(Some(0)).await;
}

/// The ack counter is in the store: after a restart the bridge neither
/// forgets a stored report nor acknowledges an unstored one.
async fn the_counter_survives_a_restart_with_a_gap(kind: BrokerKind) {
    let mut stack = Stack::start(kind).await;
    let mut dev = stack.device("dev-g").await;
    dev.hello("ep000001", 1, &[]).await;
    dev.status(1, StatusState::Accepted).await;
    dev.status(3, StatusState::Downloading).await;
    until("seq 3 to be stored", || {
        stack.metrics().statuses_stored == 2
    })
    .await;
    dev.wait_ack(Some(1)).await;
    stack.restart_bridge().await;
    dev.status(2, StatusState::Downloading).await;
    dev.wait_ack(Some(3)).await;
}

/// Many reports from many devices at once: every one acknowledged.
async fn many_devices_at_once(kind: BrokerKind) {
    let stack = Stack::start(kind).await;
    let mut devs = Vec::new();
    for i in 0..20 {
        let dev = stack.device(&format!("dev-m{i:02}")).await;
        dev.hello("ep000001", 1, &[]).await;
        devs.push(dev);
    }
    // The bridge knows every device (its first ack, outbox - 1) before
    // the reports: a broker keeps no order between the Hello topic and
    // the Status topic, and a report before its device's Hello is
    // dropped (this test's devices do not re-send, as agents do).
    for dev in &mut devs {
        dev.wait_ack(Some(0)).await;
    }
    for seq in 1..=25 {
        for dev in &devs {
            let b = common::status(seq, StatusState::Downloading).encode();
            dev.publish(&schemas::topic::Topic::Status(dev.id.clone()), b)
                .await;
        }
    }
    for dev in &mut devs {
        dev.wait_ack(Some(25)).await;
    }
    assert_eq!(stack.metrics().statuses_stored, 500);
    assert!(
        stack.metrics().commits < 500,
        "group commit covers several reports per flush"
    );
}

on_both_brokers!(
    a_status_is_stored_then_acknowledged,
    duplicates_conflicts_and_gaps,
    a_new_epoch_restarts_the_counter,
    outbox_zero_withdraws_the_old_ack,
    the_counter_survives_a_restart_with_a_gap,
    many_devices_at_once,
);
