//! A provisioning's reply waits until an external broker's files hold the
//! new devices (so that they can log in once `ota devices provision`
//! returns), and core goes on meanwhile: at 100,000 devices a rewrite of
//! Mosquitto's files takes tens of seconds (docs/scaling.md), and core
//! waiting for it stalled every Hello, Status and command behind it.
//!
//! The bridge's identity is told that an external copy follows it which
//! does not catch up until the test says so: a Mosquitto still reparsing
//! its files.

mod common;

use std::collections::BTreeMap;

use bridge::client::provision::{self, Mode};
use common::{until, within, BrokerKind, Stack};
use schemas::ops::Command;
use schemas::provisioning::generate_password;
use schemas::DeviceId;

fn batch(id: &str) -> Vec<(DeviceId, BTreeMap<String, String>, String)> {
    let id = DeviceId::new(id).expect("a device id");
    vec![(id, BTreeMap::new(), generate_password())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioning_waits_for_the_external_files_while_core_answers_others() {
    let stack = Stack::start(BrokerKind::Rumqttd).await;
    let identity = stack.bridge().identity().clone();
    let _external = identity.follow_changes();
    let (slow, quick) = (stack.ops().await, stack.ops().await);

    let before = identity.change();
    let settled =
        tokio::spawn(
            async move { provision::send_batch(&slow, &batch("d-1"), Mode::New, None).await },
        );
    until("the bridge to take d-1", || identity.change() > before).await;

    // Core answers another operator meanwhile, and a part of a larger
    // provisioning (more parts follow) is answered without the files.
    let _: serde_json::Value = within("a group list", quick.call_ok(Command::GroupList))
        .await
        .expect("the group list");
    within(
        "a part of many",
        provision::send_part(&quick, &batch("d-2"), &[], Mode::New, None, true),
    )
    .await
    .expect("a part of many is taken");
    assert!(
        !settled.is_finished(),
        "the settled provisioning was answered before the broker's files held d-1"
    );

    // Its reply goes once the files hold it.
    identity.mark_applied(identity.change());
    within("the settled reply", settled)
        .await
        .expect("its task")
        .expect("d-1 is provisioned");
}
