//! Plays the bridge for an `ota sim` scale run (the harness's MiniBridge): puts
//! devices `{prefix}-00001..N` in one group, announces a firmware for every
//! arch of config/fleet.toml signed with its demo key, serves the blocks,
//! acknowledges Statuses, and prints progress every 5 s.
//!
//! Start it before `ota sim`: it announces once every device said Hello.
//!
//! `cargo run -p ota-tests --example minibridge -- PORT N [IMAGE_KIB]`

use std::collections::BTreeMap;
use std::time::Duration;

use device_sim::testkit::{announcement, pattern_image, TestImage};
use harness::minibridge::MiniBridge;
use schemas::keys::SigningKey;
use schemas::msg::{Kind, StatusState};
use schemas::topic::{Topic, Topics};
use schemas::{DeviceId, GroupName};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(18830);
    let n: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(100);
    let kib: usize = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(256);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let bridge = MiniBridge::start("127.0.0.1", port, Topics::default()).await?;
    let image = pattern_image(kib * 1024, 1);
    let mut release = Vec::new();
    for arch in ["esp32", "armv7", "aarch64"] {
        let img = TestImage::new(
            &format!("fw-2.0.0-{arch}"),
            Kind::Firmware,
            "main",
            "2.0.0",
            arch,
            image.clone(),
            4096,
        )?;
        release.push(img.envelope(&key));
        bridge.add_image(img);
    }
    // Acks need each device's Hello: wait for the fleet to connect (start
    // this before `ota sim`).
    eprintln!("waiting for {n} Hellos");
    let hellos = |s: &harness::minibridge::Seen| {
        s.hellos
            .iter()
            .map(|(d, _)| d)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let _ = bridge
        .wait_until(Duration::from_secs(3600), |s| hellos(s) >= n)
        .await;
    let g = GroupName::new("fleet")?;
    for i in 1..=n {
        bridge
            .set_groups(
                &DeviceId::new(format!("sim-{i:05}"))?,
                std::slice::from_ref(&g),
            )
            .await?;
    }
    let ann = announcement("camp-scale", Kind::Firmware, release)?;
    bridge.announce(Topic::GroupCampaign(g), Some(&ann)).await?;
    eprintln!("announced camp-scale to {n} devices ({kib} KiB image)");
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let seen = bridge.seen();
        let mut latest: BTreeMap<&DeviceId, StatusState> = BTreeMap::new();
        for (d, s) in &seen.statuses {
            latest.insert(d, s.state);
        }
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for s in latest.values() {
            *by.entry(s.as_str()).or_default() += 1;
        }
        eprintln!(
            "statuses {} | blocks sent {} | latest by state {:?}",
            seen.statuses.len(),
            seen.blocks_sent,
            by
        );
    }
}
