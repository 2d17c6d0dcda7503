//! Delta images (E3) through a real bridge: a pushed delta joins the
//! release of its full image, is announced in `deltas`, and is served by
//! broadcast like any artifact; devices on its from_version that share it
//! move far fewer bytes than the full image, and rebuild the exact target.

mod blocks_common;
mod campaign_common;
mod common;

use bridge::blocks::BlocksConfig;
use bridge::campaign::view::CampaignStatus;
use campaign_common::{
    call, cid, create, group, launch, retained, state, upload, DeviceOpts, Devices,
};
use device_sim::agent::ImageBytes;
use schemas::cose::TrustStore;
use schemas::msg::delta::{pick_delta, Installed};
use schemas::msg::manifest::sign;
use schemas::msg::{Kind, Manifest};
use schemas::msg::{StatusState, WireMessage};
use schemas::ops::Command;
use schemas::release::{build_delta, build_manifest, ReleaseSpec};
use schemas::topic::Topic;
use schemas::{ArtifactId, ComponentName, GroupName};
use serde_json::json;
use sha2::{Digest, Sha256};

/// `old` with a few scattered edits.
fn changed(old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    for at in (500..new.len()).step_by(16 * 1024) {
        new[at..at + 64].copy_from_slice(&blocks_common::image(64, at as u64));
    }
    new
}

fn full_manifest(image: &[u8]) -> Manifest {
    release(image, "1.3.0")
}

/// The full manifest of firmware `version`, artifact `fw-{version}`.
fn release(image: &[u8], version: &str) -> Manifest {
    let mut spec = ReleaseSpec::new(
        Kind::Firmware,
        ComponentName::new("main").unwrap(),
        version,
        "esp32",
        1_790_000_000,
    );
    spec.artifact = Some(ArtifactId::new(format!("fw-{version}")).unwrap());
    spec.block_size = 1024;
    build_manifest(image, &spec).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_delta_is_announced_and_shared_by_broadcast() {
    // A slow egress spreads the payload over several merge windows, so
    // the devices' requests merge into one broadcast stream.
    let stack = blocks_common::stack(BlocksConfig {
        merge_window_ms: 20,
        egress_bytes_per_sec: 40 * 1024,
        ..BlocksConfig::default()
    })
    .await;
    let key = blocks_common::release_key();
    let old = blocks_common::image(256 * 1024, 11);
    let new = changed(&old);
    let full = full_manifest(&new);
    let (payload, delta) = build_delta(&old, &new, &full, "1.2.0").unwrap();
    assert!(
        payload.len() * 10 < new.len(),
        "delta {} bytes",
        payload.len()
    );
    upload(&stack, new.clone(), sign(&full, &key)).await;
    upload(&stack, payload.clone(), sign(&delta, &key)).await;

    let ops = stack.ops().await;
    group(&ops, "acme", "acme").await;
    launch(
        &ops,
        json!({
            "id": "fw-1", "kind": "firmware", "release": ["fw-1.3.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            // Its downloaders speak the block protocol only: no device registers.
            "allow_empty": true,
            "gates": {"min_sample": 1, "wave_timeout_secs": 120}
        }),
    )
    .await;
    let topic = Topic::GroupCampaign(GroupName::new("acme").unwrap());
    let mut ann = None;
    campaign_common::wait("the announcement", common::WAIT, || {
        ann = retained(&stack, topic.clone());
        ann.is_some()
    })
    .await;
    let ann = ann.unwrap();
    assert_eq!(
        ann.deltas,
        vec![sign(&delta, &key)],
        "the delta is announced"
    );

    // A device on 1.2.0 with that image picks it; one of another build does not.
    let trust = TrustStore::new([key.verifying_key()]);
    let old_sha: [u8; 32] = Sha256::digest(&old).into();
    let at = |sha256| Installed {
        version: "1.2.0",
        sha256,
    };
    let picked = pick_delta(&ann.deltas, &full, at(&old_sha), &trust).expect("the delta fits");
    assert_eq!(picked, delta);
    assert!(pick_delta(&ann.deltas, &full, at(&[0; 32]), &trust).is_none());

    // Three devices on 1.2.0 download the delta together, Merkle-verified.
    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(blocks_common::device(&stack, &format!("on-120-{i}"), &delta).await);
    }
    let cfg = blocks_common::quick();
    let runs: Vec<_> = devices
        .into_iter()
        .map(|d| {
            let (m, cfg) = (delta.clone(), cfg.clone());
            tokio::spawn(async move { d.download(&m, &cfg).await })
        })
        .collect();
    let mut broadcast = 0;
    for run in runs {
        let report = run.await.unwrap().expect("the delta download completes");
        assert_eq!(report.rejected, 0, "every proof verified");
        broadcast += report.via_broadcast;
        let got = report.image.expect("kept");
        let mut rebuilt = Vec::new();
        schemas::delta_zstd::apply(&old, &got, full.size, &full.sha256, &mut rebuilt)
            .expect("the payload rebuilds the target");
        assert!(rebuilt == new);
    }
    assert!(broadcast > 0, "delta blocks came on the artifact's topic");
    let s = stack.bridge().blocks().metrics().snapshot();
    // Three devices shared far less than one full image.
    assert!(
        s.egress_bytes() < new.len() as u64 / 4,
        "egress {} for a {}-byte image and a {}-byte delta: {s:?}",
        s.egress_bytes(),
        new.len(),
        payload.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_named_in_a_release_is_refused() {
    let stack = campaign_common::stack().await;
    let key = blocks_common::release_key();
    let old = blocks_common::image(8 * 1024, 3);
    let new = changed(&old);
    let full = full_manifest(&new);
    let (payload, delta) = build_delta(&old, &new, &full, "1.2.0").unwrap();
    upload(&stack, new, sign(&full, &key)).await;
    upload(&stack, payload, sign(&delta, &key)).await;
    let ops = stack.ops().await;
    group(&ops, "acme", "acme").await;
    let e = ops
        .call(Command::CampaignCreate {
            spec: json!({
                "id": "fw-bad", "kind": "firmware", "release": [delta.artifact.as_str()],
                "waves": [{"cohorts": {"acme": 10000}}],
            }),
        })
        .await;
    let text = format!("{e:?}");
    assert!(text.contains("is a delta (from 1.2.0)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_agents_on_the_from_version_take_the_delta_the_others_the_full_image() {
    let stack = campaign_common::stack().await;
    let key = blocks_common::release_key();
    let old = blocks_common::image(128 * 1024, 21);
    let new = changed(&old);
    let full = full_manifest(&new);
    let (payload, delta) = build_delta(&old, &new, &full, "1.2.0").unwrap();
    upload(&stack, new.clone(), sign(&full, &key)).await;
    upload(&stack, payload.clone(), sign(&delta, &key)).await;
    let ops = stack.ops().await;
    group(&ops, "acme", "acme").await;

    let main = ComponentName::new("main").unwrap();
    let on = |id: &str, version: &str, image: &[u8], deltas: bool| {
        let mut o = DeviceOpts::new(id, "acme");
        o.versions = vec![("main".into(), version.into())];
        o.installer = o
            .installer
            .with_image(main.clone(), ImageBytes::new(image.to_vec()));
        o.deltas = deltas;
        o
    };
    let mut other_build = old.clone();
    other_build[10] ^= 1;
    let mut devices = Devices::default();
    let takers: Vec<_> = (0..2)
        .map(|i| devices.spawn(&stack, on(&format!("d-on-120-{i}"), "1.2.0", &old, true)))
        .collect();
    let fulls = [
        // Another installed version.
        devices.spawn(&stack, on("d-on-110", "1.1.0", &other_build, true)),
        // Without the feature.
        devices.spawn(&stack, on("d-no-feature", "1.2.0", &old, false)),
        // Same version, another build: from_sha256 is not its image's.
        devices.spawn(&stack, on("d-other-build", "1.2.0", &other_build, true)),
    ];
    campaign_common::registered(&stack, 5).await;
    launch(
        &ops,
        json!({
            "id": "fw-d", "kind": "firmware", "release": ["fw-1.3.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 120}
        }),
    )
    .await;
    let all: Vec<_> = takers.iter().chain(fulls.iter()).cloned().collect();
    campaign_common::wait("every device on 1.3.0", campaign_common::LONG, || {
        all.iter()
            .all(|d| state(&stack, d, "fw-d") == Some(StatusState::Success))
    })
    .await;
    for d in &takers {
        let got = devices.drops.block_bytes(d);
        eprintln!(
            "{d}: {got} bytes (delta {}, full {})",
            payload.len(),
            new.len()
        );
        let c = campaign_common::current(&stack, d, "fw-d").unwrap();
        assert_eq!(
            c.artifact.as_ref(),
            Some(&delta.artifact),
            "{d} names the delta"
        );
        assert!(
            got >= payload.len() as u64 && got < new.len() as u64 / 4,
            "{d} received {got} bytes for a {}-byte delta of a {}-byte image",
            payload.len(),
            new.len()
        );
    }
    for d in &fulls {
        let got = devices.drops.block_bytes(d);
        eprintln!("{d}: {got} bytes");
        assert!(
            got >= new.len() as u64,
            "{d} received {got} bytes, the full image is {}",
            new.len()
        );
    }
    devices.stop_all().await;
}

/// `old` with a few scattered edits of its own, and 1 KiB inserted.
fn edited(old: &[u8], seed: u64) -> Vec<u8> {
    let mut new = old.to_vec();
    for at in (700 + seed as usize * 97..new.len() - 64).step_by(20 * 1024) {
        new[at..at + 64].copy_from_slice(&blocks_common::image(64, at as u64 + seed));
    }
    let mid = new.len() / 2;
    new.splice(mid..mid, blocks_common::image(1024, seed + 100));
    new
}

/// A release 1.2.0 with a delta from 1.0.0 and one from 1.1.0, pushed.
struct Mixed {
    v100: Vec<u8>,
    v110: Vec<u8>,
    v120: Vec<u8>,
    from_100: Manifest,
    from_110: Manifest,
}

async fn push_mixed(stack: &common::Stack) -> Mixed {
    let key = blocks_common::release_key();
    let v100 = blocks_common::image(128 * 1024, 31);
    let v110 = edited(&v100, 1);
    let v120 = edited(&v110, 2);
    let full = release(&v120, "1.2.0");
    let (p100, from_100) = build_delta(&v100, &v120, &full, "1.0.0").unwrap();
    let (p110, from_110) = build_delta(&v110, &v120, &full, "1.1.0").unwrap();
    upload(stack, v120.clone(), sign(&full, &key)).await;
    upload(stack, p100, sign(&from_100, &key)).await;
    upload(stack, p110, sign(&from_110, &key)).await;
    Mixed {
        v100,
        v110,
        v120,
        from_100,
        from_110,
    }
}

fn on(id: &str, version: &str, image: &[u8], deltas: bool) -> DeviceOpts {
    let mut o = DeviceOpts::new(id, "acme");
    o.versions = vec![("main".into(), version.into())];
    o.installer = o.installer.with_image(
        ComponentName::new("main").unwrap(),
        ImageBytes::new(image.to_vec()),
    );
    o.deltas = deltas;
    o
}

/// Creates and starts campaign `id` of 1.2.0 to group acme; returns what
/// create answered (its pre-flight).
async fn start_campaign(stack: &common::Stack, id: &str) -> CampaignStatus {
    let ops = stack.ops().await;
    group(&ops, "acme", "acme").await;
    let created = create(
        &ops,
        json!({
            "id": id, "kind": "firmware", "release": ["fw-1.2.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 120}
        }),
    )
    .await;
    call(&ops, Command::CampaignStart { id: cid(id) }).await;
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_campaign_to_a_mixed_fleet_each_device_takes_its_path_and_ends_on_the_target() {
    let stack = campaign_common::stack().await;
    let r = push_mixed(&stack).await;
    let mut other_110 = r.v110.clone();
    other_110[10] ^= 1;
    let mut devices = Devices::default();
    let d100: Vec<_> = (0..2)
        .map(|i| devices.spawn(&stack, on(&format!("d100-{i}"), "1.0.0", &r.v100, true)))
        .collect();
    let d110: Vec<_> = (0..2)
        .map(|i| devices.spawn(&stack, on(&format!("d110-{i}"), "1.1.0", &r.v110, true)))
        .collect();
    let fulls = [
        devices.spawn(&stack, on("d100-old-agent", "1.0.0", &r.v100, false)),
        devices.spawn(&stack, on("d110-old-agent", "1.1.0", &r.v110, false)),
        // Same version, another build: from_sha256 is not its image's.
        devices.spawn(&stack, on("d110-other-build", "1.1.0", &other_110, true)),
    ];
    campaign_common::registered(&stack, 7).await;
    let created = start_campaign(&stack, "fw-mixed").await;
    // The pre-flight counts the devices listing the feature on each
    // from_version: the other build among them (the bridge cannot see an
    // image's hash), not the old agents.
    let per: Vec<(&str, u32)> = created
        .preflight
        .deltas
        .iter()
        .map(|d| (d.from_version.as_str(), d.downloads))
        .collect();
    assert!(
        per.contains(&("1.0.0", 2)) && per.contains(&("1.1.0", 3)),
        "{per:?}"
    );
    let all: Vec<_> = d100.iter().chain(&d110).chain(&fulls).cloned().collect();
    campaign_common::wait("every device on 1.2.0", campaign_common::LONG, || {
        all.iter()
            .all(|d| state(&stack, d, "fw-mixed") == Some(StatusState::Success))
    })
    .await;
    let target: [u8; 32] = Sha256::digest(&r.v120).into();
    let full_id = ArtifactId::new("fw-1.2.0").unwrap();
    let paths = [
        (&d100[..], &r.from_100.artifact),
        (&d110[..], &r.from_110.artifact),
        (&fulls[..], &full_id),
    ];
    for (group, artifact) in paths {
        for d in group {
            let c = campaign_common::current(&stack, d, "fw-mixed").unwrap();
            assert_eq!(c.artifact.as_ref(), Some(artifact), "{d} took {artifact}");
            let got = devices.drops.block_bytes(d);
            if artifact == &full_id {
                assert!(got >= r.v120.len() as u64, "{d} received {got} bytes");
            } else {
                assert!(got < r.v120.len() as u64 / 4, "{d} received {got} bytes");
            }
            assert_eq!(
                devices.installed.sha256(d, "main"),
                Some(target),
                "{d} runs exactly the 1.2.0 image"
            );
        }
    }
    // `campaign status` counts each path as the devices took it: the
    // full image, then each delta, by what their reports name.
    let ops = stack.ops().await;
    let status = campaign_common::status(&ops, "fw-mixed").await;
    let took = |a: &ArtifactId| {
        all.iter()
            .filter(|d| {
                campaign_common::current(&stack, d, "fw-mixed").and_then(|c| c.artifact)
                    == Some(a.clone())
            })
            .count() as u32
    };
    let mut shown: Vec<(ArtifactId, Option<String>, u32)> = status
        .paths
        .iter()
        .map(|p| (p.artifact.clone(), p.from_version.clone(), p.devices))
        .collect();
    // The full image first; the deltas in the release's order.
    shown[1..].sort();
    let path = |a: &ArtifactId, from: Option<&str>| (a.clone(), from.map(str::to_string), took(a));
    assert_eq!(
        shown,
        vec![
            path(&full_id, None),
            path(&r.from_100.artifact, Some("1.0.0")),
            path(&r.from_110.artifact, Some("1.1.0")),
        ]
    );
    assert_eq!(
        shown.iter().map(|p| p.2).collect::<Vec<_>>(),
        [3, 2, 2],
        "{shown:?}"
    );
    devices.stop_all().await;
}

/// An attacker with a broker login floods the delta's block topic with
/// forged blocks while devices download it: every forged block fails
/// its Merkle proof and is rejected alone, and the devices still rebuild
/// the exact target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_delta_blocks_on_the_broker_are_rejected_one_by_one() {
    // A slow egress keeps the downloads going while the attacker publishes.
    let stack = blocks_common::stack(BlocksConfig {
        merge_window_ms: 20,
        egress_bytes_per_sec: 16 * 1024,
        ..BlocksConfig::default()
    })
    .await;
    let r = push_mixed(&stack).await;
    let mut devices = Devices::default();
    let takers: Vec<_> = (0..2)
        .map(|i| devices.spawn(&stack, on(&format!("d100-{i}"), "1.0.0", &r.v100, true)))
        .collect();
    campaign_common::registered(&stack, 2).await;
    let attacker = stack.device("attacker").await;
    let topic = Topic::ArtifactBlocks(r.from_100.artifact.clone());
    let blocks = r.from_100.blocks;
    assert!(blocks > 1, "a delta of several blocks");
    // Proofs of the right depth, for full-size blocks: only Merkle refuses them.
    let depth = (32 - (blocks - 1).leading_zeros()) as usize;
    start_campaign(&stack, "fw-forged").await;
    let done = || {
        takers
            .iter()
            .all(|d| state(&stack, d, "fw-forged") == Some(StatusState::Success))
    };
    let mut sent = 0u32;
    let deadline = tokio::time::Instant::now() + campaign_common::LONG;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "devices never done");
        let forged = schemas::msg::Block {
            artifact: r.from_100.artifact.clone(),
            index: sent % (blocks - 1),
            data: blocks_common::image(1024, u64::from(sent)),
            proof: vec![[7; 32]; depth],
        };
        attacker.publish(&topic, forged.encode()).await;
        sent += 1;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let target: [u8; 32] = Sha256::digest(&r.v120).into();
    let mut rejected = 0;
    for d in &takers {
        let c = campaign_common::current(&stack, d, "fw-forged").unwrap();
        assert_eq!(c.artifact.as_ref(), Some(&r.from_100.artifact));
        assert_eq!(devices.installed.sha256(d, "main"), Some(target), "{d}");
        rejected += devices.drops.blocks_rejected(d);
    }
    eprintln!("{sent} forged blocks sent, {rejected} rejected");
    assert!(rejected > 0, "no forged block reached a downloading device");
    devices.stop_all().await;
}
