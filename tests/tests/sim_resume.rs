//! A device killed mid-download resumes from its state directory without
//! downloading its verified blocks again, then installs a firmware through
//! a reboot and reports success. Real broker (embedded rumqttd), real
//! rumqttc clients, real files; the test plays the bridge's part with
//! `harness::minibridge::MiniBridge`.

mod sim_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use device_sim::agent::{AgentConfig, DeviceIoConfig, FileInstaller, FileStore};
use device_sim::testkit::{announcement, pattern_image, TestImage};
use harness::minibridge::MiniBridge;
use schemas::keys::SigningKey;
use schemas::msg::{Kind, StatusState};
use schemas::topic::{Topic, Topics};
use schemas::{DeviceId, GroupName};
use sim_support::{broker, wait_for, Forward, Seen};
use tokio::sync::mpsc;

const BLOCKS: u32 = 40;
const KEPT_BEFORE_KILL: u32 = 12;

fn io_config(id: &DeviceId, key: &SigningKey, port: u16) -> DeviceIoConfig {
    let agent = AgentConfig {
        labels: [("line".to_string(), "3".to_string())].into(),
        deltas: true,
        ..sim_support::agent_config(id, key, "armv7")
    };
    sim_support::io_config(agent, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_killed_mid_download_resumes_without_refetching_kept_blocks() {
    let addr = broker();
    let key = SigningKey::from_bytes(&[5; 32]);
    let id = DeviceId::new("dev-resume-1").unwrap();
    let img = TestImage::new(
        "fw-2.0.0-armv7",
        Kind::Firmware,
        "main",
        "2.0.0",
        "armv7",
        pattern_image(BLOCKS as usize * 1024 - 100, 11),
        1024,
    )
    .unwrap();
    let bridge = MiniBridge::start("127.0.0.1", addr.port(), Topics::default())
        .await
        .unwrap();
    bridge.add_image(img.clone());
    // First life: serve only the first blocks, so the download stalls there.
    bridge.serve_only(Some(Arc::new(|_, i| i < KEPT_BEFORE_KILL)));
    let g = GroupName::new("line-3").unwrap();
    bridge
        .set_groups(&id, std::slice::from_ref(&g))
        .await
        .unwrap();
    let ann = announcement("camp-fw-2", Kind::Firmware, vec![img.envelope(&key)]).unwrap();
    bridge
        .announce(Topic::GroupCampaign(g.clone()), Some(&ann))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let install_root = dir.path().join("slots");
    std::fs::create_dir_all(&install_root).unwrap();
    std::fs::write(install_root.join("main"), b"firmware 1.0.0").unwrap();

    let (tx, mut rx) = mpsc::channel(1024);
    let store = FileStore::open(&state_dir).unwrap();
    let installer = FileInstaller::new(&install_root, Some(vec!["true".into()]));
    let first = tokio::spawn(device_sim::agent::run_device(
        io_config(&id, &key, addr.port()),
        installer.clone(),
        store,
        Forward(tx),
        std::future::pending(),
    ));
    wait_for(
        &mut rx,
        20,
        "the kept blocks",
        |s| matches!(s, Seen::Progress(h, _) if *h == KEPT_BEFORE_KILL),
    )
    .await;
    // Killed: the task is dropped mid-download, nothing is said to anyone.
    first.abort();
    let _ = first.await;

    let kept = FileStore::open(&state_dir)
        .unwrap()
        .read_bits(&img.manifest.artifact, BLOCKS)
        .expect("a bitmap in the state dir");
    let kept: BTreeSet<u32> = kept.iter().collect();
    assert_eq!(kept, (0..KEPT_BEFORE_KILL).collect());
    let asked_before = bridge.seen().requested.len();

    // Second life: the same state dir; every block is served now.
    bridge.serve_only(None);
    let (tx, rx) = mpsc::channel(1024);
    let second = tokio::spawn(device_sim::agent::run_device(
        io_config(&id, &key, addr.port()),
        installer,
        FileStore::open(&state_dir).unwrap(),
        Forward(tx),
        std::future::pending(),
    ));
    let seen = bridge
        .wait_until(Duration::from_secs(60), |s| {
            s.statuses
                .iter()
                .any(|(d, st)| d == &id && st.state == StatusState::Success)
        })
        .await
        .unwrap_or_else(|s| panic!("no success; statuses: {:?}", s.statuses));
    let asked_after: BTreeSet<u32> = seen.requested[asked_before..]
        .iter()
        .map(|(_, i)| *i)
        .collect();
    assert!(!asked_after.is_empty());
    assert!(
        asked_after.is_disjoint(&kept),
        "asked again for kept blocks: {:?}",
        asked_after.intersection(&kept).collect::<Vec<_>>()
    );
    // Exactly the missing ones (re-requests after quiet spells repeat them).
    assert_eq!(asked_after, (KEPT_BEFORE_KILL..BLOCKS).collect());
    assert_eq!(std::fs::read(install_root.join("main")).unwrap(), img.image);

    // The Status flow of a firmware, each state once, seq strictly rising
    // across the kill.
    let mut firsts = Vec::new();
    let mut seqs = Vec::new();
    for (_, s) in seen.statuses.iter().filter(|(d, _)| d == &id) {
        if !seqs.contains(&s.seq) {
            seqs.push(s.seq);
            firsts.push(s.state);
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let flow: Vec<StatusState> = firsts
        .iter()
        .copied()
        .filter(|s| *s != StatusState::Downloading)
        .collect();
    assert_eq!(
        flow,
        [
            StatusState::Accepted,
            StatusState::Downloaded,
            StatusState::Installing,
            StatusState::Rebooting,
            StatusState::Success
        ]
    );
    // After the reboot: Hello with the new version and a new boot id.
    let hellos: Vec<_> = seen
        .hellos
        .iter()
        .filter(|(d, _)| d == &id)
        .map(|(_, h)| h.clone())
        .collect();
    let last = hellos.last().unwrap();
    assert_eq!(last.versions.get("main").map(String::as_str), Some("2.0.0"));
    let boots: BTreeSet<_> = hellos.iter().map(|h| h.boot_id.clone()).collect();
    assert!(boots.len() >= 3, "a boot id per boot: {boots:?}");
    let epochs: BTreeSet<_> = hellos.iter().map(|h| h.epoch.clone()).collect();
    assert_eq!(epochs.len(), 1, "the epoch survives restarts");
    drop(rx);
    second.abort();
}
