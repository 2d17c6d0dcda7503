//! Steps 1 to 3: pick, verify, versions, room. Each refusal is reported
//! once, and nothing is downloaded.

use super::*;
use schemas::msg::manifest::sign;

fn no_download(d: &Dev) {
    assert!(d.requests().is_empty(), "requested blocks");
    assert!(!d
        .log
        .iter()
        .any(|a| matches!(a, Action::Subscribe(Topic::ArtifactBlocks(_)))));
}

fn one_terminal(d: &Dev, state: StatusState, error: Option<ErrorCode>) -> Status {
    let s = d.published();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].state, s[0].error), (state, error), "{s:?}");
    no_download(d);
    s[0].clone()
}

fn device_sees(a: &Announcement) -> Dev {
    let mut d = Dev::new();
    d.online();
    d.join(&["g1"]);
    d.announce("g1", a);
    d
}

#[test]
fn picks_its_own_arch_then_any() {
    let mut arm = image("fw-arm", "1.3.0", Kind::App);
    arm.manifest.arch = "armv7".into();
    let esp = image("fw-esp", "1.3.0", Kind::App);
    let mut any = image("fw-any", "1.3.0", Kind::App);
    any.manifest.arch = "any".into();
    let k = key(1);
    let a = announcement(
        "c",
        Kind::App,
        vec![arm.envelope(&k), any.envelope(&k), esp.envelope(&k)],
    )
    .unwrap();
    let d = device_sees(&a);
    let s = d.published();
    assert_eq!(s[0].state, StatusState::Accepted);
    assert_eq!(s[0].artifact.as_ref().unwrap().as_str(), "fw-esp");

    let a = announcement("c", Kind::App, vec![arm.envelope(&k), any.envelope(&k)]).unwrap();
    let d = device_sees(&a);
    assert_eq!(
        d.published()[0].artifact.as_ref().unwrap().as_str(),
        "fw-any"
    );
}

#[test]
fn incompatible_arch_is_reported_once_and_nothing_downloaded() {
    let mut arm = image("fw-arm", "1.3.0", Kind::App);
    arm.manifest.arch = "armv7".into();
    let a = announcement("c", Kind::App, vec![arm.envelope(&key(1))]).unwrap();
    let mut d = device_sees(&a);
    one_terminal(&d, StatusState::Failed, Some(ErrorCode::IncompatibleArch));
    // The same campaign again, on another topic and after a restart: silence.
    d.join(&["g1", "g2"]);
    d.announce("g2", &a);
    d.announce("g1", &a);
    d.restart(Box::new(NeverDefer));
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &a);
    assert!(d.queued().is_empty());
}

#[test]
fn unreadable_entries_without_a_match_are_bad_manifest() {
    let mut arm = image("fw-arm", "1.3.0", Kind::App);
    arm.manifest.arch = "armv7".into();
    let a = announcement(
        "c",
        Kind::App,
        vec![arm.envelope(&key(1)), vec![0xff, 0x00]],
    )
    .unwrap();
    one_terminal(
        &device_sees(&a),
        StatusState::Failed,
        Some(ErrorCode::BadManifest),
    );
}

#[test]
fn unknown_key() {
    let img = image("fw", "1.3.0", Kind::App);
    let a = announcement("c", Kind::App, vec![img.envelope(&key(2))]).unwrap();
    one_terminal(
        &device_sees(&a),
        StatusState::Failed,
        Some(ErrorCode::UnknownKey),
    );
}

#[test]
fn bad_signature() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut env = img.envelope(&key(1));
    let n = env.len();
    env[n - 1] ^= 0x01;
    let a = announcement("c", Kind::App, vec![env]).unwrap();
    one_terminal(
        &device_sees(&a),
        StatusState::Failed,
        Some(ErrorCode::BadSignature),
    );
}

#[test]
fn bad_manifest_kind_and_content() {
    // The manifest says firmware, the announcement app.
    let img = image("fw", "1.3.0", Kind::Firmware);
    let a = announcement("c", Kind::App, vec![img.envelope(&key(1))]).unwrap();
    one_terminal(
        &device_sees(&a),
        StatusState::Failed,
        Some(ErrorCode::BadManifest),
    );
    // Signed, but `blocks` disagrees with `size`.
    let mut img = image("fw", "1.3.0", Kind::App);
    img.manifest.blocks = 7;
    let a = announcement("c", Kind::App, vec![sign(&img.manifest, &key(1))]).unwrap();
    one_terminal(
        &device_sees(&a),
        StatusState::Failed,
        Some(ErrorCode::BadManifest),
    );
}

#[test]
fn unknown_component() {
    let mut img = image("fw", "1.3.0", Kind::App);
    img.manifest.component = ComponentName::new("modem").unwrap();
    let s = one_terminal(
        &device_sees(&ann("c", &img)),
        StatusState::Failed,
        Some(ErrorCode::UnknownComponent),
    );
    assert_eq!(s.artifact.unwrap().as_str(), "fw");
}

#[test]
fn already_installed_is_success() {
    let img = image("fw", "1.2.0+build.7", Kind::App);
    let s = one_terminal(&device_sees(&ann("c", &img)), StatusState::Success, None);
    assert_eq!(s.detail.as_deref(), Some("already_installed"));
}

#[test]
fn version_rejected_unless_downgrade_allowed() {
    let img = image("fw", "1.1.9", Kind::App);
    one_terminal(
        &device_sees(&ann("c", &img)),
        StatusState::Failed,
        Some(ErrorCode::VersionRejected),
    );
    let mut img = image("fw", "1.1.9", Kind::App);
    img.manifest.allow_downgrade = true;
    let d = device_sees(&ann("c", &img));
    assert_eq!(d.published()[0].state, StatusState::Accepted);
}

#[test]
fn min_version() {
    let mut img = image("fw", "2.0.0", Kind::App);
    img.manifest.min_version = Some("1.5.0".into());
    one_terminal(
        &device_sees(&ann("c", &img)),
        StatusState::Failed,
        Some(ErrorCode::MinVersion),
    );
    img.manifest.min_version = Some("1.2.0".into());
    assert_eq!(
        device_sees(&ann("c", &img)).published()[0].state,
        StatusState::Accepted
    );
}

#[test]
fn no_space_before_downloading() {
    let img = TestImage::new(
        "big",
        Kind::App,
        "main",
        "1.3.0",
        "esp32",
        pattern_image(3 << 20, 1),
        65536,
    )
    .unwrap();
    one_terminal(
        &device_sees(&ann("c", &img)),
        StatusState::Failed,
        Some(ErrorCode::NoSpace),
    );
}

#[test]
fn accepted_once_with_the_installed_versions() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = device_sees(&ann("c", &img));
    d.announce("g1", &ann("c", &img));
    let s = d.published();
    assert_eq!(
        s.iter()
            .filter(|s| s.state == StatusState::Accepted)
            .count(),
        1
    );
    assert_eq!(s[0].versions, versions("1.2.0"));
    assert_eq!(s[0].campaign.as_ref().unwrap().as_str(), "c");
}
