//! Delta images (E3) through a real bridge: a pushed delta joins the
//! release of its full image, is announced in `deltas`, and is served by
//! broadcast like any artifact; devices on its from_version that share it
//! move far fewer bytes than the full image, and rebuild the exact target.

mod blocks_common;
mod campaign_common;
mod common;

use bridge::blocks::BlocksConfig;
use campaign_common::{call, cid, create, group, retained, state, upload, DeviceOpts, Devices};
use device_sim::agent::ImageBytes;
use schemas::cose::TrustStore;
use schemas::msg::delta::{pick_delta, Installed};
use schemas::msg::manifest::sign;
use schemas::msg::StatusState;
use schemas::msg::{Kind, Manifest};
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
    let mut spec = ReleaseSpec::new(
        Kind::Firmware,
        ComponentName::new("main").unwrap(),
        "1.3.0",
        "esp32",
        1_790_000_000,
    );
    spec.artifact = Some(ArtifactId::new("fw-1.3.0").unwrap());
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
    create(
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
    call(&ops, Command::CampaignStart { id: cid("fw-1") }).await;
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
    create(
        &ops,
        json!({
            "id": "fw-d", "kind": "firmware", "release": ["fw-1.3.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 120}
        }),
    )
    .await;
    call(&ops, Command::CampaignStart { id: cid("fw-d") }).await;
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
