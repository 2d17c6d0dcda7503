//! Core's work over the whole fleet in slices (issue 19), end to end with
//! a real broker, bridge and reference agents, and a slice of 2 devices,
//! so that every group put, pre-flight and wave of these few devices
//! runs over several slices with other messages between them: the
//! results are those of the work done at once, commands sent together
//! still run in order, and a forged command costs no scan.

mod blocks_common;
mod campaign_common;
mod common;

use campaign_common::*;
use schemas::msg::{Kind, StatusState};
use schemas::ops::{Command, CommandBody, CommandEnvelope};
use schemas::{GroupName, RequestId};
use serde_json::json;

/// `command`, signed by `key` (not an operator's key).
fn forge(id: &RequestId, command: Command, key: &schemas::keys::SigningKey) -> Vec<u8> {
    let body = CommandBody {
        request_id: id.clone(),
        issued_at: bridge::unix_now(),
        command,
        audience: None,
    };
    CommandEnvelope::sign(&body, key).to_bytes()
}

async fn sliced() -> common::Stack {
    stack_with(|c| c.bridge.core_slice = 2).await
}

/// A sliced stack with nine registered agents of customer acme.
async fn nine_of_acme() -> (common::Stack, bridge::client::OpsClient, Devices) {
    let stack = sliced().await;
    let ops = stack.ops().await;
    let mut devices = Devices::default();
    devices.spawn_each(&stack, "acme", 1..=9);
    registered(&stack, 9).await;
    (stack, ops, devices)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_over_slices_of_two_devices_runs_as_one_done_at_once() {
    let stack = sliced().await;
    let ops = stack.ops().await;
    let events = EventLog::start(&ops).await;
    artifact(
        &stack,
        Release::new("fw-2.0.0-esp32", Kind::Firmware, "2.0.0"),
    )
    .await;
    let mut devices = Devices::default();
    let canary = devices.spawn_each(&stack, "canary", 1..=2);
    let acme = devices.spawn_each(&stack, "acme", 1..=7);
    registered(&stack, 9).await;
    // The put's selector scan takes five slices; its reply counts them all.
    let put: serde_json::Value = ops
        .call_ok(Command::GroupPut {
            name: GroupName::new("acme").unwrap(),
            selector: Some("customer=acme".into()),
            members: None,
        })
        .await
        .expect("group put");
    assert_eq!(put["group"]["devices"], 7, "{put}");
    assert_eq!(put["membership_changed"], 7, "{put}");
    group(&ops, "canary", "canary").await;

    // Wave 1 all of canary, then half of acme, then all of it (cohorts
    // add up: the last wave holds canary too).
    let created = create(
        &ops,
        json!({
            "id": "fw-2", "kind": "firmware", "release": ["fw-2.0.0-esp32"],
            "waves": [{"cohorts": {"canary": 10000}},
                      {"cohorts": {"acme": 5000}},
                      {"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 30}
        }),
    )
    .await;
    assert_eq!(created.preflight.targeted, 9);
    assert_eq!(
        created.preflight.groups[&GroupName::new("acme").unwrap()].devices,
        7
    );
    let started = call(&ops, Command::CampaignStart { id: cid("fw-2") }).await;
    assert_eq!(
        started.summary.counts.as_ref().map(|c| c.members),
        Some(2),
        "{started:?}"
    );
    wait_state(&ops, "fw-2", "completed", LONG).await;
    for d in acme.iter().chain(&canary) {
        assert_eq!(state(&stack, d, "fw-2"), Some(StatusState::Success), "{d}");
    }
    let s = status(&ops, "fw-2").await;
    assert_eq!(
        s.summary.counts.as_ref().map(|c| (c.members, c.success)),
        Some((9, 9))
    );
    let kinds = events.kinds("fw-2");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "campaign.wave_started")
            .count(),
        3,
        "{kinds:?}"
    );

    // An emergency to every device: its pre-flight and its one wave's
    // members both in slices, before the one reply.
    artifact(&stack, Release::config("cfg-1.0.1", "1.0.1")).await;
    let e = call(
        &ops,
        Command::Emergency {
            id: cid("fix-1"),
            release: vec!["cfg-1.0.1".parse().unwrap()],
            groups: vec![],
            all: true,
        },
    )
    .await;
    assert_eq!(e.preflight.targeted, 9);
    assert_eq!(
        e.summary.counts.as_ref().map(|c| c.members),
        Some(9),
        "{e:?}"
    );
    wait_state(&ops, "fix-1", "completed", LONG).await;
    for d in acme.iter().chain(&canary) {
        assert_eq!(state(&stack, d, "fix-1"), Some(StatusState::Success), "{d}");
    }
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_together_run_in_order_and_a_forged_one_is_refused_at_once() {
    let (_stack, ops, mut devices) = nine_of_acme().await;
    // A put that waits for its scan, a forged put, and a list, sent at
    // once: the forgery is refused, the list sees the put.
    let forged = RequestId::new("req-forged-00001").unwrap();
    let env = forge(
        &forged,
        Command::GroupPut {
            name: GroupName::new("evil").unwrap(),
            selector: Some("customer".into()),
            members: None,
        },
        &schemas::keys::generate(),
    );
    let put = ops.call(Command::GroupPut {
        name: GroupName::new("acme").unwrap(),
        selector: Some("customer=acme".into()),
        members: None,
    });
    let forged_reply = ops.send(env, &forged);
    let list = ops.call(Command::GroupList);
    let (put, forged_reply, list) = tokio::join!(put, forged_reply, list);
    assert!(put.expect("put").ok);
    let forged_reply = forged_reply.expect("a refusal");
    assert!(!forged_reply.ok, "{forged_reply:?}");
    let list = list.expect("list");
    let text = list.result.expect("the groups").to_string();
    assert!(
        text.contains("\"acme\""),
        "the list ran before the put: {text}"
    );
    assert!(!text.contains("evil"), "{text}");
    devices.stop_all().await;
}

/// A flood of forged commands around one that waits for its scan (those
/// that come while it waits are held, in order): every forgery is
/// refused and counted, the real command runs, and the bridge still
/// serves. (The cap of 256 held is not reached here: nine devices take
/// only a few slices.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_commands_while_one_waits_is_refused_and_nothing_is_lost() {
    let (stack, ops, mut devices) = nine_of_acme().await;
    let forger = schemas::keys::generate();
    let forged: Vec<(RequestId, Vec<u8>)> = (0..100)
        .map(|i| {
            let id = RequestId::new(format!("req-flood-{i:06}")).unwrap();
            let env = forge(&id, Command::GroupList, &forger);
            (id, env)
        })
        .collect();
    let refused0 = stack.metrics().commands_refused;
    let put = ops.call(Command::GroupPut {
        name: GroupName::new("acme").unwrap(),
        selector: Some("customer=acme".into()),
        members: None,
    });
    let flood = futures::future::join_all(forged.iter().map(|(id, env)| ops.send(env.clone(), id)));
    let (put, replies) = tokio::join!(put, flood);
    assert!(put.expect("put").ok);
    assert!(replies.iter().all(|r| r.as_ref().is_ok_and(|r| !r.ok)));
    assert_eq!(stack.metrics().commands_refused - refused0, 100);
    let groups: serde_json::Value = ops.call_ok(Command::GroupList).await.expect("list");
    assert!(groups.to_string().contains("\"acme\""), "{groups}");
    devices.stop_all().await;
}
