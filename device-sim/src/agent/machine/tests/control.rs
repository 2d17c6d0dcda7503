//! E2 on the device: with director keys, only what the director key signed
//! for this topic, newer than what it accepted and not expired, becomes an
//! event. Every refusal leaves the device as it was.

use super::*;
use schemas::control::{self, ControlBody, DirectorKeys, Stamp};
use schemas::topic::Topics;

/// The director key of these tests (the release key is `key(1)`).
fn director() -> SigningKey {
    key(7)
}

fn signed_dev() -> Dev {
    let mut cfg = config("dev-0001");
    cfg.directors = Arc::new(DirectorKeys::new([director().verifying_key()]));
    let mut d = Dev::with(cfg, Box::new(NeverDefer));
    d.online();
    d
}

fn raw(t: &Topic) -> String {
    Topics::default().build(t)
}

/// `m` signed by `by` for `topic` with `counter`, valid for an hour from
/// the test clock.
fn signed<M: ControlBody>(m: &M, topic: &Topic, counter: u64, by: &SigningKey) -> Vec<u8> {
    let stamp = Stamp {
        counter,
        issued: T0 / 1000,
        expires: T0 / 1000 + 3600,
    };
    control::sign(m, &raw(topic), stamp, by)
}

impl Dev {
    /// Delivers a payload on `topic` as the I/O loop does: E2's checks,
    /// then the event. `Err(reason)` when it was refused.
    fn deliver(&mut self, topic: &Topic, payload: &[u8]) -> Result<Vec<Action>, &'static str> {
        let ev = self
            .agent
            .admit(self.now, topic.clone(), &raw(topic), payload)
            .map_err(|e| e.code())?;
        Ok(self.ev(ev))
    }
}

fn groups_topic() -> Topic {
    Topic::Groups(DeviceId::new("dev-0001").unwrap())
}

fn g1() -> Topic {
    Topic::GroupCampaign(group("g1"))
}

/// The block topic of the image "fw".
fn fw_blocks() -> Topic {
    Topic::ArtifactBlocks(schemas::ArtifactId::new("fw").unwrap())
}

fn membership(groups: &[&str]) -> Membership {
    Membership {
        groups: groups.iter().map(|g| group(g)).collect(),
    }
}

/// A device in g1 downloading campaign `c` from a signed announcement.
fn downloading() -> (Dev, Announcement) {
    let mut d = signed_dev();
    d.deliver(
        &groups_topic(),
        &signed(&membership(&["g1"]), &groups_topic(), 10, &director()),
    )
    .unwrap();
    let a = ann("c", &image("fw", "1.3.0", Kind::App));
    d.deliver(&g1(), &signed(&a, &g1(), 11, &director()))
        .unwrap();
    assert_eq!(
        d.states(),
        [StatusState::Accepted, StatusState::Downloading]
    );
    (d, a)
}

#[test]
fn a_signed_announcement_is_acted_on_and_its_counter_kept() {
    let (d, _) = downloading();
    assert_eq!(d.agent.state().counters.get(&raw(&g1())), Some(&11));
    assert_eq!(
        d.agent.state().counters.get(&raw(&groups_topic())),
        Some(&10)
    );
    assert!(d.log.iter().any(|a| matches!(a, Action::Persist)));
}

#[test]
fn a_forged_abort_changes_nothing() {
    let (mut d, a) = downloading();
    d.clear();
    let aborted = with_state(a.clone(), CampaignState::Aborted);
    // Unsigned (v1 keys only): missing_auth.
    assert_eq!(d.deliver(&g1(), &aborted.encode()), Err("missing_auth"));
    // Signed by someone else, or by the release key: unknown_key.
    let stranger = key(9);
    assert_eq!(
        d.deliver(&g1(), &signed(&aborted, &g1(), 99, &stranger)),
        Err("unknown_key")
    );
    assert_eq!(
        d.deliver(&g1(), &signed(&aborted, &g1(), 99, &key(1))),
        Err("unknown_key"),
        "a release key never signs control messages"
    );
    // The genuine auth with the outer state rewritten: the body wins.
    let genuine = signed(&a, &g1(), 12, &director());
    let mut forged = schemas::cbor::decode_strict(&genuine, usize::MAX, "t").unwrap();
    if let schemas::cbor::Value::Map(entries) = &mut forged {
        for (k, v) in entries.iter_mut() {
            if k == &schemas::cbor::Value::Text("state".into()) {
                *v = "aborted".into();
            }
        }
    }
    let forged = schemas::cbor::encode(&forged);
    assert!(d.deliver(&g1(), &forged).is_ok());
    assert!(d.published().is_empty(), "no cancelled, nothing at all");
    assert!(
        !d.log
            .iter()
            .any(|a| matches!(a, Action::Unsubscribe(t) if *t == fw_blocks())),
        "the download goes on"
    );
}

#[test]
fn an_announcement_moved_to_another_topic_is_refused() {
    let mut d = signed_dev();
    d.deliver(
        &groups_topic(),
        &signed(&membership(&["g1", "g2"]), &groups_topic(), 10, &director()),
    )
    .unwrap();
    let mut e = ann("c", &image("fw", "1.3.0", Kind::App));
    e.emergency = true;
    let g2 = Topic::GroupCampaign(group("g2"));
    // Signed for g2, replayed on g1, and on the emergency topics.
    let for_g2 = signed(&e, &g2, 11, &director());
    assert_eq!(d.deliver(&g1(), &for_g2), Err("wrong_topic"));
    assert_eq!(d.deliver(&Topic::Emergency, &for_g2), Err("wrong_topic"));
    assert!(d.published().is_empty());
}

#[test]
fn an_older_announcement_replayed_after_a_newer_is_refused_across_a_reboot() {
    let (mut d, a) = downloading();
    let old_paused = signed(&paused(a.clone()), &g1(), 5, &director());
    assert_eq!(d.deliver(&g1(), &old_paused), Err("old_counter"));
    // The same message again (equal counter) is fine.
    assert!(d
        .deliver(&g1(), &signed(&a, &g1(), 11, &director()))
        .is_ok());
    d.restart(Box::new(NeverDefer));
    d.online();
    assert_eq!(d.deliver(&g1(), &old_paused), Err("old_counter"));
    // A newer genuine pause is obeyed.
    d.clear();
    d.deliver(&g1(), &signed(&paused(a.clone()), &g1(), 20, &director()))
        .unwrap();
    assert_eq!(d.agent.state().counters.get(&raw(&g1())), Some(&20));
}

#[test]
fn a_forged_status_ack_makes_the_device_forget_nothing() {
    let (mut d, _) = downloading();
    let ack_topic = Topic::Ack(DeviceId::new("dev-0001").unwrap());
    let held = d.agent.state().outbox.entries.len();
    assert!(held >= 1);
    let last = d.agent.state().outbox.last_used().unwrap();
    let forged = StatusAck { seq: last };
    assert_eq!(d.deliver(&ack_topic, &forged.encode()), Err("missing_auth"));
    assert_eq!(
        d.deliver(&ack_topic, &signed(&forged, &ack_topic, 50, &key(9))),
        Err("unknown_key")
    );
    assert_eq!(d.agent.state().outbox.entries.len(), held);
    // The bridge's ack, even past its expiry (not checked for acks), clears it.
    let old = control::sign(
        &forged,
        &raw(&ack_topic),
        Stamp {
            counter: 50,
            issued: 1,
            expires: 2,
        },
        &director(),
    );
    d.deliver(&ack_topic, &old).unwrap();
    assert_eq!(d.agent.state().outbox.entries.len(), 0);
}

#[test]
fn a_forged_membership_moves_no_device() {
    let mut d = signed_dev();
    let forged = membership(&["attackers"]);
    assert_eq!(
        d.deliver(&groups_topic(), &forged.encode()),
        Err("missing_auth")
    );
    let other = Topic::Groups(DeviceId::new("dev-0002").unwrap());
    assert_eq!(
        d.deliver(&groups_topic(), &signed(&forged, &other, 10, &director())),
        Err("wrong_topic")
    );
    assert!(!d.subscribed_to(&Topic::GroupCampaign(group("attackers"))));
}

#[test]
fn expired_memberships_and_announcements_are_refused() {
    let mut d = signed_dev();
    d.advance(2 * 3600 * 1000);
    assert_eq!(
        d.deliver(
            &groups_topic(),
            &signed(&membership(&["g1"]), &groups_topic(), 10, &director())
        ),
        Err("expired")
    );
    assert!(!d.subscribed_to(&g1()));
    assert!(d.agent.state().counters.is_empty(), "nothing kept");
}

#[test]
fn an_empty_announcement_stops_unsigned_but_starts_nothing() {
    let (mut d, _) = downloading();
    d.deliver(&g1(), &[]).unwrap();
    assert!(!d.subscribed_to(&fw_blocks()));
    // No Status: it stopped like paused.
    assert_eq!(
        d.states(),
        [StatusState::Accepted, StatusState::Downloading]
    );
    // An empty ack is no ack.
    let ack_topic = Topic::Ack(DeviceId::new("dev-0001").unwrap());
    assert_eq!(d.deliver(&ack_topic, &[]), Err("empty ack"));
}

/// Issue 13, item 6: a genuine older release replayed (allow_downgrade
/// false) installs nothing, whether the director signed its announcement
/// or not. The device runs 1.2.0; the release is 1.1.0.
#[test]
fn a_replayed_older_release_is_refused_signed_or_not() {
    let mut d = signed_dev();
    d.deliver(
        &groups_topic(),
        &signed(&membership(&["g1"]), &groups_topic(), 10, &director()),
    )
    .unwrap();
    let old = image("fw", "1.1.0", Kind::App);
    assert!(!old.manifest.allow_downgrade);
    let replay = ann("old", &old);
    // Without the director's signature: refused before it is read.
    assert_eq!(d.deliver(&g1(), &replay.encode()), Err("missing_auth"));
    assert!(d.published().is_empty());
    // Announced with a valid director signature: read, and refused by
    // anti-rollback (the release's own signed allow_downgrade).
    d.deliver(&g1(), &signed(&replay, &g1(), 11, &director()))
        .unwrap();
    let s = d.published();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(
        (s[0].state, s[0].error),
        (StatusState::Failed, Some(ErrorCode::VersionRejected)),
        "{s:?}"
    );
    assert!(
        !d.log
            .iter()
            .any(|a| matches!(a, Action::Subscribe(t) if *t == fw_blocks())),
        "no block of the old image is asked for"
    );
}
