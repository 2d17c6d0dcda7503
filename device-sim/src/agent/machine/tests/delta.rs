//! E3: delta images in the machine: the pick at accept, the rebuild
//! between the payload's check and the install, the refusal of a payload
//! that does not rebuild the target, the refit when the installed image
//! changed, and the full image whenever a delta does not fit.

use super::*;
use crate::agent::event::{Geometry, RebuildRequest};
use crate::agent::policy::BusyFor;
use crate::agent::{ImageDigest, TimerId};
use schemas::msg::delta::FEATURE_DELTA_ZSTD;
use schemas::release::build_delta;
use schemas::CampaignId;
use sha2::{Digest, Sha256};

/// The full 1.3.0 image, its delta from the installed 1.2.0, and the
/// installed image's hash.
struct Release {
    full: TestImage,
    payload: TestImage,
    old_sha: [u8; 32],
}

fn release() -> Release {
    let old = pattern_image(20_000, 1);
    let mut new = old.clone();
    new[5_000..5_100].fill(0xee);
    let full = TestImage::new(
        "fw-130",
        Kind::Firmware,
        "main",
        "1.3.0",
        "esp32",
        new,
        1024,
    )
    .unwrap();
    let (bytes, delta) = build_delta(&old, &full.image, &full.manifest, "1.2.0").unwrap();
    let mut payload = TestImage::new(
        delta.artifact.as_str(),
        Kind::Firmware,
        "main",
        "1.3.0",
        "esp32",
        bytes,
        1024,
    )
    .unwrap();
    assert_eq!(payload.manifest.merkle_root, delta.merkle_root);
    payload.manifest = delta;
    Release {
        full,
        payload,
        old_sha: Sha256::digest(&old).into(),
    }
}

fn delta_ann(r: &Release) -> Announcement {
    let mut a = ann("camp-1", &r.full);
    a.deltas = vec![r.payload.envelope(&key(1))];
    a
}

/// A device on 1.2.0 whose installed image is `sha` (none: unknown).
fn device(cfg: AgentConfig, sha: Option<[u8; 32]>, policy: Box<dyn DeferPolicy>) -> Dev {
    let mut d = Dev::with(cfg, policy);
    if let Some(sha) = sha {
        d.agent
            .set_installed_image(ComponentName::new("main").unwrap(), sha);
    }
    d.online();
    d.join(&["g1"]);
    d
}

fn rebuild_of(d: &Dev) -> Option<RebuildRequest> {
    d.log.iter().find_map(|a| match a {
        Action::Rebuild(r) => Some(r.clone()),
        _ => None,
    })
}

fn payload_checked(d: &mut Dev, r: &Release) {
    d.checked(&r.payload);
}

#[test]
fn a_device_on_the_from_version_takes_the_delta_and_installs_the_target() {
    let r = release();
    let mut d = device(config("dev-0001"), Some(r.old_sha), Box::new(NeverDefer));
    assert_eq!(d.hellos()[0].features, vec![FEATURE_DELTA_ZSTD.to_string()]);
    d.announce("g1", &delta_ann(&r));
    let delta_id = r.payload.manifest.artifact.clone();
    assert!(d.subscribed_to(&Topic::ArtifactBlocks(delta_id.clone())));
    assert!(!d.subscribed_to(&Topic::ArtifactBlocks(r.full.manifest.artifact.clone())));
    assert_eq!(d.published()[0].artifact.as_ref(), Some(&delta_id));
    // Blocks of the full image are not what it downloads.
    assert!(stored(&d.block(&r.full, 0)).is_empty());
    d.blocks(&r.payload, 0..r.payload.blocks());
    assert!(d.log.contains(&Action::CheckImage {
        artifact: delta_id.clone(),
        geometry: Geometry::of(&r.payload.manifest),
    }));
    d.clear();
    payload_checked(&mut d, &r);
    // Not `downloaded` before the target is rebuilt.
    assert!(d.published().is_empty());
    let req = rebuild_of(&d).expect("a rebuild");
    assert_eq!(req.payload, delta_id);
    assert_eq!(req.target, r.full.manifest.artifact);
    assert_eq!(req.target_sha256, r.full.manifest.sha256);
    assert_eq!(req.from_sha256, r.old_sha);
    assert_eq!(req.target_geometry, Geometry::of(&r.full.manifest));
    d.clear();
    d.ev(Event::Rebuilt {
        campaign: CampaignId::new("camp-1").unwrap(),
        result: Ok(ImageDigest {
            size: r.full.manifest.size,
            sha256: r.full.manifest.sha256,
        }),
    });
    let s = d.published();
    assert_eq!(
        s.iter().map(|s| s.state).collect::<Vec<_>>(),
        [StatusState::Downloaded, StatusState::Installing]
    );
    assert!(s.iter().all(|s| s.artifact.as_ref() == Some(&delta_id)));
    let install = d.log.iter().find_map(|a| match a {
        Action::Install(i) => Some(i.clone()),
        _ => None,
    });
    let install = install.expect("an install");
    assert_eq!(install.artifact, r.full.manifest.artifact);
    assert_eq!(install.size, r.full.manifest.size);
}

#[test]
fn a_payload_that_does_not_rebuild_the_target_is_hash_mismatch_and_nothing_installs() {
    let r = release();
    for result in [
        Err("the payload does not decompress with the installed image".to_string()),
        Ok(ImageDigest {
            size: r.full.manifest.size,
            sha256: [0xab; 32],
        }),
    ] {
        let mut d = device(config("dev-0001"), Some(r.old_sha), Box::new(NeverDefer));
        d.announce("g1", &delta_ann(&r));
        d.blocks(&r.payload, 0..r.payload.blocks());
        payload_checked(&mut d, &r);
        d.clear();
        d.ev(Event::Rebuilt {
            campaign: CampaignId::new("camp-1").unwrap(),
            result,
        });
        let s = d.published();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].state, s[0].error),
            (StatusState::Failed, Some(ErrorCode::HashMismatch))
        );
        assert_eq!(s[0].artifact.as_ref(), Some(&r.payload.manifest.artifact));
        assert!(!d.log.iter().any(|a| matches!(a, Action::Install(_))));
        // The payload and whatever was rebuilt are dropped.
        for a in [&r.payload.manifest.artifact, &r.full.manifest.artifact] {
            assert!(d.log.contains(&Action::DropBlocks {
                artifact: a.clone()
            }));
        }
    }
}

#[test]
fn a_payload_whose_own_hash_fails_is_hash_mismatch_before_any_rebuild() {
    let r = release();
    let mut d = device(config("dev-0001"), Some(r.old_sha), Box::new(NeverDefer));
    d.announce("g1", &delta_ann(&r));
    d.blocks(&r.payload, 0..r.payload.blocks());
    d.clear();
    d.ev(Event::ImageChecked {
        artifact: r.payload.manifest.artifact.clone(),
        result: Ok(ImageDigest {
            size: r.payload.manifest.size,
            sha256: [0; 32],
        }),
    });
    assert_eq!(
        d.queued(),
        [(StatusState::Failed, Some(ErrorCode::HashMismatch))]
    );
    assert!(rebuild_of(&d).is_none());
}

#[test]
fn without_the_feature_or_the_installed_image_the_full_image_is_taken() {
    let r = release();
    let mut off = config("dev-0001");
    off.deltas = false;
    let cases = [
        (off, Some(r.old_sha)),
        (config("dev-0002"), None),
        // Same version, another build.
        (config("dev-0003"), Some([7; 32])),
    ];
    for (cfg, sha) in cases {
        let mut d = device(cfg, sha, Box::new(NeverDefer));
        d.announce("g1", &delta_ann(&r));
        assert!(d.subscribed_to(&Topic::ArtifactBlocks(r.full.manifest.artifact.clone())));
        assert_eq!(
            d.published()[0].artifact.as_ref(),
            Some(&r.full.manifest.artifact)
        );
    }
    // Hello lists the feature only when the device can use it.
    let mut off = config("dev-0004");
    off.deltas = false;
    assert!(
        device(off, Some(r.old_sha), Box::new(NeverDefer)).hellos()[0]
            .features
            .is_empty()
    );
    assert!(
        device(config("dev-0005"), None, Box::new(NeverDefer)).hellos()[0]
            .features
            .is_empty()
    );
}

#[test]
fn no_room_for_payload_and_target_takes_the_full_image() {
    let r = release();
    let mut cfg = config("dev-0001");
    cfg.room_bytes = Some(r.full.manifest.size + r.payload.manifest.size - 1);
    let mut d = device(cfg, Some(r.old_sha), Box::new(NeverDefer));
    d.announce("g1", &delta_ann(&r));
    assert!(d.subscribed_to(&Topic::ArtifactBlocks(r.full.manifest.artifact.clone())));
}

#[test]
fn a_delta_signed_by_an_unknown_key_is_ignored() {
    let r = release();
    let mut d = device(config("dev-0001"), Some(r.old_sha), Box::new(NeverDefer));
    let mut a = ann("camp-1", &r.full);
    a.deltas = vec![r.payload.envelope(&key(9))];
    d.announce("g1", &a);
    assert!(d.subscribed_to(&Topic::ArtifactBlocks(r.full.manifest.artifact.clone())));
    assert_eq!(d.published()[0].state, StatusState::Accepted);
}

#[test]
fn when_the_installed_image_changed_before_its_turn_the_full_image_is_taken() {
    let r = release();
    let mut d = device(
        config("dev-0001"),
        Some(r.old_sha),
        Box::new(BusyFor::new(1, 10_000)),
    );
    d.announce("g1", &delta_ann(&r));
    assert_eq!(d.states(), [StatusState::Accepted, StatusState::Deferred]);
    // Something else rewrote the running image meanwhile.
    d.agent
        .set_installed_image(ComponentName::new("main").unwrap(), [3; 32]);
    d.advance(10_000);
    d.ev(Event::Timer(TimerId::Relook(
        CampaignId::new("camp-1").unwrap(),
    )));
    assert!(d.subscribed_to(&Topic::ArtifactBlocks(r.full.manifest.artifact.clone())));
    assert!(!d.subscribed_to(&Topic::ArtifactBlocks(r.payload.manifest.artifact.clone())));
}

#[test]
fn a_restart_mid_rebuild_rebuilds_again() {
    let r = release();
    let mut d = device(config("dev-0001"), Some(r.old_sha), Box::new(NeverDefer));
    d.announce("g1", &delta_ann(&r));
    d.blocks(&r.payload, 0..r.payload.blocks());
    payload_checked(&mut d, &r);
    assert!(rebuild_of(&d).is_some());
    d.restart(Box::new(NeverDefer));
    assert!(rebuild_of(&d).is_some(), "the rebuild is asked for again");
}
