//! Our encoder's output against the published CDDL (`cddl/ota-v1.cddl`),
//! checked by an independent validator (the `cddl` crate), so the types
//! and the schema device teams read cannot drift apart. Each negative case
//! is refused by both the CDDL and our decoder.
//!
//! Two adaptations to the `cddl` crate (0.9), both faithful to RFC 8610:
//! its `.regexp` is not anchored (RFC 8610 §3.8.3 anchors the XSD regex at
//! both ends), so every `.regexp "X"` is validated here as `"^(?:X)$"`;
//! and the two embedded items of COSE_Sign1 (protected header, payload)
//! are validated against their own rules, since the crate mis-handles
//! `.cbor` inside arrays (see the comment at the top of the CDDL file).

use std::collections::BTreeMap;

use ciborium::value::Value;
use schemas::msg::{
    Announcement, Block, BlockRequest, CampaignState, ErrorCode, Hello, Kind, Manifest, Membership,
    Presence, Status, StatusAck, StatusState, WireMessage,
};
use schemas::{ArtifactId, CampaignId, ComponentName, Epoch, GroupName};

const CDDL: &str = include_str!("../cddl/ota-v1.cddl");

/// The CDDL with every `.regexp "X"` anchored, as RFC 8610 reads it.
fn anchored() -> String {
    const MARK: &str = ".regexp \"";
    let mut out = String::with_capacity(CDDL.len() + 64);
    let mut rest = CDDL;
    while let Some(at) = rest.find(MARK) {
        let start = at + MARK.len();
        let len = rest[start..].find('"').expect("a closed regexp string");
        out.push_str(&rest[..start]);
        out.push_str("^(?:");
        out.push_str(&rest[start..start + len]);
        out.push_str(")$");
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// Validates `bytes` against the CDDL rule `rule`.
fn validate(rule: &str, bytes: &[u8]) -> Result<(), String> {
    let doc = format!("ota-root = {rule}\n{}", anchored());
    cddl::validate_cbor_from_slice(&doc, bytes, None).map_err(|e| e.to_string())
}

#[track_caller]
fn valid(rule: &str, bytes: &[u8]) {
    if let Err(e) = validate(rule, bytes) {
        panic!("{rule} refused our encoding:\n{e}");
    }
}

#[track_caller]
fn invalid(rule: &str, bytes: &[u8]) {
    assert!(
        validate(rule, bytes).is_err(),
        "{rule} accepted what it must refuse: {}",
        hex::encode(bytes)
    );
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

/// `m` re-encoded with `key` set to `value` (or removed, for `None`).
fn with_key(m: &impl WireMessage, key: &str, value: Option<Value>) -> Vec<u8> {
    let Value::Map(mut entries) = m.to_value() else {
        unreachable!()
    };
    entries.retain(|(k, _)| k != &Value::Text(key.into()));
    if let Some(v) = value {
        entries.push((Value::Text(key.into()), v));
    }
    encode(&Value::Map(entries))
}

fn component(s: &str) -> ComponentName {
    ComponentName::new(s).unwrap()
}

fn versions() -> BTreeMap<ComponentName, String> {
    [
        (component("main"), "1.2.0".to_string()),
        (component("ui.app"), "not-semver".to_string()),
    ]
    .into()
}

fn hello() -> Hello {
    Hello {
        proto: 1,
        arch: "esp32".into(),
        versions: versions(),
        labels: [
            ("customer".to_string(), "acme".to_string()),
            ("site".into(), "Lyon 3".into()),
        ]
        .into(),
        boot_id: "b-7f3a".into(),
        epoch: Epoch::new("k3j9x0qa").unwrap(),
        outbox: 17,
        features: Vec::new(),
    }
}

fn status() -> Status {
    Status {
        seq: 1_790_000_000_123,
        campaign: Some(CampaignId::new("camp-2026-001").unwrap()),
        artifact: Some(ArtifactId::new("main-1.3.0-esp32").unwrap()),
        state: StatusState::Failed,
        progress: Some(2),
        error: Some(ErrorCode::HashMismatch),
        detail: Some("sha256 differs".into()),
        versions: versions(),
    }
}

fn manifest(arch: &str) -> Manifest {
    let image: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let mut spec = schemas::release::ReleaseSpec::new(
        Kind::Firmware,
        component("main"),
        "1.3.0-rc.1+b5",
        arch,
        1_790_000_000,
    );
    spec.min_version = Some("1.0.0".into());
    spec.allow_downgrade = true;
    schemas::release::build_manifest(&image, &spec).unwrap()
}

/// A delta manifest of `manifest("esp32")` from 1.2.0 (E3).
fn delta_manifest() -> Manifest {
    let full = manifest("esp32");
    schemas::release::build_delta_manifest(&[0x28; 700], &full, "1.2.0", [0x11; 32], None).unwrap()
}

fn key() -> schemas::keys::SigningKey {
    schemas::keys::SigningKey::from_bytes(&[42; 32])
}

fn announcement() -> Announcement {
    Announcement {
        campaign: CampaignId::new("camp-2026-001").unwrap(),
        kind: Kind::Firmware,
        release: vec![
            schemas::msg::manifest::sign(&manifest("esp32"), &key()),
            schemas::msg::manifest::sign(&manifest("armv7"), &key()),
        ],
        cohort: 1000,
        emergency: false,
        state: CampaignState::Active,
        deadline: Some(1_790_086_400),
        deltas: Vec::new(),
    }
}

#[test]
fn the_cddl_parses() {
    validate("Presence", &Presence { online: true }.encode()).unwrap();
}

#[test]
fn device_messages_match() {
    valid("Hello", &hello().encode());
    let mut bare = hello();
    bare.versions.clear();
    bare.labels.clear();
    valid("Hello", &bare.encode());
    let mut featured = hello();
    featured.features = vec!["delta-zstd".into()];
    valid("Hello", &featured.encode());
    valid("Presence", &Presence { online: true }.encode());
    valid("Presence", &Presence { online: false }.encode());
    valid(
        "BlockRequest",
        &BlockRequest {
            artifact: ArtifactId::new("main-1.3.0-esp32").unwrap(),
            offset: 1024,
            bitmap: vec![0xff; 128],
        }
        .encode(),
    );
    valid("Status", &status().encode());
    for state in StatusState::ALL {
        let s = Status {
            seq: 1,
            campaign: None,
            artifact: None,
            state: *state,
            progress: None,
            error: None,
            detail: None,
            versions: BTreeMap::new(),
        };
        valid("Status", &s.encode());
    }
    for error in ErrorCode::ALL {
        let mut s = status();
        s.error = Some(*error);
        valid("Status", &s.encode());
    }
}

#[test]
fn bridge_messages_match() {
    valid("Membership", &Membership::default().encode());
    valid(
        "Membership",
        &Membership {
            groups: vec![
                GroupName::new("acme").unwrap(),
                GroupName::new("line-3.canary").unwrap(),
            ],
        }
        .encode(),
    );
    valid("StatusAck", &StatusAck { seq: 0 }.encode());
    valid("StatusAck", &StatusAck { seq: u64::MAX }.encode());
    valid("Announcement", &announcement().encode());
    for state in CampaignState::ALL {
        let mut a = announcement();
        a.state = *state;
        a.deadline = None;
        a.emergency = true;
        a.cohort = 10_000;
        valid("Announcement", &a.encode());
    }
    let mut a = announcement();
    a.deltas = vec![schemas::msg::manifest::sign(&delta_manifest(), &key())];
    valid("Announcement", &a.encode());
    let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    valid(
        "Block",
        &Block {
            artifact: ArtifactId::new("main-1.3.0-esp32").unwrap(),
            index: 2,
            data,
            proof: vec![[0xb4; 32], [0x01; 32]],
        }
        .encode(),
    );
}

#[test]
fn signed_manifests_match() {
    for m in [manifest("esp32"), manifest("any"), delta_manifest()] {
        valid("Manifest", &m.encode());
        let envelope = schemas::msg::manifest::sign(&m, &key());
        valid("signed-manifest", &envelope);

        // The embedded items, against their own rules.
        let Value::Tag(18, inner) =
            ciborium::de::from_reader::<Value, _>(envelope.as_slice()).unwrap()
        else {
            panic!("sign writes a tagged COSE_Sign1");
        };
        let Value::Array(items) = *inner else {
            panic!("an array")
        };
        valid("COSE_Sign1", &encode(&Value::Array(items.clone())));
        let (Value::Bytes(protected), Value::Bytes(payload)) = (&items[0], &items[2]) else {
            panic!("bstr protected and payload")
        };
        assert_eq!(protected, &[0xA1, 0x01, 0x27], "protected = h'A10127'");
        valid("protected-header", protected);
        valid("Manifest", payload);
        valid(
            "Sig_structure",
            &schemas::cose::sig_structure(protected, payload),
        );
    }
    // Every release entry of an announcement is a signed-manifest.
    for entry in announcement().release {
        valid("signed-manifest", &entry);
    }
}

#[test]
fn signed_control_messages_match() {
    let director = schemas::keys::SigningKey::from_bytes(&[0x42; 32]);
    let stamp = schemas::control::Stamp {
        counter: 1_790_000_000_000,
        issued: 1_790_000_000,
        expires: 1_790_604_800,
    };
    let membership = Membership {
        groups: vec![GroupName::new("canary").unwrap()],
    };
    let signed = [
        (
            "Membership",
            schemas::control::sign(&membership, "ota/v1/devices/d/groups", stamp, &director),
        ),
        (
            "StatusAck",
            schemas::control::sign(
                &StatusAck { seq: 7 },
                "ota/v1/devices/d/ack",
                stamp,
                &director,
            ),
        ),
        (
            "Announcement",
            schemas::control::sign(
                &announcement(),
                "ota/v1/groups/canary/campaign",
                stamp,
                &director,
            ),
        ),
    ];
    for (rule, payload) in signed {
        valid(rule, &payload);
        let Value::Map(entries) =
            ciborium::de::from_reader::<Value, _>(payload.as_slice()).unwrap()
        else {
            panic!("a map")
        };
        let Some((_, Value::Bytes(auth))) = entries
            .iter()
            .find(|(k, _)| k == &Value::Text("auth".into()))
        else {
            panic!("{rule} carries auth")
        };
        valid("signed-control", auth);
        let Value::Tag(18, inner) = ciborium::de::from_reader::<Value, _>(auth.as_slice()).unwrap()
        else {
            panic!("tagged")
        };
        let Value::Array(items) = *inner else {
            panic!("an array")
        };
        let Value::Bytes(control) = &items[2] else {
            panic!("bstr payload")
        };
        valid("Control", control);
        // The body is the message itself, valid against its own rule.
        let Value::Map(c) = ciborium::de::from_reader::<Value, _>(control.as_slice()).unwrap()
        else {
            panic!("a map")
        };
        let body = &c
            .iter()
            .find(|(k, _)| k == &Value::Text("body".into()))
            .unwrap()
            .1;
        valid(rule, &encode(body));
    }
    // auth must be a byte string; a Control needs its counter.
    invalid(
        "Membership",
        &encode(&Value::Map(vec![
            (Value::Text("groups".into()), Value::Array(vec![])),
            (Value::Text("auth".into()), Value::Text("x".into())),
        ])),
    );
    invalid(
        "Control",
        &encode(&Value::Map(vec![
            (Value::Text("topic".into()), Value::Text("t".into())),
            (Value::Text("issued".into()), Value::Integer(1.into())),
            (Value::Text("expires".into()), Value::Integer(2.into())),
            (Value::Text("body".into()), Value::Map(vec![])),
        ])),
    );
}

/// True when our decoder for `rule`'s message refuses `bytes`.
fn decoder_refuses(rule: &str, bytes: &[u8]) -> bool {
    match rule {
        "Hello" => Hello::decode(bytes).is_err(),
        "Presence" => Presence::decode(bytes).is_err(),
        "Membership" => Membership::decode(bytes).is_err(),
        "StatusAck" => StatusAck::decode(bytes).is_err(),
        "Announcement" => Announcement::decode(bytes).is_err(),
        "Manifest" => Manifest::decode(bytes).is_err(),
        "BlockRequest" => BlockRequest::decode(bytes).is_err(),
        "Block" => Block::decode(bytes).is_err(),
        "Status" => Status::decode(bytes).is_err(),
        other => panic!("no decoder for {other}"),
    }
}

#[test]
fn cddl_and_decoder_refuse_the_same_things() {
    let (s, h, a, m) = (status(), hello(), announcement(), manifest("esp32"));
    let d = delta_manifest();
    let delta_with = |key: &str, v: Value| {
        let mut map = match d.delta.as_ref().unwrap().to_value() {
            Value::Map(m) => m,
            _ => unreachable!(),
        };
        for (k, val) in map.iter_mut() {
            if k == &Value::Text(key.into()) {
                *val = v.clone();
            }
        }
        with_key(&d, "delta", Some(Value::Map(map)))
    };
    let block = Block {
        artifact: ArtifactId::new("a").unwrap(),
        index: 0,
        data: vec![1],
        proof: vec![],
    };
    let req = BlockRequest {
        artifact: ArtifactId::new("a").unwrap(),
        offset: 0,
        bitmap: vec![1],
    };
    let text = |s: &str| Some(Value::Text(s.into()));
    let uint = |n: u64| Some(Value::Integer(n.into()));
    let bytes = |n: usize| Some(Value::Bytes(vec![0; n]));
    let map1 = |k: &str, v: Value| encode(&Value::Map(vec![(Value::Text(k.into()), v)]));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Status", with_key(&s, "seq", None)),
        ("Status", with_key(&s, "seq", text("5"))),
        ("Status", with_key(&s, "state", text("exploded"))),
        ("Status", with_key(&s, "error", text("meltdown"))),
        ("Status", with_key(&s, "campaign", text("camp/1"))),
        ("Status", with_key(&s, "versions", None)),
        ("Hello", with_key(&h, "proto", text("1"))),
        ("Hello", with_key(&h, "epoch", text("a b"))),
        ("Hello", with_key(&h, "epoch", text(&"e".repeat(65)))),
        ("Hello", with_key(&h, "arch", text(""))),
        ("Hello", with_key(&h, "boot_id", text(&"b".repeat(257)))),
        ("Hello", with_key(&h, "outbox", None)),
        ("Announcement", with_key(&a, "cohort", uint(10_001))),
        (
            "Announcement",
            with_key(&a, "release", Some(Value::Array(vec![]))),
        ),
        ("Announcement", with_key(&a, "kind", text("kernel"))),
        ("Announcement", with_key(&a, "state", text("done"))),
        ("Announcement", with_key(&a, "emergency", None)),
        ("Manifest", with_key(&m, "block_size", uint(1000))),
        ("Manifest", with_key(&m, "block_size", uint(128))),
        ("Manifest", with_key(&m, "version", text("1.3"))),
        ("Manifest", with_key(&m, "min_version", text("v1.0.0"))),
        ("Manifest", with_key(&m, "size", uint(0))),
        ("Manifest", with_key(&m, "sha256", bytes(31))),
        ("Manifest", with_key(&m, "merkle_root", None)),
        ("Manifest", with_key(&m, "arch", text("arm v7"))),
        ("Manifest", with_key(&m, "component", text(""))),
        (
            "Manifest",
            delta_with("format", Value::Text("bsdiff".into())),
        ),
        (
            "Manifest",
            delta_with("from_version", Value::Text("1.2".into())),
        ),
        (
            "Manifest",
            delta_with("from_sha256", Value::Bytes(vec![0; 31])),
        ),
        (
            "Manifest",
            delta_with("target_size", Value::Integer(0.into())),
        ),
        ("Manifest", with_key(&d, "delta", text("zstd"))),
        (
            "Hello",
            with_key(
                &h,
                "features",
                Some(Value::Array(vec![text("f").unwrap(); 17])),
            ),
        ),
        (
            "Announcement",
            with_key(&a, "deltas", Some(Value::Array(vec![bytes(1).unwrap(); 7]))),
        ),
        (
            "Block",
            with_key(
                &block,
                "proof",
                Some(Value::Array(vec![Value::Bytes(vec![0; 31])])),
            ),
        ),
        ("Block", with_key(&block, "data", bytes(65_537))),
        ("Block", with_key(&block, "index", uint(1 << 32))),
        ("BlockRequest", with_key(&req, "bitmap", bytes(0))),
        ("BlockRequest", with_key(&req, "bitmap", bytes(129))),
        ("BlockRequest", with_key(&req, "artifact", text("a+b"))),
        (
            "Membership",
            map1("groups", Value::Array(vec![Value::Text("ca nary".into())])),
        ),
        ("Presence", map1("online", Value::Integer(1.into()))),
        ("StatusAck", map1("seq", Value::Integer((-1).into()))),
    ];
    for (rule, bytes) in cases {
        invalid(rule, &bytes);
        assert!(
            decoder_refuses(rule, &bytes),
            "the CDDL refuses this {rule} but our decoder accepts it: {}",
            hex::encode(&bytes)
        );
    }
    // Presence is no Status: the message rules do not overlap by accident.
    invalid("Status", &Presence { online: true }.encode());
}

#[test]
fn unknown_keys_are_allowed_by_both() {
    let b = with_key(
        &status(),
        "zz_future",
        Some(Value::Array(vec![Value::Integer(1.into())])),
    );
    valid("Status", &b);
    assert_eq!(Status::decode(&b).unwrap(), status());
}

#[test]
fn envelopes_the_protocol_refuses_fail_the_cddl() {
    let envelope = schemas::msg::manifest::sign(&manifest("esp32"), &key());
    let Value::Tag(18, inner) = ciborium::de::from_reader::<Value, _>(envelope.as_slice()).unwrap()
    else {
        panic!("tagged")
    };
    let Value::Array(items) = *inner else {
        panic!("an array")
    };
    let rebuild = |i: usize, v: Value| {
        let mut items = items.clone();
        items[i] = v;
        encode(&Value::Array(items))
    };
    // Three elements, a signature of 63 bytes, no kid, a kid of 4 bytes, tag 98.
    invalid(
        "signed-manifest",
        &encode(&Value::Array(items[..3].to_vec())),
    );
    invalid("signed-manifest", &rebuild(3, Value::Bytes(vec![0; 63])));
    invalid("signed-manifest", &rebuild(1, Value::Map(vec![])));
    invalid(
        "signed-manifest",
        &rebuild(
            1,
            Value::Map(vec![(Value::Integer(4.into()), Value::Bytes(vec![0; 4]))]),
        ),
    );
    invalid(
        "signed-manifest",
        &encode(&Value::Tag(98, Box::new(Value::Array(items.clone())))),
    );
    // The protected header must hold alg -8 (EdDSA) under the integer label 1.
    let es256 = encode(&Value::Map(vec![(
        Value::Integer(1.into()),
        Value::Integer((-7).into()),
    )]));
    invalid("protected-header", &es256);
    let text_label = encode(&Value::Map(vec![(
        Value::Text("1".into()),
        Value::Integer((-8).into()),
    )]));
    invalid("protected-header", &text_label);
    let extra = encode(&Value::Map(vec![
        (Value::Integer(1.into()), Value::Integer((-8).into())),
        (Value::Integer(3.into()), Value::Integer(0.into())),
    ]));
    validate("protected-header", &extra).unwrap();
}
