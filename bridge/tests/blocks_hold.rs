//! Pause and abort reach the block server: once a campaign pauses (or
//! aborts), no block of its artifact is published later than one merge
//! window plus one batch, however hard a device keeps asking; a resume
//! serves it again. The asking device is raw MQTT, not the reference agent
//! (which stops asking by itself when it reads the pause): the bridge must
//! hold the artifact on its own.

mod blocks_common;
mod campaign_common;
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::blocks::{BlocksConfig, Refusal};
use campaign_common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::bitmap::{requests_for_missing, BlockSet};
use schemas::msg::{BlockRequest, Kind, WireMessage};
use schemas::ops::Command;
use schemas::topic::{Topic, Topics};
use schemas::{ArtifactId, DeviceId};
use serde_json::json;

const WINDOW_MS: u64 = 50;
/// 240 blocks of 1 KiB at 40 KiB/s: a download takes about 6 s.
const SIZE: usize = 240 * 1024;
const EGRESS: u64 = 40 * 1024;

/// A raw device that asks for every block of `artifact` every 150 ms and
/// notes when each block reaches it (on either block topic).
async fn asker(port: u16, artifact: &str) -> Arc<Mutex<Vec<Instant>>> {
    let id = DeviceId::new("asker-1").unwrap();
    let topics = Topics::default();
    let a = ArtifactId::new(artifact).unwrap();
    let mut o = MqttOptions::new(id.as_str(), "127.0.0.1", port);
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(o, 64);
    for t in [
        Topic::ArtifactBlocks(a.clone()),
        Topic::DeviceBlocks(id.clone()),
    ] {
        client
            .subscribe(topics.build(&t), QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = ev {
                s.lock().unwrap().push(Instant::now());
            }
        }
    });
    let request = topics.build(&Topic::Request(id));
    tokio::spawn(async move {
        let blocks = (SIZE / 1024) as u32;
        let mut tick = tokio::time::interval(Duration::from_millis(150));
        loop {
            tick.tick().await;
            for (offset, bitmap) in requests_for_missing(&BlockSet::new(blocks), blocks) {
                let req = BlockRequest {
                    artifact: a.clone(),
                    offset,
                    bitmap,
                };
                if client
                    .publish(&request, QoS::AtMostOnce, false, req.encode())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    seen
}

fn after(seen: &Mutex<Vec<Instant>>, t: Instant) -> usize {
    seen.lock().unwrap().iter().filter(|at| **at > t).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_block_of_a_paused_or_aborted_campaign_goes_out_after_one_window() {
    let stack = blocks_common::stack(BlocksConfig {
        merge_window_ms: WINDOW_MS,
        egress_bytes_per_sec: EGRESS,
        ..BlocksConfig::default()
    })
    .await;
    let ops = stack.ops().await;
    artifact(
        &stack,
        Release::new("app-9.0.0", Kind::App, "9.0.0").sized(SIZE),
    )
    .await;
    group(&ops, "acme", "acme").await;
    // A reference device that keeps putting the campaign off: the wave
    // stays running, so it can be paused.
    let mut devices = Devices::default();
    devices.spawn(&stack, DeviceOpts::new("acme-1", "acme").always_deferring());
    registered(&stack, 1).await;
    launch(
        &ops,
        json!({
            "id": "app-9", "kind": "app", "release": ["app-9.0.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 300}
        }),
    )
    .await;
    let seen = asker(stack.port(), "app-9.0.0").await;
    wait("blocks flowing", LONG, || seen.lock().unwrap().len() >= 5).await;

    // One merge window, one batch (a window's egress budget takes one
    // window to publish), and the broker's hop.
    let bound = Duration::from_millis(2 * WINDOW_MS + 250);
    let refused = || {
        stack
            .bridge()
            .blocks()
            .metrics()
            .snapshot()
            .refused(Refusal::Held)
    };

    let paused = call(&ops, Command::CampaignPause { id: cid("app-9") }).await;
    assert_eq!(paused.summary.state, "paused");
    let t = Instant::now();
    holds_for("the asker keeps asking", Duration::from_secs(2), || true).await;
    assert_eq!(
        after(&seen, t + bound),
        0,
        "blocks of a paused campaign's artifact went out"
    );
    assert!(refused() > 0, "the asker's requests were refused as held");

    // Resumed, the same asker gets blocks again: the test can fail.
    call(&ops, Command::CampaignResume { id: cid("app-9") }).await;
    let t = Instant::now();
    wait("blocks again after the resume", LONG, || {
        after(&seen, t) >= 3
    })
    .await;

    let aborted = call(&ops, Command::CampaignAbort { id: cid("app-9") }).await;
    assert_eq!(aborted.summary.state, "aborted");
    let t = Instant::now();
    let before = refused();
    holds_for("the asker keeps asking", Duration::from_secs(2), || true).await;
    assert_eq!(
        after(&seen, t + bound),
        0,
        "blocks of an aborted campaign's artifact went out"
    );
    assert!(refused() > before);
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_no_campaign_names_is_served_as_before() {
    let stack = blocks_common::stack(BlocksConfig {
        merge_window_ms: WINDOW_MS,
        ..BlocksConfig::default()
    })
    .await;
    artifact(
        &stack,
        Release::new("app-8.0.0", Kind::App, "8.0.0").sized(SIZE),
    )
    .await;
    let seen = asker(stack.port(), "app-8.0.0").await;
    wait("blocks without any campaign", LONG, || {
        seen.lock().unwrap().len() >= 5
    })
    .await;
    let s = stack.bridge().blocks().metrics().snapshot();
    assert_eq!(s.refused(Refusal::Held), 0);
}
