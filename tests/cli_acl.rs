//! PROTOCOL.md E1 against the real `ota serve` (issue 12): its embedded
//! broker with accounts, devices provisioned with `ota devices provision`,
//! a campaign made with `ota campaign create | start`. An attacker holds
//! one provisioned device's login (`mallory`) and, while the campaign runs
//! to the real devices, subscribes to `#`, the operators' topics, another
//! device's topics and a group it is not in (0x80 each), reports as
//! another device, and retains garbage on the group's campaign topic and
//! `P/emergency` (acked and dropped). The campaign completes, the retained
//! announcement is the bridge's, and the bridge's `counters` line shows
//! every refusal counted, no more.

mod cli_support;
mod serve_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use bridge::campaign::view::CampaignStatus;
use cli_support::ota_ok as ota;
use device_sim::agent::SharedImages;
use harness::attacker;
use harness::raw::RawClient;
use schemas::ops::Command as Op;
use schemas::provisioning::Provisioning;
use schemas::topic::Topics;
use schemas::{CampaignId, DeviceId, GroupName};
use serve_support::*;

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    secured_config(
        dir,
        port,
        "metrics_interval_secs = 1\n",
        "[blocks]\nmerge_window_ms = 20\n",
    )
}

/// Waits for a `counters` line whose refusals are exactly `want`; fails
/// at once if one shows more.
fn wait_refusals(log: &std::sync::mpsc::Receiver<String>, want: &BTreeMap<&str, u64>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no counters line with {want:?} within {WAIT:?}"));
        if !line.contains(" counters ") {
            continue;
        }
        let Some(at) = line.find("identity_refused=\"") else {
            continue;
        };
        let rest = &line[at + "identity_refused=\"".len()..];
        let list = &rest[..rest.find('"').unwrap_or(rest.len())];
        let got: BTreeMap<&str, u64> = list
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.parse().expect("a count")))
            .collect();
        if &got == want {
            return;
        }
        for (k, n) in &got {
            assert!(
                *n <= want.get(k).copied().unwrap_or(0),
                "more refusals than the attacker's: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_with_one_devices_login_changes_nothing_while_a_campaign_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let operator = operator_key(d);
    let release = release_key(d, 12);
    let port = free_port();
    let cfg = config(d, port);
    let (serve, log) = Serve::start_logged(&cfg, "warn,bridge=info,rumqttd=off");
    let client = wait_ready_as(port, &operator, Some(ALICE_LOGIN)).await;
    let campaign = CampaignId::new("fw-6").unwrap();

    push_firmware(&client, &release, "fw-6-esp32", "6.0.0", false).await;
    ota(d, &["group", "put", "acme", "--selector", "customer=acme"]).await;
    ota(d, &["group", "put", "evil", "--selector", "customer=evil"]).await;
    ota(
        d,
        &[
            "devices",
            "provision",
            "acme-1",
            "acme-2",
            "acme-3",
            "mallory",
            "--out",
            "factory",
        ],
    )
    .await;
    let login = |id: &str| {
        let bytes = std::fs::read(d.join("factory").join(format!("{id}.json"))).unwrap();
        let p = Provisioning::from_json(&bytes).unwrap();
        (p.username, p.password)
    };

    let images = SharedImages::new();
    let agents: Vec<_> = ["acme-1", "acme-2"]
        .into_iter()
        .map(|id| {
            agent(
                id,
                port,
                &release,
                images.clone(),
                ("customer", "acme"),
                Some(login(id)),
            )
        })
        .collect();
    let me = DeviceId::new("mallory").unwrap();
    let scene = attacker::Scene {
        port,
        topics: Topics::default(),
        me: me.clone(),
        victim: DeviceId::new("acme-1").unwrap(),
        group: GroupName::new("acme").unwrap(),
        campaign: campaign.clone(),
        member: (
            DeviceId::new("acme-3").unwrap(),
            login("acme-3").1,
            "acme".into(),
        ),
    };
    let mut mallory = RawClient::login(port, me.as_str(), &login("mallory").1)
        .await
        .expect("mallory logs in with its own secret");
    mallory.hello(&scene.topics, &me, "evil").await.unwrap();
    wait_registered(&client, 3).await;

    // (a) Every subscription outside E1 gets 0x80.
    let forbidden = scene.subscribe_everywhere(&mut mallory).await.unwrap();

    // (d) The real campaign, and (b) reports under acme-1's name during it.
    cli_support::create_to_acme(d, "fw-6", "fw-6-esp32").await;
    // Subscribed before the start: the completion cannot be missed.
    let mut events = client.events().await.expect("the event stream");
    ota(d, &["campaign", "start", "fw-6"]).await;
    scene.forge_reports(&mallory).await.unwrap();
    wait_event(
        &mut events,
        &campaign,
        bridge::campaign::events::kind::COMPLETED,
    )
    .await;
    let done: CampaignStatus = client
        .call_ok(Op::CampaignStatus {
            id: campaign.clone(),
        })
        .await
        .expect("campaign status");
    assert_eq!(done.summary.state, "completed");
    let c = done.current.expect("a tally").counts;
    assert_eq!((c.members, c.success, c.failure), (2, 2, 0));

    // (b) After it, retained garbage on what devices obey: acked, dropped.
    scene
        .forge_announcements_and_check(&mut mallory, 5)
        .await
        .unwrap();

    // Every refusal counted, and only the attacker's: its subscriptions,
    // and four publishes (Status, ack, campaign, emergency).
    let want = BTreeMap::from([
        ("publish_not_allowed", 4),
        ("subscribe_not_allowed", forbidden as u64),
    ]);
    tokio::task::spawn_blocking(move || wait_refusals(&log, &want))
        .await
        .expect("the log reader");

    client.close().await;
    for a in agents {
        a.abort();
    }
    serve.terminate().await;
}
