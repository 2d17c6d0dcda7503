//! E1's table, row by row, against [`Identity`].

use broker::{Authority, ConnectVerdict, Login};
use schemas::msg::{Membership, WireMessage};
use schemas::provisioning::{generate_password, hash_password};
use schemas::topic::{Filter, Topic, Topics};
use schemas::{GroupName, RequestId};

use super::authority::{Admission, Identity, IdentityConfig, APPLY_WAIT};
use super::refusals::Refused;
use super::store::{CredentialRecord, Standing};
use crate::testutil::device as dev;

struct Fixture {
    id: Identity,
    pw1: String,
    t: Topics,
}

fn record(id: &str, pw: &str, standing: Standing) -> CredentialRecord {
    CredentialRecord::new(dev(id), pw, standing, 1)
}

fn fixture(admission: Admission) -> Fixture {
    let pw1 = generate_password();
    let config = IdentityConfig {
        topics: Topics::default(),
        bridge_client_id: "ota-bridge".into(),
        bridge_login: Some(("bridge".into(), "bridge-pw".into())),
        operators: [("alice".to_string(), "alice-pw".to_string())].into(),
        admission,
        registrations_per_minute: 0,
    };
    let id = Identity::new(
        config,
        &[
            record("dev-1", &pw1, Standing::Active),
            record("dev-2", "pw2", Standing::Active),
            record("dev-p", "pwp", Standing::Pending),
            record("dev-r", "pwr", Standing::Revoked),
        ],
    );
    Fixture {
        id,
        pw1,
        t: Topics::default(),
    }
}

fn pw<'a>(username: &'a str, password: &'a str) -> Login<'a> {
    Login::Password { username, password }
}

#[test]
fn devices_log_in_as_themselves_only() {
    let f = fixture(Admission::Provisioned);
    let a = &f.id;
    assert_eq!(
        a.connect("dev-1", pw("dev-1", &f.pw1)),
        ConnectVerdict::Accept
    );
    // Another device's id, with its own password or the victim's name.
    assert!(matches!(
        a.connect("dev-2", pw("dev-1", &f.pw1)),
        ConnectVerdict::Refuse("client_id_mismatch")
    ));
    assert!(matches!(
        a.connect("dev-2", pw("dev-2", &f.pw1)),
        ConnectVerdict::Refuse("bad_credentials")
    ));
    assert!(matches!(
        a.connect("dev-1", pw("dev-1", "")),
        ConnectVerdict::Refuse(_)
    ));
    // Unprovisioned, revoked.
    assert!(matches!(
        a.connect("dev-9", pw("dev-9", "x")),
        ConnectVerdict::Refuse("bad_credentials")
    ));
    assert!(matches!(
        a.connect("dev-r", pw("dev-r", "pwr")),
        ConnectVerdict::Refuse("revoked")
    ));
    // Pending devices log in.
    assert_eq!(
        a.connect("dev-p", pw("dev-p", "pwp")),
        ConnectVerdict::Accept
    );
    assert_eq!(a.refusals().get(Refused::Revoked), 1);
    assert_eq!(a.refusals().get(Refused::BadCredentials), 3);
}

fn cert<'a>(common_name: &'a str, fingerprint: &'a str) -> Login<'a> {
    Login::Certificate {
        common_name,
        fingerprint,
    }
}

#[test]
fn certificates_name_the_client_id() {
    let f = fixture(Admission::Provisioned);
    let a = &f.id;
    assert_eq!(
        a.connect("dev-1", cert("dev-1", "f1")),
        ConnectVerdict::Accept
    );
    assert!(matches!(
        a.connect("dev-2", cert("dev-1", "f1")),
        ConnectVerdict::Refuse("client_id_mismatch")
    ));
    assert!(matches!(
        a.connect("dev-r", cert("dev-r", "fr")),
        ConnectVerdict::Refuse("revoked")
    ));
    assert!(matches!(
        a.connect("ota-bridge", cert("ota-bridge", "fb")),
        ConnectVerdict::Refuse(_)
    ));
    // Not provisioned: a certificate from the fleet CA is not enough.
    assert!(matches!(
        a.connect("dev-9", cert("dev-9", "f9")),
        ConnectVerdict::Refuse("bad_credentials")
    ));
}

#[test]
fn over_mutual_tls_only_accounts_log_in_by_password() {
    let f = fixture(Admission::Provisioned);
    let a = &f.id;
    let with_cert = |username, password| Login::PasswordWithCertificate {
        username,
        password,
        common_name: "dev-2",
        fingerprint: "f2",
    };
    assert_eq!(
        a.connect("ota-cli-x1", with_cert("alice", "alice-pw")),
        ConnectVerdict::Accept
    );
    assert!(matches!(
        a.connect("ota-cli-x1", with_cert("alice", "wrong")),
        ConnectVerdict::Refuse("bad_credentials")
    ));
    // dev-2's certificate with dev-1's password: a device's username must
    // be its certificate's CN.
    assert!(matches!(
        a.connect("dev-1", with_cert("dev-1", &f.pw1)),
        ConnectVerdict::Refuse("client_id_mismatch")
    ));
}

#[test]
fn a_retired_certificate_is_refused_and_a_new_one_is_not() {
    let f = fixture(Admission::Provisioned);
    let a = &f.id;
    // dev-2 rotated from certificate "old" to "new".
    let mut r = record("dev-2", "pw2", Standing::Active);
    r.cert_sha256 = Some("old".into());
    r.retire_cert();
    r.cert_sha256 = Some("new".into());
    a.upsert(&r);
    assert!(a.cert_revoked("old"));
    assert!(matches!(
        a.connect("dev-2", cert("dev-2", "old")),
        ConnectVerdict::Refuse("certificate_revoked")
    ));
    assert_eq!(
        a.connect("dev-2", cert("dev-2", "new")),
        ConnectVerdict::Accept
    );
    // A revoked certificate is refused for an account's login too.
    let alice = Login::PasswordWithCertificate {
        username: "alice",
        password: "alice-pw",
        common_name: "dev-2",
        fingerprint: "old",
    };
    assert!(matches!(
        a.connect("ota-cli-x1", alice),
        ConnectVerdict::Refuse("certificate_revoked")
    ));
    assert_eq!(a.refusals().get(Refused::CertificateRevoked), 2);
    // The password login is untouched.
    assert_eq!(
        a.connect("dev-2", pw("dev-2", "pw2")),
        ConnectVerdict::Accept
    );
}

#[test]
fn the_bridge_and_operators_are_reserved() {
    let f = fixture(Admission::Provisioned);
    let a = &f.id;
    assert_eq!(
        a.connect("ota-bridge", pw("bridge", "bridge-pw")),
        ConnectVerdict::Accept
    );
    assert_eq!(
        a.connect("ota-bridge-out", pw("bridge", "bridge-pw")),
        ConnectVerdict::Accept
    );
    assert_eq!(
        a.connect("ota-cli-x1", pw("alice", "alice-pw")),
        ConnectVerdict::Accept
    );
    assert_eq!(
        a.connect("ota-cli-x2", pw("bridge", "bridge-pw")),
        ConnectVerdict::Accept
    );
    // No takeover of the bridge's session without its password, with a
    // device's login or an operator's.
    assert!(matches!(
        a.connect("ota-bridge", pw("bridge", "guess")),
        ConnectVerdict::Refuse(_)
    ));
    assert!(matches!(
        a.connect("ota-bridge", pw("dev-1", &f.pw1)),
        ConnectVerdict::Refuse(_)
    ));
    assert!(matches!(
        a.connect("ota-bridge", pw("ota-bridge", "x")),
        ConnectVerdict::Refuse("reserved_client_id")
    ));
    assert!(matches!(
        a.connect("ota-bridge", pw("alice", "alice-pw")),
        ConnectVerdict::Refuse("client_id_mismatch")
    ));
    assert!(matches!(
        a.connect("ota-cli-x", pw("alice", "nope")),
        ConnectVerdict::Refuse(_)
    ));
    assert!(matches!(
        a.connect("ota-cli-x", pw("dev-1", &f.pw1)),
        ConnectVerdict::Refuse(_)
    ));
    // The bridge's account is not a device's.
    assert!(matches!(
        a.connect("dev-1", pw("bridge", "bridge-pw")),
        ConnectVerdict::Refuse(_)
    ));
    for name in [
        "ota-bridge",
        "ota-bridge-out",
        "ota-cli-1",
        "alice",
        "bridge",
    ] {
        assert!(a.is_reserved(name), "{name}");
    }
    assert!(!a.is_reserved("dev-1"));
}

#[test]
fn device_publishes_follow_the_table() {
    let f = fixture(Admission::Provisioned);
    let (a, t) = (&f.id, &f.t);
    let d1 = dev("dev-1");
    for ok in [
        Topic::Hello(d1.clone()),
        Topic::Presence(d1.clone()),
        Topic::Request(d1.clone()),
        Topic::Status(d1.clone()),
    ] {
        assert!(a.may_publish("dev-1", &t.build(&ok)), "{ok:?}");
    }
    let d2 = dev("dev-2");
    let g = GroupName::new("acme").unwrap();
    for bad in [
        Topic::Status(d2.clone()),
        Topic::Hello(d2.clone()),
        Topic::Groups(d1.clone()),
        Topic::Ack(d1.clone()),
        Topic::GroupCampaign(g.clone()),
        Topic::GroupEmergency(g),
        Topic::Emergency,
        Topic::OpsCommands,
        Topic::OpsEvents,
        Topic::OpsReply(RequestId::new("r1").unwrap()),
    ] {
        assert!(!a.may_publish("dev-1", &t.build(&bad)), "{bad:?}");
    }
    assert!(!a.may_publish("dev-1", "elsewhere/x"));
    assert!(!a.may_publish("dev-1", "ota/v1/devices/dev-1/other"));
    // Pending: Hello and Presence only. Revoked: nothing.
    assert!(a.may_publish("dev-p", &t.build(&Topic::Hello(dev("dev-p")))));
    assert!(!a.may_publish("dev-p", &t.build(&Topic::Status(dev("dev-p")))));
    assert!(!a.may_publish("dev-r", &t.build(&Topic::Hello(dev("dev-r")))));
    // Unprovisioned ids publish nothing (they cannot log in anyway).
    assert!(!a.may_publish("dev-9", &t.build(&Topic::Hello(dev("dev-9")))));
    assert!(a.refusals().get(Refused::Publish) >= 13);
}

#[test]
fn bridge_and_operator_publishes() {
    let f = fixture(Admission::Provisioned);
    let (a, t) = (&f.id, &f.t);
    let d1 = dev("dev-1");
    assert!(a.may_publish("ota-bridge-out", &t.build(&Topic::Groups(d1.clone()))));
    assert!(a.may_publish("ota-bridge-out", &t.build(&Topic::Emergency)));
    assert!(a.may_publish("ota-bridge-out", &t.build(&Topic::OpsEvents)));
    assert!(!a.may_publish("ota-bridge-out", &t.build(&Topic::Status(d1.clone()))));
    assert!(!a.may_publish("ota-bridge-out", &t.build(&Topic::OpsCommands)));
    assert!(a.may_publish("ota-cli-1", &t.build(&Topic::OpsCommands)));
    assert!(!a.may_publish("ota-cli-1", &t.build(&Topic::OpsEvents)));
    assert!(!a.may_publish("ota-cli-1", &t.build(&Topic::Emergency)));
    assert!(!a.may_publish("ota-cli-1", &t.build(&Topic::Hello(d1))));
}

#[test]
fn subscriptions_follow_the_table_and_the_grants() {
    let f = fixture(Admission::Provisioned);
    let (a, t) = (&f.id, &f.t);
    let d1 = dev("dev-1");
    let g = GroupName::new("acme").unwrap();
    for ok in [
        Topic::Groups(d1.clone()),
        Topic::Ack(d1.clone()),
        Topic::DeviceBlocks(d1.clone()),
        Topic::Emergency,
    ] {
        assert!(a.may_subscribe("dev-1", &t.build(&ok)), "{ok:?}");
    }
    for bad in [
        "#",
        "ota/v1/#",
        "ota/v1/ops/#",
        "ota/v1/devices/+/status",
        "ota/v1/devices/dev-2/groups",
        "ota/v1/ops/events",
        "$SYS/#",
        "ota/v1/groups/+/campaign",
    ] {
        assert!(!a.may_subscribe("dev-1", bad), "{bad}");
    }
    let campaign = t.build(&Topic::GroupCampaign(g.clone()));
    assert!(!a.may_subscribe("dev-1", &campaign), "not in the group yet");
    // The grant comes with the Membership, before it is published.
    a.observe(
        &Topic::Groups(d1.clone()),
        &Membership {
            groups: vec![g.clone()],
        }
        .encode(),
    );
    assert!(a.may_subscribe("dev-1", &campaign));
    assert!(a.may_subscribe("dev-1", &t.build(&Topic::GroupEmergency(g.clone()))));
    assert!(!a.may_subscribe("dev-2", &campaign));
    a.observe(&Topic::Groups(d1.clone()), &[]);
    assert!(!a.may_subscribe("dev-1", &campaign), "left the group");
    // Pending: own Membership and acks only.
    assert!(a.may_subscribe("dev-p", &t.build(&Topic::Groups(dev("dev-p")))));
    assert!(!a.may_subscribe("dev-p", &t.build(&Topic::Emergency)));
    // The bridge and operators.
    assert!(a.may_subscribe("ota-bridge", &t.filter(Filter::AllStatus)));
    assert!(a.may_subscribe("ota-bridge", &t.filter(Filter::OpsCommands)));
    assert!(!a.may_subscribe("ota-bridge", "#"));
    // The egress link's delivery probe hears the block broadcast.
    assert!(a.may_subscribe("ota-bridge-out", &t.filter(Filter::AllArtifactBlocks)));
    // The bridge watches the retained topics it owns (to repair them);
    // an operator may not.
    for f in [
        Filter::AllMemberships,
        Filter::AllAcks,
        Filter::AllGroupCampaigns,
        Filter::AllGroupEmergencies,
        Filter::Emergency,
    ] {
        assert!(a.may_subscribe("ota-bridge", &t.filter(f)), "{f:?}");
        assert!(!a.may_subscribe("ota-cli-1", &t.filter(f)), "{f:?}");
    }
    assert!(!a.may_subscribe("ota-cli-1", &t.filter(Filter::AllArtifactBlocks)));
    assert!(a.may_subscribe("ota-cli-1", &t.filter(Filter::OpsEvents)));
    assert!(a.may_subscribe(
        "ota-cli-1",
        &t.build(&Topic::OpsReply(RequestId::new("r1").unwrap()))
    ));
    assert!(!a.may_subscribe("ota-cli-1", &t.filter(Filter::OpsCommands)));
    assert!(!a.may_subscribe("ota-cli-1", &t.filter(Filter::AllStatus)));
    assert!(!a.may_subscribe("ota-cli-1", "ota/v1/ops/#"));
}

#[test]
fn open_admission_is_version_one() {
    let f = fixture(Admission::Open);
    let (a, t) = (&f.id, &f.t);
    assert_eq!(a.connect("dev-9", pw("dev-9", "x")), ConnectVerdict::Accept);
    assert!(a.may_publish("dev-9", &t.build(&Topic::Status(dev("dev-9")))));
    // Still only its own topics, and provisioned devices keep their password.
    assert!(!a.may_publish("dev-9", &t.build(&Topic::Status(dev("dev-1")))));
    assert!(matches!(
        a.connect("dev-1", pw("dev-1", "x")),
        ConnectVerdict::Refuse(_)
    ));
    assert!(a.takes_part(&dev("dev-9")));
    assert!(!a.takes_part(&dev("dev-r")));
}

#[test]
fn revoking_in_memory_takes_effect_at_once() {
    let f = fixture(Admission::Provisioned);
    let a = &f.id;
    assert_eq!(
        a.connect("dev-1", pw("dev-1", &f.pw1)),
        ConnectVerdict::Accept
    );
    let mut r = record("dev-1", "unused", Standing::Revoked);
    r.hash = hash_password(&f.pw1);
    a.upsert(&r);
    assert!(matches!(
        a.connect("dev-1", pw("dev-1", &f.pw1)),
        ConnectVerdict::Refuse("revoked")
    ));
    assert!(!a.may_publish("dev-1", &f.t.build(&Topic::Status(dev("dev-1")))));
}

/// An external broker's copy (Mosquitto's files): `applied` waits for the
/// sync to report the latest change, not before, and never while the sync
/// is failing or when there is none.
#[tokio::test]
async fn applied_waits_for_the_external_copy_of_the_latest_change() {
    use std::time::Duration;
    let f = fixture(Admission::Provisioned);
    let a = &f.id;
    let short = Duration::from_millis(200);
    tokio::time::timeout(short, a.applied())
        .await
        .expect("no external copy: at once");
    let changes = a.follow_changes();
    a.upsert(&record("dev-7", "pw7", Standing::Active));
    let latest = *changes.borrow();
    a.mark_applied(latest - 1);
    assert!(
        tokio::time::timeout(short, a.applied()).await.is_err(),
        "returned before the latest change was applied"
    );
    a.mark_applied(latest);
    tokio::time::timeout(short, a.applied())
        .await
        .expect("the latest change is applied");
    // A grant that does not change anything is no change.
    let member = schemas::msg::Membership { groups: vec![] }.encode();
    a.observe(&Topic::Groups(dev("dev-7")), &member);
    assert_eq!(*changes.borrow(), latest);
    // A failing sync holds nothing up.
    a.upsert(&record("dev-8", "pw8", Standing::Active));
    a.mark_failing();
    tokio::time::timeout(short, a.applied())
        .await
        .expect("a failing sync is not waited for");
}

/// The wait for an external copy grows with the sync's cycle (large files
/// take a longer window and rewrite): a reply is not sent before the files
/// could have been written.
#[test]
fn the_wait_for_the_external_copy_grows_with_the_syncs_cycle() {
    use std::time::Duration;
    let f = fixture(Admission::Provisioned);
    assert_eq!(f.id.apply_wait(), APPLY_WAIT);
    f.id.set_sync_cycle(Duration::from_secs(20));
    assert_eq!(f.id.apply_wait(), APPLY_WAIT + Duration::from_secs(40));
}

/// `[devices] admission = "enroll"` with token `tok` and a bound of
/// `per_minute` enrollments.
fn enrolling(per_minute: u32) -> Identity {
    let config = IdentityConfig {
        topics: Topics::default(),
        bridge_client_id: "ota-bridge".into(),
        bridge_login: Some(("bridge".into(), "bridge-pw".into())),
        operators: [("alice".to_string(), "alice-pw".to_string())].into(),
        admission: Admission::Enroll {
            token: schemas::provisioning::PasswordHash::parse(&hash_password("tok")).unwrap(),
        },
        registrations_per_minute: per_minute,
    };
    Identity::new(
        config,
        &[record(
            "dev-1",
            "pw1-0123456789abcdef0123456789abcdef",
            Standing::Active,
        )],
    )
}

const SECRET: &str = "s-0123456789abcdef0123456789abcdef";

#[test]
fn the_enrollment_token_enrolls_unknown_ids_as_pending_and_binds_their_secret() {
    let a = enrolling(0);
    let t = Topics::default();
    let login = |secret: &str| format!("tok:{secret}");
    assert!(matches!(
        a.connect("new-1", pw("new-1", &format!("nope:{SECRET}"))),
        ConnectVerdict::Refuse("bad_credentials")
    ));
    assert!(matches!(
        a.connect("new-1", pw("new-1", &login("short"))),
        ConnectVerdict::Refuse("bad_credentials")
    ));
    assert!(a.take_enrolled().is_empty());
    assert_eq!(
        a.connect("new-1", pw("new-1", &login(SECRET))),
        ConnectVerdict::Accept
    );
    assert_eq!(a.standing(&dev("new-1")), Some(Standing::Pending));
    let stored = a.take_enrolled();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].hash, SECRET, "the secret itself is never kept");
    assert!(!stored[0].hash.contains("tok"));
    // Bound: the token with another secret is refused; its own secret,
    // with or without the token, logs in.
    assert!(matches!(
        a.connect(
            "new-1",
            pw("new-1", &login("t-0123456789abcdef0123456789abcdef"))
        ),
        ConnectVerdict::Refuse("bad_credentials")
    ));
    assert_eq!(
        a.connect("new-1", pw("new-1", &login(SECRET))),
        ConnectVerdict::Accept
    );
    assert_eq!(
        a.connect("new-1", pw("new-1", SECRET)),
        ConnectVerdict::Accept
    );
    assert!(a.take_enrolled().is_empty(), "enrolled once");
    assert_eq!(a.pending(), vec![dev("new-1")]);
    // Pending: Hello and Presence, its own Membership; nothing else.
    assert!(a.may_publish("new-1", &t.build(&Topic::Hello(dev("new-1")))));
    assert!(!a.may_publish("new-1", &t.build(&Topic::Status(dev("new-1")))));
    assert!(!a.may_publish("new-1", &t.build(&Topic::Request(dev("new-1")))));
    assert!(a.may_subscribe("new-1", &t.build(&Topic::Groups(dev("new-1")))));
    assert!(!a.may_subscribe("new-1", &t.build(&Topic::Emergency)));
    assert!(!a.takes_part(&dev("new-1")));
    // The token opens no provisioned id, nor the bridge's or operators'.
    for (client, user) in [
        ("dev-1", "dev-1"),
        ("ota-bridge", "ota-bridge"),
        ("ota-bridge-out", "ota-bridge-out"),
        ("ota-bridge", "bridge"),
        ("ota-cli-1", "alice"),
        ("ota-cli-1", "ota-cli-1"),
        ("alice", "alice"),
    ] {
        assert!(
            matches!(
                a.connect(client, pw(user, &login(SECRET))),
                ConnectVerdict::Refuse(_)
            ),
            "{client} as {user}"
        );
    }
    // Rejected: refused, token or not.
    let mut r = stored[0].clone();
    r.standing = Standing::Revoked;
    a.upsert(&r);
    assert!(matches!(
        a.connect("new-1", pw("new-1", &login(SECRET))),
        ConnectVerdict::Refuse("revoked")
    ));
}

#[test]
fn registrations_per_minute_bound_enrollments_not_logins() {
    let a = enrolling(2);
    let login = format!("tok:{SECRET}");
    assert_eq!(
        a.connect("new-1", pw("new-1", &login)),
        ConnectVerdict::Accept
    );
    assert_eq!(
        a.connect("new-2", pw("new-2", &login)),
        ConnectVerdict::Accept
    );
    assert!(matches!(
        a.connect("new-3", pw("new-3", &login)),
        ConnectVerdict::Refuse("registration_rate")
    ));
    assert_eq!(a.refusals().get(Refused::RegistrationRate), 1);
    // Enrolled devices' logins take nothing from the bound.
    for _ in 0..5 {
        assert_eq!(
            a.connect("new-1", pw("new-1", SECRET)),
            ConnectVerdict::Accept
        );
    }
    assert_eq!(a.take_enrolled().len(), 2);
    assert_eq!(a.standing(&dev("new-3")), None);
}
