//! Property tests over the wire contract (bounded: 256 cases each).
//!
//! - Decoding arbitrary bytes, or a valid payload with bytes flipped or cut
//!   off, never panics, for every message and every reader of untrusted
//!   input (COSE, pick, operator commands, topics).
//! - Every well-formed message round-trips: decode(encode(m)) == m, and
//!   the encoding is stable.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use schemas::msg::{
    Announcement, Block, BlockRequest, CampaignState, ErrorCode, Hello, Kind, Manifest, Membership,
    Presence, Status, StatusAck, StatusState, WireMessage,
};
use schemas::ops::CommandEnvelope;
use schemas::topic::Topics;
use schemas::{ArtifactId, CampaignId, ComponentName, Epoch, GroupName};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

// ------------------------------------------------------------ strategies

const NAME: &str = "[A-Za-z0-9._-]{1,64}";

fn name() -> impl Strategy<Value = String> {
    NAME
}

fn component() -> impl Strategy<Value = ComponentName> {
    NAME.prop_map(|s| ComponentName::new(s).unwrap())
}

fn artifact() -> impl Strategy<Value = ArtifactId> {
    NAME.prop_map(|s| ArtifactId::new(s).unwrap())
}

fn campaign() -> impl Strategy<Value = CampaignId> {
    NAME.prop_map(|s| CampaignId::new(s).unwrap())
}

/// Free text of at most 256 bytes: up to 64 characters of any width.
fn text() -> impl Strategy<Value = String> {
    "\\PC{0,64}"
}

fn semver() -> impl Strategy<Value = String> {
    (
        0u64..1000,
        0u64..1000,
        0u64..1000,
        proptest::option::of("[a-z][a-z0-9]{0,7}(\\.[1-9][0-9]{0,3})?"),
    )
        .prop_map(|(a, b, c, pre)| match pre {
            Some(p) => format!("{a}.{b}.{c}-{p}"),
            None => format!("{a}.{b}.{c}"),
        })
}

fn versions() -> impl Strategy<Value = BTreeMap<ComponentName, String>> {
    btree_map(component(), text(), 0..8)
}

fn kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(Kind::ALL)
}

fn hash() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        any::<u64>(),
        "\\PC{1,64}",
        versions(),
        btree_map(text(), text(), 0..8),
        text(),
        name(),
        any::<u64>(),
    )
        .prop_map(
            |(proto, arch, versions, labels, boot_id, epoch, outbox)| Hello {
                proto,
                arch,
                versions,
                labels,
                boot_id,
                epoch: Epoch::new(epoch).unwrap(),
                outbox,
                features: Vec::new(),
            },
        )
}

fn membership() -> impl Strategy<Value = Membership> {
    vec(NAME.prop_map(|s| GroupName::new(s).unwrap()), 0..16)
        .prop_map(|groups| Membership { groups })
}

fn announcement() -> impl Strategy<Value = Announcement> {
    (
        campaign(),
        kind(),
        vec(vec(any::<u8>(), 0..300), 1..=16),
        0u16..=10_000,
        any::<bool>(),
        proptest::sample::select(CampaignState::ALL),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(campaign, kind, release, cohort, emergency, state, deadline)| Announcement {
                campaign,
                kind,
                release,
                cohort,
                emergency,
                state,
                deadline,
                deltas: Vec::new(),
            },
        )
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        (artifact(), kind(), component(), semver(), name()),
        (1u64..(1 << 40), 8u32..=16, hash(), hash(), any::<u64>()),
        (proptest::option::of(semver()), any::<bool>()),
    )
        .prop_map(
            |(
                (artifact, kind, component, version, arch),
                (size, shift, sha256, merkle_root, created),
                (min_version, allow_downgrade),
            )| {
                let block_size = 1u32 << shift;
                Manifest {
                    artifact,
                    kind,
                    component,
                    version,
                    arch,
                    size,
                    sha256,
                    block_size,
                    // size < 2^40 and block_size >= 2^8: fewer than 2^32 blocks.
                    blocks: size.div_ceil(u64::from(block_size)) as u32,
                    merkle_root,
                    created,
                    min_version,
                    allow_downgrade,
                    delta: None,
                }
            },
        )
}

fn block_request() -> impl Strategy<Value = BlockRequest> {
    (artifact(), any::<u32>(), vec(any::<u8>(), 1..=128)).prop_map(|(artifact, offset, bitmap)| {
        BlockRequest {
            artifact,
            offset,
            bitmap,
        }
    })
}

fn block() -> impl Strategy<Value = Block> {
    (
        artifact(),
        any::<u32>(),
        vec(any::<u8>(), 0..600),
        vec(hash(), 0..=32),
    )
        .prop_map(|(artifact, index, data, proof)| Block {
            artifact,
            index,
            data,
            proof,
        })
}

fn status() -> impl Strategy<Value = Status> {
    (
        any::<u64>(),
        proptest::option::of(campaign()),
        proptest::option::of(artifact()),
        proptest::sample::select(StatusState::ALL),
        proptest::option::of(any::<u64>()),
        proptest::option::of(proptest::sample::select(ErrorCode::ALL)),
        proptest::option::of(text()),
        versions(),
    )
        .prop_map(
            |(seq, campaign, artifact, state, progress, error, detail, versions)| Status {
                seq,
                campaign,
                artifact,
                state,
                progress,
                error,
                detail,
                versions,
            },
        )
}

/// Some encoded valid message of any type: the seed for mutations.
fn any_encoding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        hello().prop_map(|m| m.encode()),
        any::<bool>().prop_map(|online| Presence { online }.encode()),
        membership().prop_map(|m| m.encode()),
        any::<u64>().prop_map(|seq| StatusAck { seq }.encode()),
        announcement().prop_map(|m| m.encode()),
        manifest().prop_map(|m| m.encode()),
        block_request().prop_map(|m| m.encode()),
        block().prop_map(|m| m.encode()),
        status().prop_map(|m| m.encode()),
        manifest().prop_map(|m| schemas::msg::manifest::sign(&m, &key())),
    ]
}

/// A valid encoding with a few bytes changed and maybe its tail cut off:
/// inputs that get deep into the decoders.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        any_encoding(),
        vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(mut bytes, flips, cut, do_cut)| {
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if do_cut {
                let keep = cut.index(bytes.len() + 1);
                bytes.truncate(keep);
            }
            bytes
        })
}

fn key() -> schemas::keys::SigningKey {
    schemas::keys::SigningKey::from_bytes(&[9; 32])
}

/// Runs every reader of untrusted bytes on `bytes`; none may panic.
fn read_everything(bytes: &[u8]) {
    let _ = Hello::decode(bytes);
    let _ = Presence::decode(bytes);
    let _ = Membership::decode(bytes);
    let _ = Membership::decode_retained(bytes);
    let _ = StatusAck::decode(bytes);
    let _ = Announcement::decode(bytes);
    let _ = Announcement::decode_retained(bytes);
    let _ = Manifest::decode(bytes);
    let _ = BlockRequest::decode(bytes);
    let _ = Block::decode(bytes);
    let _ = Status::decode(bytes);
    let trust = schemas::cose::TrustStore::new([key().verifying_key()]);
    let _ = schemas::cose::verify(bytes, &trust);
    let _ = schemas::cose::peek_payload(bytes);
    let _ = schemas::msg::manifest::verify_entry(bytes, &trust);
    let _ = schemas::msg::manifest::peek_arch(bytes);
    let _ = schemas::msg::manifest::pick(&[bytes.to_vec()], "esp32");
    let _ = schemas::release::read_unverified(bytes);
    let _ = CommandEnvelope::parse(bytes);
}

// ---------------------------------------------------------------- never panics

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..1024)) {
        read_everything(&bytes);
    }

    #[test]
    fn mutated_payloads_never_panic(bytes in mutated()) {
        read_everything(&bytes);
    }

    #[test]
    fn arbitrary_command_envelopes_never_panic(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..512),
            "\\{\"kid\":\"\\PC{0,20}\",\"sig\":\"[0-9a-f]{0,130}\",\"body\":\"\\PC{0,80}\"\\}".prop_map(String::into_bytes),
        ]
    ) {
        if let Ok(env) = CommandEnvelope::parse(&bytes) {
            let keys = BTreeMap::from([(schemas::keys::kid(&key().verifying_key()), key().verifying_key())]);
            let _ = env.verify(&keys);
        }
    }

    #[test]
    fn arbitrary_topics_never_panic(
        topic in prop_oneof![
            "\\PC{0,120}",
            "ota/v1(/(devices|groups|artifacts|ops|emergency|replies|\\+|#|[A-Za-z0-9._-]{0,70}|\\PC{0,4})){0,5}/?",
        ]
    ) {
        let _ = Topics::default().parse(&topic);
        if let Ok(t) = Topics::new("site/a.b") {
            let _ = t.parse(&topic);
        }
        let _ = Topics::new(topic.clone());
    }
}

// ---------------------------------------------------------------- round trips

/// decode(encode(m)) == m, and re-encoding gives the same bytes.
fn round_trips<M: WireMessage + PartialEq + std::fmt::Debug>(m: &M) -> Result<(), TestCaseError> {
    let bytes = m.encode();
    let back = M::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{}: {e}", M::NAME)))?;
    prop_assert_eq!(&back, m);
    prop_assert_eq!(back.encode(), bytes);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hello_round_trips(m in hello()) { round_trips(&m)?; }

    #[test]
    fn presence_round_trips(online in any::<bool>()) { round_trips(&Presence { online })?; }

    #[test]
    fn membership_round_trips(m in membership()) { round_trips(&m)?; }

    #[test]
    fn status_ack_round_trips(seq in any::<u64>()) { round_trips(&StatusAck { seq })?; }

    #[test]
    fn announcement_round_trips(m in announcement()) { round_trips(&m)?; }

    #[test]
    fn manifest_round_trips(m in manifest()) { round_trips(&m)?; }

    #[test]
    fn block_request_round_trips(m in block_request()) { round_trips(&m)?; }

    #[test]
    fn block_round_trips(m in block()) { round_trips(&m)?; }

    #[test]
    fn status_round_trips(m in status()) { round_trips(&m)?; }

    #[test]
    fn signed_manifests_verify(m in manifest()) {
        let envelope = schemas::msg::manifest::sign(&m, &key());
        let trust = schemas::cose::TrustStore::new([key().verifying_key()]);
        prop_assert_eq!(schemas::msg::manifest::verify_entry(&envelope, &trust).unwrap(), m);
    }

    #[test]
    fn topics_round_trip(id in NAME, group in NAME) {
        use schemas::topic::Topic;
        let t = Topics::default();
        let id = schemas::DeviceId::new(id).unwrap();
        let group = GroupName::new(group).unwrap();
        for topic in [
            Topic::Hello(id.clone()),
            Topic::Status(id.clone()),
            Topic::Ack(id.clone()),
            Topic::Request(id.clone()),
            Topic::GroupCampaign(group.clone()),
            Topic::GroupEmergency(group.clone()),
            Topic::Emergency,
        ] {
            prop_assert_eq!(t.parse(&t.build(&topic)).unwrap(), topic);
        }
    }
}
