//! One test per refusal of E2, in E2's order, and the order itself.

use super::*;
use crate::cbor::encode;
use crate::msg::CampaignState;
use crate::msg::Kind;
use crate::{CampaignId, GroupName};

const TOPIC: &str = "ota/v1/devices/dev-0001/groups";
const NOW: u64 = 1_790_000_000;

fn director() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn keys() -> DirectorKeys {
    DirectorKeys::new([director().verifying_key()])
}

fn stamp(counter: u64) -> Stamp {
    Stamp {
        counter,
        issued: NOW,
        expires: NOW + 3600,
    }
}

fn membership() -> Membership {
    Membership {
        groups: vec![GroupName::new("canary").unwrap()],
    }
}

fn expect(last: Option<u64>) -> Expect<'static> {
    Expect {
        topic: TOPIC,
        last_counter: last,
        now: Some(NOW),
    }
}

fn check(payload: &[u8]) -> Result<Verified<Membership>, ControlError> {
    verify::<Membership>(payload, expect(Some(10)), &keys())
}

fn code(payload: &[u8]) -> &'static str {
    check(payload).unwrap_err().code()
}

/// A payload whose auth is `auth`, beside the v1 keys.
fn with_auth(auth: Value) -> Vec<u8> {
    let Value::Map(mut entries) = membership().to_value() else {
        unreachable!()
    };
    entries.push((Value::Text("auth".into()), auth));
    encode(&Value::Map(entries))
}

/// A payload whose auth signs `control` (any value) with `key`.
fn signing(control: &Value, key: &SigningKey) -> Vec<u8> {
    with_auth(Value::Bytes(cose::sign(&encode(control), key)))
}

fn control_value(topic: &str, counter: u64, expires: u64, body: Value) -> Value {
    MapBuilder::new()
        .put("topic", topic)
        .put("counter", counter)
        .put("issued", NOW)
        .put("expires", expires)
        .put("body", body)
        .build()
}

#[test]
fn a_signed_message_verifies_and_keeps_its_v1_keys() {
    let payload = sign(&membership(), TOPIC, stamp(11), &director());
    let v = check(&payload).unwrap();
    assert_eq!(v.body, membership());
    assert_eq!(v.stamp, stamp(11));
    // A v1 reader reads the outer keys as before.
    assert_eq!(Membership::decode(&payload).unwrap(), membership());
    // The same message again (an equal counter) is accepted.
    assert!(verify::<Membership>(&payload, expect(Some(11)), &keys()).is_ok());
    // A device that never saw the topic (factory reset) accepts it.
    assert!(verify::<Membership>(&payload, expect(None), &keys()).is_ok());
}

#[test]
fn missing_auth() {
    // Unsigned v1 payload.
    assert_eq!(code(&membership().encode()), "missing_auth");
    // Not CBOR, trailing bytes, a duplicate key, not a map, empty.
    let signed = sign(&membership(), TOPIC, stamp(11), &director());
    let mut trailing = signed.clone();
    trailing.push(0);
    let dup = {
        let Value::Map(mut e) = crate::cbor::decode_strict(&signed, usize::MAX, "t").unwrap()
        else {
            unreachable!()
        };
        let auth = e.last().unwrap().clone();
        e.push(auth);
        encode(&Value::Map(e))
    };
    for (what, bytes) in [
        ("not CBOR", vec![0xff]),
        ("trailing", trailing),
        ("duplicate auth", dup),
        ("an array", encode(&Value::Array(vec![]))),
        ("empty", vec![]),
    ] {
        assert_eq!(code(&bytes), "missing_auth", "{what}");
    }
}

#[test]
fn bad_envelope() {
    for (what, auth) in [
        ("auth as text", Value::Text("x".into())),
        ("auth not COSE", Value::Bytes(vec![0x01])),
        (
            "alg -7",
            Value::Bytes(encode(&Value::Array(vec![
                Value::Bytes(vec![0xA1, 0x01, 0x26]),
                Value::Map(vec![]),
                Value::Bytes(vec![]),
                Value::Bytes(vec![0; 64]),
            ]))),
        ),
    ] {
        assert_eq!(code(&with_auth(auth)), "bad_envelope", "{what}");
    }
}

#[test]
fn unknown_key_and_a_release_key_never_verifies_a_control() {
    // Signed by a release key: it names no director key.
    let release = SigningKey::from_bytes(&[0x01; 32]);
    let payload = sign(&membership(), TOPIC, stamp(11), &release);
    assert_eq!(code(&payload), "unknown_key");
    // And with no director key at all.
    let none = DirectorKeys::default();
    assert_eq!(
        verify::<Membership>(&payload, expect(None), &none)
            .unwrap_err()
            .code(),
        "unknown_key"
    );
    // A director key never verifies a manifest: the release trust store
    // does not hold it, and the two sets cannot share a key.
    let env = cose::sign(b"manifest", &director());
    let release_trust = TrustStore::new([release.verifying_key()]);
    assert_eq!(
        cose::verify(&env, &release_trust),
        Err(CoseError::UnknownKey)
    );
    let shared = TrustStore::new([director().verifying_key()]);
    let e = DirectorKeys::apart_from([director().verifying_key()], &shared).unwrap_err();
    assert!(e.to_string().contains("never a release key"), "{e}");
    assert!(DirectorKeys::apart_from([director().verifying_key()], &release_trust).is_ok());
}

#[test]
fn bad_signature() {
    let payload = sign(&membership(), TOPIC, stamp(11), &director());
    // Flip the last byte of the signature inside auth.
    let Value::Map(mut e) = crate::cbor::decode_strict(&payload, usize::MAX, "t").unwrap() else {
        unreachable!()
    };
    if let (_, Value::Bytes(auth)) = e.last_mut().unwrap() {
        let n = auth.len();
        auth[n - 1] ^= 1;
    }
    assert_eq!(code(&encode(&Value::Map(e))), "bad_signature");
}

#[test]
fn bad_control() {
    let body = membership().to_value();
    let cases = [
        ("not a map", Value::Array(vec![])),
        (
            "no counter",
            Value::Map(vec![
                (Value::Text("topic".into()), Value::Text(TOPIC.into())),
                (Value::Text("issued".into()), NOW.into()),
                (Value::Text("expires".into()), (NOW + 1).into()),
                (Value::Text("body".into()), body.clone()),
            ]),
        ),
        (
            "body as bytes",
            control_value(TOPIC, 11, NOW + 10, Value::Bytes(vec![1])),
        ),
        (
            "counter negative",
            Value::Map(vec![
                (Value::Text("topic".into()), Value::Text(TOPIC.into())),
                (Value::Text("counter".into()), (-1).into()),
                (Value::Text("issued".into()), NOW.into()),
                (Value::Text("expires".into()), (NOW + 1).into()),
                (Value::Text("body".into()), body.clone()),
            ]),
        ),
    ];
    for (what, control) in cases {
        assert_eq!(
            code(&signing(&control, &director())),
            "bad_control",
            "{what}"
        );
    }
    // A duplicate key inside the signed Control.
    let Value::Map(mut e) = control_value(TOPIC, 11, NOW + 10, body) else {
        unreachable!()
    };
    e.push((Value::Text("counter".into()), 99.into()));
    assert_eq!(code(&signing(&Value::Map(e), &director())), "bad_control");
}

#[test]
fn wrong_topic() {
    let other = "ota/v1/devices/dev-0002/groups";
    let payload = sign(&membership(), other, stamp(11), &director());
    let e = check(&payload).unwrap_err();
    assert_eq!(e.code(), "wrong_topic");
    assert!(e.to_string().contains("dev-0002"), "{e}");
}

#[test]
fn old_counter() {
    let payload = sign(&membership(), TOPIC, stamp(9), &director());
    assert_eq!(
        check(&payload).unwrap_err(),
        ControlError::OldCounter {
            counter: 9,
            last: 10
        }
    );
}

#[test]
fn expired_for_memberships_and_announcements_only() {
    let old = Stamp {
        counter: 11,
        issued: NOW - 100,
        expires: NOW,
    };
    let payload = sign(&membership(), TOPIC, old, &director());
    assert_eq!(code(&payload), "expired");
    // Without a clock, expiry is not checked.
    let no_clock = Expect {
        now: None,
        ..expect(Some(10))
    };
    assert!(verify::<Membership>(&payload, no_clock, &keys()).is_ok());
    // A StatusAck's expires is not checked.
    let ack_topic = "ota/v1/devices/dev-0001/ack";
    let ack = sign(&StatusAck { seq: 5 }, ack_topic, old, &director());
    let e = Expect {
        topic: ack_topic,
        ..expect(Some(10))
    };
    assert_eq!(
        verify::<StatusAck>(&ack, e, &keys()).unwrap().body,
        StatusAck { seq: 5 }
    );
    // An announcement is checked.
    let ann_topic = "ota/v1/groups/canary/campaign";
    let a = Announcement {
        campaign: CampaignId::new("c1").unwrap(),
        kind: Kind::Firmware,
        release: vec![vec![0x84]],
        cohort: 100,
        emergency: false,
        state: CampaignState::Active,
        deadline: None,
        deltas: Vec::new(),
    };
    let signed = sign(&a, ann_topic, old, &director());
    let e = Expect {
        topic: ann_topic,
        ..expect(None)
    };
    assert_eq!(
        verify::<Announcement>(&signed, e, &keys())
            .unwrap_err()
            .code(),
        "expired"
    );
    // issued in the future is not checked.
    let ahead = Stamp {
        counter: 11,
        issued: NOW + 10_000,
        expires: NOW + 20_000,
    };
    assert!(check(&sign(&membership(), TOPIC, ahead, &director())).is_ok());
}

#[test]
fn bad_body() {
    let bad_group = Value::Map(vec![(
        Value::Text("groups".into()),
        Value::Array(vec![Value::Text("a/b".into())]),
    )]);
    let control = control_value(TOPIC, 11, NOW + 10, bad_group);
    assert_eq!(code(&signing(&control, &director())), "bad_body");
    // An Announcement's body on a Membership topic is not a Membership.
    let wrong_kind = control_value(
        TOPIC,
        11,
        NOW + 10,
        Value::Map(vec![(Value::Text("seq".into()), 1.into())]),
    );
    assert_eq!(code(&signing(&wrong_kind, &director())), "bad_body");
    // An auth inside body is ignored.
    let Value::Map(mut body) = membership().to_value() else {
        unreachable!()
    };
    body.push((Value::Text("auth".into()), Value::Text("junk".into())));
    let nested = control_value(TOPIC, 11, NOW + 10, Value::Map(body));
    assert_eq!(
        check(&signing(&nested, &director())).unwrap().body,
        membership()
    );
}

#[test]
fn the_body_not_the_outer_keys_is_what_counts() {
    // Outer keys rewritten by a forger, auth kept: the signed body wins.
    let payload = sign(&membership(), TOPIC, stamp(11), &director());
    let Value::Map(mut e) = crate::cbor::decode_strict(&payload, usize::MAX, "t").unwrap() else {
        unreachable!()
    };
    e[0].1 = Value::Array(vec![Value::Text("attacker".into())]);
    let forged = encode(&Value::Map(e));
    assert_eq!(
        Membership::decode(&forged).unwrap().groups[0].as_str(),
        "attacker"
    );
    assert_eq!(check(&forged).unwrap().body, membership());
}

#[test]
fn checks_run_in_the_order_of_e2() {
    // Wrong topic, old counter, expired and bad body at once: wrong_topic.
    let bad_group = Value::Map(vec![(
        Value::Text("groups".into()),
        Value::Array(vec![Value::Text("a/b".into())]),
    )]);
    let all = control_value("ota/v1/elsewhere", 1, NOW - 1, bad_group.clone());
    assert_eq!(code(&signing(&all, &director())), "wrong_topic");
    // Old counter, expired, bad body: old_counter.
    let c = control_value(TOPIC, 1, NOW - 1, bad_group.clone());
    assert_eq!(code(&signing(&c, &director())), "old_counter");
    // Expired and bad body: expired.
    let c = control_value(TOPIC, 11, NOW - 1, bad_group.clone());
    assert_eq!(code(&signing(&c, &director())), "expired");
    // Everything wrong but signed by a stranger: unknown_key first.
    let stranger = SigningKey::from_bytes(&[9; 32]);
    assert_eq!(code(&signing(&all, &stranger)), "unknown_key");
    // A Control that does not decode, from a stranger: unknown_key.
    assert_eq!(
        code(&signing(&Value::Array(vec![]), &stranger)),
        "unknown_key"
    );
    assert_eq!(ControlError::CODES.len(), 9);
}

#[test]
fn counters_move_forward() {
    assert_eq!(next_counter(0, 1_790_000_000_000), 1_790_000_000_000);
    assert_eq!(next_counter(1_790_000_000_000, 5), 1_790_000_000_001);
    assert_eq!(next_counter(u64::MAX, 0), u64::MAX);
}
