//! Step 7 and 8: the whole-image check, install, reboot, health check,
//! and terminal states once.

use super::*;
use crate::agent::{BootOutcome, InstallRequest};
use schemas::CampaignId;

fn camp() -> CampaignId {
    CampaignId::new("camp-1").unwrap()
}

fn done_downloading(kind: Kind) -> (Dev, TestImage) {
    let img = image("fw", "1.3.0", kind);
    let mut d = downloading(&img);
    d.blocks(&img, 0..3);
    (d, img)
}

#[test]
fn the_whole_image_is_checked_when_every_block_is_in() {
    let (d, img) = done_downloading(Kind::App);
    assert!(d.log.contains(&Action::CheckImage {
        artifact: img.manifest.artifact.clone(),
        geometry: crate::agent::event::Geometry::of(&img.manifest),
    }));
    assert!(!d.subscribed_to(&Topic::ArtifactBlocks(img.manifest.artifact.clone())));
}

#[test]
fn hash_mismatch() {
    // A release whose sha256 is wrong though every block proves out.
    let mut img = image("fw", "1.3.0", Kind::App);
    img.manifest.sha256 = [0xee; 32];
    let mut d = downloading(&img);
    d.blocks(&img, 0..3);
    d.clear();
    d.checked(&img);
    let s = d.published();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].state, s[0].error),
        (StatusState::Failed, Some(ErrorCode::HashMismatch))
    );
    assert!(d.log.iter().any(|a| matches!(a, Action::DropBlocks { .. })));
    assert!(!d.log.iter().any(|a| matches!(a, Action::Install(_))));

    // An image the store cannot read is not the image either.
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = downloading(&img);
    d.blocks(&img, 0..3);
    d.ev(Event::ImageChecked {
        artifact: img.manifest.artifact.clone(),
        result: Err("short read".into()),
    });
    assert_eq!(
        d.queued().last(),
        Some(&(StatusState::Failed, Some(ErrorCode::HashMismatch)))
    );
}

#[test]
fn app_success_only_after_install_and_health_check() {
    let (mut d, img) = done_downloading(Kind::App);
    d.clear();
    d.checked(&img);
    assert_eq!(
        d.states(),
        [StatusState::Downloaded, StatusState::Installing]
    );
    let req = d.log.iter().find_map(|a| match a {
        Action::Install(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(
        req,
        Some(InstallRequest {
            campaign: camp(),
            artifact: img.manifest.artifact.clone(),
            kind: Kind::App,
            component: ComponentName::new("main").unwrap(),
            version: "1.3.0".into(),
            size: 10_000,
        })
    );
    // The state is saved before the installer runs.
    let pos = |p: &dyn Fn(&Action) -> bool| d.log.iter().position(p).unwrap();
    assert!(pos(&|a| matches!(a, Action::Persist)) < pos(&|a| matches!(a, Action::Install(_))));
    assert!(!d.states().contains(&StatusState::Success));
    d.clear();
    d.ev(Event::InstallDone {
        campaign: camp(),
        result: Ok(()),
    });
    // Hello with the new version and the same boot id, then success.
    let h = d.hellos();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].versions, versions("1.3.0"));
    assert_eq!(h[0].boot_id, d.agent.boot_id());
    let s = d.published();
    assert_eq!(s.last().unwrap().state, StatusState::Success);
    assert_eq!(s.last().unwrap().versions, versions("1.3.0"));
    assert!(!d.log.iter().any(|a| matches!(a, Action::Reboot(_))));
}

#[test]
fn app_failing_its_health_check_is_install_failed() {
    let (mut d, img) = done_downloading(Kind::Config);
    d.checked(&img);
    d.ev(Event::InstallDone {
        campaign: camp(),
        result: Err("health check exited 1".into()),
    });
    let s = d.published();
    let last = s.last().unwrap();
    assert_eq!(
        (last.state, last.error),
        (StatusState::Failed, Some(ErrorCode::InstallFailed))
    );
    assert_eq!(last.versions, versions("1.2.0"));
    assert!(!d.states().contains(&StatusState::Success));
}

fn rebooting() -> (Dev, TestImage) {
    let (mut d, img) = done_downloading(Kind::Firmware);
    d.checked(&img);
    d.ev(Event::InstallDone {
        campaign: camp(),
        result: Ok(()),
    });
    assert_eq!(d.states().last(), Some(&StatusState::Rebooting));
    assert!(d.log.iter().any(|a| matches!(a, Action::Reboot(_))));
    assert!(!d.states().contains(&StatusState::Success));
    (d, img)
}

#[test]
fn firmware_reboots_and_succeeds_after_a_healthy_boot() {
    let (mut d, _img) = rebooting();
    let old_boot = d.agent.boot_id().to_string();
    d.ev(Event::Disconnected);
    d.advance(30_000);
    d.restart(Box::new(NeverDefer));
    assert_eq!(d.agent.pending_boot().unwrap().version, "1.3.0");
    d.ev(Event::Booted(BootOutcome::Healthy));
    assert_eq!(d.states(), [StatusState::Success]);
    assert!(d.agent.pending_boot().is_none());
    d.online();
    // Presence, then Hello with the new versions and a new boot id.
    let presence = d
        .log
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Publish {
                    topic: Topic::Presence(_),
                    retain: true,
                    ..
                }
            )
        })
        .unwrap();
    let hello = d
        .log
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Publish {
                    topic: Topic::Hello(_),
                    ..
                }
            )
        })
        .unwrap();
    assert!(presence < hello);
    let h = d.hellos();
    assert_eq!(h[0].versions, versions("1.3.0"));
    assert_ne!(h[0].boot_id, old_boot);
    let s = d.published();
    assert_eq!(s.last().unwrap().state, StatusState::Success);
    assert_eq!(s.last().unwrap().versions, versions("1.3.0"));
}

#[test]
fn a_failed_boot_is_rolled_back() {
    let (mut d, _img) = rebooting();
    d.restart(Box::new(NeverDefer));
    d.ev(Event::Booted(BootOutcome::RolledBack {
        detail: "watchdog reset".into(),
    }));
    d.online();
    let s = d.published();
    let last = s.last().unwrap();
    assert_eq!(
        (last.state, last.error),
        (StatusState::RolledBack, Some(ErrorCode::BootFailed))
    );
    assert_eq!(last.versions, versions("1.2.0"));
    assert_eq!(d.hellos()[0].versions, versions("1.2.0"));
}

#[test]
fn an_install_interrupted_by_a_restart_runs_again() {
    let (mut d, img) = done_downloading(Kind::App);
    d.checked(&img);
    d.restart(Box::new(NeverDefer));
    assert!(d.log.iter().any(|a| matches!(a, Action::Install(_))));
    // And a check interrupted runs again too.
    let (mut d, _img) = done_downloading(Kind::App);
    d.restart(Box::new(NeverDefer));
    assert!(d.log.iter().any(|a| matches!(a, Action::CheckImage { .. })));
}

#[test]
fn terminal_once_across_reboots() {
    let (mut d, img) = rebooting();
    d.restart(Box::new(NeverDefer));
    d.ev(Event::Booted(BootOutcome::Healthy));
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("camp-1", &img));
    d.restart(Box::new(NeverDefer));
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("camp-1", &img));
    assert_eq!(
        d.queued().iter().filter(|(s, _)| s.is_terminal()).count(),
        0,
        "no second terminal after the restart"
    );
}
