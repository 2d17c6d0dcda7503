//! Steps 0, 4 and 5: who takes part, deferral, emergencies, the queue,
//! paused, aborted and gone.

use super::*;
use crate::agent::policy::BusyFor;
use crate::agent::TimerId;
use schemas::CampaignId;

fn artifact_topic(img: &TestImage) -> Topic {
    Topic::ArtifactBlocks(img.manifest.artifact.clone())
}

#[test]
fn cohort_admits_by_bucket() {
    // bucket("camp-2026-001", "dev-0001") = 7170 (PROTOCOL.md test vector).
    let img = image("fw", "1.3.0", Kind::App);
    let mut a = ann("camp-2026-001", &img);
    let mut d = Dev::new();
    d.online();
    d.join(&["g1"]);
    a.cohort = 7170;
    d.announce("g1", &a);
    assert!(
        d.published().is_empty(),
        "bucket 7170 is not below cohort 7170"
    );
    a.cohort = 7171;
    d.announce("g1", &a);
    assert_eq!(
        d.states(),
        [StatusState::Accepted, StatusState::Downloading]
    );
    // Emergency admits whatever the cohort.
    let mut e = ann("camp-2026-002", &image("fw2", "1.4.0", Kind::App));
    e.cohort = 0;
    e.emergency = true;
    d.announce_on(Topic::Emergency, Some(&e));
    assert!(
        d.states()
            .iter()
            .filter(|s| **s == StatusState::Accepted)
            .count()
            == 2
    );
}

#[test]
fn not_active_or_not_followed_means_nothing() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = Dev::new();
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &paused(ann("c", &img)));
    d.announce("g1", &with_state(ann("c2", &img), CampaignState::Aborted));
    // A group it is not in.
    d.announce("g9", &ann("c3", &img));
    assert!(d.published().is_empty());
    assert!(d.requests().is_empty());
}

#[test]
fn several_groups_any_admits_and_last_received_state_wins() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = Dev::new();
    d.online();
    d.join(&["g1", "g2"]);
    let mut low = ann("camp-2026-001", &img);
    low.cohort = 0;
    d.announce("g1", &low);
    assert!(d.published().is_empty());
    d.announce("g2", &ann("camp-2026-001", &img));
    assert_eq!(d.states()[0], StatusState::Accepted);
    let t = artifact_topic(&img);
    assert!(d.subscribed_to(&t));
    // g1 now says paused, received last: the campaign stops.
    let mut p = paused(ann("camp-2026-001", &img));
    p.cohort = 0;
    d.announce("g1", &p);
    assert!(!d.subscribed_to(&t));
    // g2 says active again, received last: it continues.
    d.announce("g2", &ann("camp-2026-001", &img));
    assert!(d.subscribed_to(&t));
    // Leaving g2: g1 holds a cohort of 0, which does not admit: stopped.
    d.join(&["g1"]);
    assert!(!d.subscribed_to(&t));
    assert!(d
        .log
        .contains(&Action::Unsubscribe(Topic::GroupCampaign(group("g2")))));
    // No Status for stopping.
    assert_eq!(
        d.states(),
        [StatusState::Accepted, StatusState::Downloading]
    );
}

#[test]
fn deferral_reports_once_and_looks_again_on_its_own_timer() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = Dev::with(config("dev-0001"), Box::new(BusyFor::new(2, 60_000)));
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("c", &img));
    assert_eq!(d.states(), [StatusState::Accepted, StatusState::Deferred]);
    assert!(d.requests().is_empty());
    let relook = Action::SetTimer {
        id: TimerId::Relook(CampaignId::new("c").unwrap()),
        at_ms: d.now + 60_000,
    };
    assert!(d.log.contains(&relook));
    // Too early: nothing.
    d.advance(30_000);
    d.ev(Event::Timer(TimerId::Relook(CampaignId::new("c").unwrap())));
    assert!(d.requests().is_empty());
    // Busy again: put off again, without a second `deferred`.
    d.advance(30_000);
    d.ev(Event::Timer(TimerId::Relook(CampaignId::new("c").unwrap())));
    assert!(d.requests().is_empty());
    // Then it goes ahead, with no new announcement.
    d.advance(60_000);
    d.ev(Event::Timer(TimerId::Relook(CampaignId::new("c").unwrap())));
    assert_eq!(
        d.states(),
        [
            StatusState::Accepted,
            StatusState::Deferred,
            StatusState::Downloading
        ]
    );
    assert_eq!(d.requests().len(), 1);
}

#[test]
fn deferral_survives_a_restart() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = Dev::with(config("dev-0001"), Box::new(BusyFor::new(1, 60_000)));
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("c", &img));
    d.restart(Box::new(NeverDefer));
    // Start re-arms the look-again timer kept in the state.
    assert!(d.log.iter().any(|a| matches!(
        a,
        Action::SetTimer {
            id: TimerId::Relook(_),
            ..
        }
    )));
}

#[test]
fn an_emergency_is_never_deferred() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = Dev::with(config("dev-0001"), Box::new(BusyFor::new(5, 60_000)));
    d.online();
    let mut e = ann("e", &img);
    e.emergency = true;
    d.announce_on(Topic::Emergency, Some(&e));
    assert_eq!(
        d.states(),
        [StatusState::Accepted, StatusState::Downloading]
    );
    assert_eq!(d.requests().len(), 1);
}

#[test]
fn an_emergency_pre_empts_and_the_other_download_continues_with_its_blocks() {
    let a_img = image_of("fw-a", Kind::App, "main", "1.3.0", 5, 1);
    let e_img = image_of("cfg-e", Kind::Config, "main", "1.3.1", 2, 2);
    let mut d = downloading(&a_img);
    d.blocks(&a_img, 0..2);
    let mut e = ann("e", &e_img);
    e.emergency = true;
    e.kind = Kind::Config;
    d.clear();
    d.join(&["g1", "g2"]);
    d.ev(Event::Announcement {
        topic: Topic::GroupEmergency(group("g2")),
        payload: Some(e),
    });
    assert!(!d.subscribed_to(&artifact_topic(&a_img)));
    assert!(d.subscribed_to(&artifact_topic(&e_img)));
    // While the emergency runs, blocks of the other are not taken.
    assert!(stored(&d.ev(Event::Block(block_of(&a_img, 2)))).is_empty());
    d.blocks(&e_img, 0..2);
    d.checked(&e_img);
    d.clear();
    d.ev(Event::InstallDone {
        campaign: CampaignId::new("e").unwrap(),
        result: Ok(()),
    });
    // 1.3.1 is installed now, above the waiting 1.3.0: superseded.
    assert_eq!(d.states(), [StatusState::Success, StatusState::Cancelled]);
    assert_eq!(d.published()[1].detail.as_deref(), Some("superseded"));
}

#[test]
fn pre_empted_download_resumes_from_its_blocks() {
    let a_img = image_of("fw-a", Kind::App, "main", "1.3.0", 5, 1);
    // The emergency updates another component.
    let e_img = image_of("cfg-e", Kind::Config, "net", "2.0.0", 1, 2);
    let mut cfg = config("dev-0001");
    cfg.room_bytes = None;
    let mut d = Dev::with(cfg, Box::new(NeverDefer));
    // Give the device a second component through a restart with it.
    let mut st = d.agent.state().clone();
    st.versions
        .insert(ComponentName::new("net").unwrap(), "1.0.0".into());
    d.agent = Agent::new(d.cfg.clone(), st, Box::new(NeverDefer), 3);
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("a", &a_img));
    d.blocks(&a_img, 0..2);
    let mut e = announcement("e", Kind::Config, vec![e_img.envelope(&key(1))]).unwrap();
    e.emergency = true;
    d.announce_on(Topic::Emergency, Some(&e));
    d.block(&e_img, 0);
    d.checked(&e_img);
    d.clear();
    d.ev(Event::InstallDone {
        campaign: CampaignId::new("e").unwrap(),
        result: Ok(()),
    });
    assert!(d.subscribed_to(&artifact_topic(&a_img)));
    let r = d.requests();
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].wanted().collect::<Vec<_>>(),
        [2, 3, 4],
        "only the missing blocks"
    );
}

#[test]
fn accepted_campaigns_wait_their_turn_in_accept_order() {
    let a = image_of("fw-a", Kind::App, "main", "1.3.0", 1, 1);
    let b = image_of("fw-b", Kind::App, "main", "1.4.0", 1, 2);
    let mut d = Dev::new();
    d.online();
    d.join(&["g1", "g2"]);
    d.announce("g1", &ann("a", &a));
    d.announce("g2", &ann("b", &b));
    assert!(d.subscribed_to(&artifact_topic(&a)));
    assert!(!d.subscribed_to(&artifact_topic(&b)));
    // Pausing `a` hands the turn to `b`.
    d.announce("g1", &paused(ann("a", &a)));
    assert!(d.subscribed_to(&artifact_topic(&b)));
}

#[test]
fn paused_stops_requests_and_active_continues() {
    let img = image_of("fw", Kind::App, "main", "1.3.0", 4, 1);
    let mut d = downloading(&img);
    d.block(&img, 0);
    d.announce("g1", &paused(ann("camp-1", &img)));
    assert!(!d.subscribed_to(&artifact_topic(&img)));
    d.clear();
    // Quiet spells pass: no requests while paused.
    for _ in 0..5 {
        d.advance(4_000);
        d.ev(Event::Timer(TimerId::Quiet));
    }
    assert!(d.requests().is_empty());
    assert!(d.published().is_empty());
    d.announce("g1", &ann("camp-1", &img));
    assert!(d.subscribed_to(&artifact_topic(&img)));
    assert_eq!(d.requests()[0].wanted().collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn gone_stops_like_paused_without_a_status() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = downloading(&img);
    d.clear();
    d.announce_on(Topic::GroupCampaign(group("g1")), None);
    assert!(!d.subscribed_to(&artifact_topic(&img)));
    assert!(d.published().is_empty());
    d.announce("g1", &ann("camp-1", &img));
    assert!(d.subscribed_to(&artifact_topic(&img)));
    assert!(d.states().iter().all(|s| *s == StatusState::Downloading));
}

#[test]
fn aborted_cancels_before_install_and_not_after() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = downloading(&img);
    d.block(&img, 0);
    d.announce(
        "g1",
        &with_state(ann("camp-1", &img), CampaignState::Aborted),
    );
    assert_eq!(d.states().last(), Some(&StatusState::Cancelled));
    assert!(d.log.iter().any(|a| matches!(a, Action::DropBlocks { .. })));
    // Once, across a restart too.
    d.announce("g1", &ann("camp-1", &img));
    d.restart(Box::new(NeverDefer));
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("camp-1", &img));
    assert!(d.queued().is_empty());

    // Installing already: the abort is ignored, the install finishes.
    let mut d = downloading(&img);
    d.blocks(&img, 0..3);
    d.checked(&img);
    d.announce(
        "g1",
        &with_state(ann("camp-1", &img), CampaignState::Aborted),
    );
    assert!(!d.states().contains(&StatusState::Cancelled));
    d.ev(Event::InstallDone {
        campaign: CampaignId::new("camp-1").unwrap(),
        result: Ok(()),
    });
    assert_eq!(d.states().last(), Some(&StatusState::Success));
}

#[test]
fn aborted_deferred_campaign_is_cancelled() {
    let img = image("fw", "1.3.0", Kind::App);
    let mut d = Dev::with(config("dev-0001"), Box::new(BusyFor::new(1, 60_000)));
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("c", &img));
    d.announce("g1", &with_state(ann("c", &img), CampaignState::Aborted));
    assert_eq!(
        d.states(),
        [
            StatusState::Accepted,
            StatusState::Deferred,
            StatusState::Cancelled
        ]
    );
}

#[test]
fn a_withdrawn_ended_campaign_may_be_forgotten() {
    let mut arm = image("fw-arm", "1.3.0", Kind::App);
    arm.manifest.arch = "armv7".into();
    let a = announcement("c", Kind::App, vec![arm.envelope(&key(1))]).unwrap();
    let mut d = Dev::new();
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &a);
    assert!(d.agent.state().done.contains("c"));
    d.announce_on(Topic::GroupCampaign(group("g1")), None);
    assert!(!d.agent.state().done.contains("c"));
}
