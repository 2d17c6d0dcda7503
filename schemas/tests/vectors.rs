//! Every test vector of PROTOCOL.md in one place (bucket, Merkle), the
//! COSE_Sign1 layout byte for byte, a complete signed-manifest vector
//! (published in docs/protocol.md), and a cross-check with an independent
//! RFC 9052 implementation (Google's `coset`) in both directions.

use coset::{
    iana, CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable,
};
use ed25519_dalek::{Signature, Signer};
use schemas::control::{self, Control, DirectorKeys, Expect, Stamp};
use schemas::cose::TrustStore;
use schemas::keys::{self, SigningKey};
use schemas::merkle::{verify_block, MerkleTree};
use schemas::msg::manifest::{sign, verify_entry};
use schemas::msg::{ErrorCode, Kind, Manifest, Membership, WireMessage};
use schemas::{CampaignId, ComponentName, DeviceId, GroupName};
use sha2::{Digest, Sha256};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

// ------------------------------------------------------------ bucket

#[test]
fn bucket_vectors() {
    let c = CampaignId::new("camp-2026-001").unwrap();
    assert_eq!(
        schemas::bucket::bucket(&c, &DeviceId::new("dev-0001").unwrap()),
        7170
    );
    assert_eq!(
        schemas::bucket::bucket(&c, &DeviceId::new("dev-0002").unwrap()),
        827
    );
}

// ------------------------------------------------------------ Merkle

/// The first 10000 bytes of SHA-256(be32(0)) ‖ SHA-256(be32(1)) ‖ ...
fn vector_image() -> Vec<u8> {
    let mut image = Vec::with_capacity(10_016);
    let mut i: u32 = 0;
    while image.len() < 10_000 {
        image.extend_from_slice(&Sha256::digest(i.to_be_bytes()));
        i += 1;
    }
    image.truncate(10_000);
    image
}

#[test]
fn merkle_vectors() {
    let image = vector_image();
    assert_eq!(
        Sha256::digest(&image).to_vec(),
        h("01b944a73e124115caaed0787c66b896ed7662d3116ced9cb08ef7aafc109f16")
    );
    let tree = MerkleTree::build(&image, 4096).unwrap();
    assert_eq!(tree.blocks(), 3);
    let leaves = [
        "d2cd71e37960bc7dec93073538f3ab9ed2798541c31e4e0dada59bf8cd02fe8d",
        "918090ae8e6d0b12c61f67e3ec75f544340783ca429eee19a05a74d0b3bbac7f",
        "4c5cc22b9f05462c9f1bbf6058be398ecb6b631a195700c398a37064b35383c1",
    ];
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(tree.leaf(i as u32).unwrap().to_vec(), h(leaf), "leaf {i}");
    }
    let root = tree.root();
    assert_eq!(
        root.to_vec(),
        h("b7d5cbc64854196d0f9ec5d81b0c26c1d2feb9d1c4bb93a4330399fdb7eb477d")
    );
    let proof2 = tree.proof(2).unwrap();
    assert_eq!(proof2.len(), 1);
    assert_eq!(
        proof2[0].to_vec(),
        h("b403cc4bf98fdfcd753c04c88fcc9b9ae79563d4af82dd80af2144021160d65c")
    );

    // Every block verifies with its proof; a tampered block or proof does not.
    let blocks: Vec<&[u8]> = image.chunks(4096).collect();
    for (i, block) in blocks.iter().enumerate() {
        let i = i as u32;
        let proof = tree.proof(i).unwrap();
        assert!(verify_block(&root, i, 3, block, &proof), "block {i}");
        let mut bad = block.to_vec();
        bad[0] ^= 1;
        assert!(
            !verify_block(&root, i, 3, &bad, &proof),
            "tampered block {i}"
        );
        let mut bad_proof = proof.clone();
        bad_proof[0][31] ^= 1;
        assert!(
            !verify_block(&root, i, 3, block, &bad_proof),
            "tampered proof {i}"
        );
        let mut long = proof.clone();
        long.push([0; 32]);
        assert!(
            !verify_block(&root, i, 3, block, &long),
            "a proof not used up exactly {i}"
        );
    }
    // Block 2 with block 1's data, or at index 1: no.
    assert!(!verify_block(&root, 2, 3, blocks[1], &proof2));
    assert!(!verify_block(&root, 1, 3, blocks[2], &proof2));
}

// ------------------------------------------------------------ COSE layout

/// The key of the published signed-manifest vector: seed 00 01 02 .. 1f.
fn vector_key() -> SigningKey {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    SigningKey::from_bytes(&seed)
}

/// The manifest of the published vector: the Merkle vector image as
/// firmware `main` 1.3.0 for esp32.
fn vector_manifest() -> Manifest {
    let spec = schemas::release::ReleaseSpec::new(
        Kind::Firmware,
        ComponentName::new("main").unwrap(),
        "1.3.0",
        "esp32",
        1_790_000_000,
    );
    schemas::release::build_manifest(&vector_image(), &spec).unwrap()
}

/// The CBOR head of a byte string of `len` bytes (len < 65536).
fn bstr_head(len: usize) -> Vec<u8> {
    match len {
        0..=23 => vec![0x40 | len as u8],
        24..=255 => vec![0x58, len as u8],
        _ => vec![0x59, (len >> 8) as u8, len as u8],
    }
}

#[test]
fn cose_sign1_layout_is_exact() {
    let key = vector_key();
    let manifest = vector_manifest();
    let envelope = sign(&manifest, &key);
    let payload = manifest.encode();
    let kid = keys::kid(&key.verifying_key());
    assert_eq!(
        kid.to_vec(),
        Sha256::digest(key.verifying_key().as_bytes())[..8].to_vec()
    );

    // 18([h'A10127', {4: kid}, payload, signature])
    let mut expected = vec![0xD2, 0x84, 0x43, 0xA1, 0x01, 0x27, 0xA1, 0x04, 0x48];
    expected.extend_from_slice(&kid);
    expected.extend_from_slice(&bstr_head(payload.len()));
    expected.extend_from_slice(&payload);
    expected.extend_from_slice(&[0x58, 0x40]);
    assert_eq!(&envelope[..expected.len()], &expected[..]);
    assert_eq!(envelope.len(), expected.len() + 64);

    // The signature is ed25519 over ["Signature1", h'A10127', h'', payload].
    let mut sig_structure = vec![0x84, 0x6A];
    sig_structure.extend_from_slice(b"Signature1");
    sig_structure.extend_from_slice(&[0x43, 0xA1, 0x01, 0x27, 0x40]);
    sig_structure.extend_from_slice(&bstr_head(payload.len()));
    sig_structure.extend_from_slice(&payload);
    assert_eq!(
        schemas::cose::sig_structure(&[0xA1, 0x01, 0x27], &payload),
        sig_structure
    );
    let signature = Signature::from_slice(&envelope[expected.len()..]).unwrap();
    key.verifying_key()
        .verify_strict(&sig_structure, &signature)
        .unwrap();
}

/// The complete vector printed in docs/protocol.md ("A complete example").
/// ed25519 signatures are deterministic, so these bytes never change.
#[test]
fn published_signed_manifest_vector() {
    let key = vector_key();
    let envelope = sign(&vector_manifest(), &key);
    let public = hex::encode(key.verifying_key().as_bytes());
    let kid = hex::encode(keys::kid(&key.verifying_key()));
    let doc = include_str!("../../docs/protocol.md");
    for (what, value) in [
        ("public key", &public),
        ("kid", &kid),
        ("envelope", &hex::encode(&envelope)),
    ] {
        // The doc wraps long hex at 64 characters a line.
        let flat: String = doc.split_whitespace().collect();
        assert!(
            flat.contains(value.as_str()),
            "docs/protocol.md lacks the vector's {what}: {value}"
        );
    }
    let trust = TrustStore::new([key.verifying_key()]);
    assert_eq!(verify_entry(&envelope, &trust).unwrap(), vector_manifest());
}

// ------------------------------------------------------------ coset, both ways

fn manifest(arch: &str) -> Manifest {
    let mut m = vector_manifest();
    m.arch = arch.into();
    m
}

/// Ed25519 verification, as coset's callback wants it.
fn ed25519_check(key: &SigningKey, sig: &[u8], data: &[u8]) -> Result<(), String> {
    let sig = Signature::from_slice(sig).map_err(|e| e.to_string())?;
    key.verifying_key()
        .verify_strict(data, &sig)
        .map_err(|e| e.to_string())
}

#[test]
fn coset_verifies_what_ota_signs() {
    let key = vector_key();
    let envelope = sign(&manifest("armv7"), &key);

    let parsed =
        CoseSign1::from_tagged_slice(&envelope).expect("coset reads our tagged COSE_Sign1");
    assert_eq!(
        parsed.protected.header.alg,
        Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::EdDSA
        ))
    );
    assert_eq!(
        parsed.protected.original_data.as_deref(),
        Some(&[0xA1, 0x01, 0x27][..])
    );
    assert_eq!(
        parsed.unprotected.key_id,
        keys::kid(&key.verifying_key()).to_vec()
    );
    assert!(
        parsed.protected.header.key_id.is_empty(),
        "the kid is unprotected only"
    );
    assert_eq!(
        parsed.payload.as_deref(),
        Some(&manifest("armv7").encode()[..])
    );
    parsed
        .verify_signature(b"", |sig, data| ed25519_check(&key, sig, data))
        .expect("coset verifies our signature");

    // And it refuses a flipped bit.
    let mut bad = envelope.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let parsed = CoseSign1::from_tagged_slice(&bad).unwrap();
    let verdict = parsed.verify_signature(b"", |sig, data| ed25519_check(&key, sig, data));
    assert!(verdict.is_err());
}

/// A COSE_Sign1 made by coset with EdDSA and our kid.
fn coset_sign(
    payload: Vec<u8>,
    key: &SigningKey,
    alg: iana::Algorithm,
    with_kid: bool,
) -> CoseSign1 {
    let mut unprotected = HeaderBuilder::new();
    if with_kid {
        unprotected = unprotected.key_id(keys::kid(&key.verifying_key()).to_vec());
    }
    CoseSign1Builder::new()
        .protected(HeaderBuilder::new().algorithm(alg).build())
        .unprotected(unprotected.build())
        .payload(payload)
        .create_signature(b"", |data| key.sign(data).to_bytes().to_vec())
        .build()
}

#[test]
fn ota_verifies_what_coset_signs() {
    let key = vector_key();
    let trust = TrustStore::new([key.verifying_key()]);
    let m = manifest("esp32");

    let tagged = coset_sign(m.encode(), &key, iana::Algorithm::EdDSA, true)
        .to_tagged_vec()
        .unwrap();
    assert_eq!(verify_entry(&tagged, &trust).unwrap(), m);
    let untagged = coset_sign(m.encode(), &key, iana::Algorithm::EdDSA, true)
        .to_vec()
        .unwrap();
    assert_eq!(verify_entry(&untagged, &trust).unwrap(), m);
    assert_eq!(
        schemas::cose::verify(&untagged, &trust).unwrap(),
        m.encode()
    );
    assert_eq!(
        schemas::msg::manifest::pick(&[untagged], "esp32"),
        schemas::msg::manifest::Pick::Entry(0)
    );

    // Another algorithm is bad_manifest, a missing kid unknown_key, another
    // signer's key unknown_key.
    let es256 = coset_sign(m.encode(), &key, iana::Algorithm::ES256, true)
        .to_tagged_vec()
        .unwrap();
    assert_eq!(
        verify_entry(&es256, &trust).unwrap_err().code,
        ErrorCode::BadManifest
    );
    let no_kid = coset_sign(m.encode(), &key, iana::Algorithm::EdDSA, false)
        .to_tagged_vec()
        .unwrap();
    assert_eq!(
        verify_entry(&no_kid, &trust).unwrap_err().code,
        ErrorCode::UnknownKey
    );
    let other = SigningKey::from_bytes(&[0xee; 32]);
    let foreign = coset_sign(m.encode(), &other, iana::Algorithm::EdDSA, true)
        .to_tagged_vec()
        .unwrap();
    assert_eq!(
        verify_entry(&foreign, &trust).unwrap_err().code,
        ErrorCode::UnknownKey
    );
}

// ------------------------------------------------------------ E3 delta

/// The old image of the published delta vector: the Merkle vector image
/// with its first 32 bytes zeroed and its last 100 dropped.
fn delta_old_image() -> Vec<u8> {
    let mut old = vector_image();
    old[..32].fill(0);
    old.truncate(9_900);
    old
}

/// The delta payload published in docs/protocol.md (E3). zstd 1.5.7 wrote
/// it (level 19, the old image as reference prefix); any encoder may write
/// another frame that rebuilds the same target.
const DELTA_PAYLOAD: &str = "28b52ffd6410267504004408df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119e1f46d07a433301813ad25cb1964b05c50a63476d1add65a7678f2bb9c4f2b90aa895859e45303cbd406c24b626e4d13882eca97d7ba6ece27b13ab5ce3cd35d9e54a4800a90b9734fbdbe1dd108c48a62f5eb39c833319b054121f4f16c3dc01ea1fa5f01004834af86af4fac12e778";

#[test]
fn published_delta_vector() {
    let old = delta_old_image();
    let target = vector_manifest();
    let payload = h(DELTA_PAYLOAD);
    let mut rebuilt = Vec::new();
    schemas::delta_zstd::apply(&old, &payload, target.size, &target.sha256, &mut rebuilt).unwrap();
    assert_eq!(rebuilt, vector_image());
    let from_sha256: [u8; 32] = Sha256::digest(&old).into();
    let delta =
        schemas::release::build_delta_manifest(&payload, &target, "1.2.0", from_sha256, None)
            .unwrap();
    let envelope = sign(&delta, &vector_key());
    let doc = include_str!("../../docs/protocol.md");
    let flat: String = doc.split_whitespace().collect();
    for (what, value) in [
        ("payload", hex::encode(&payload)),
        ("from_sha256", hex::encode(from_sha256)),
        ("envelope", hex::encode(&envelope)),
    ] {
        assert!(
            flat.contains(value.as_str()),
            "docs/protocol.md lacks the delta vector's {what}: {value}"
        );
    }
    let trust = TrustStore::new([vector_key().verifying_key()]);
    assert_eq!(verify_entry(&envelope, &trust).unwrap(), delta);
}

// ------------------------------------------------------------ E2 control

/// The director key of the published control vector: seed 40 41 .. 5f.
fn director_key() -> SigningKey {
    let seed: [u8; 32] = std::array::from_fn(|i| 0x40 + i as u8);
    SigningKey::from_bytes(&seed)
}

const VECTOR_TOPIC: &str = "ota/v1/devices/dev-0001/groups";

fn vector_stamp() -> Stamp {
    Stamp {
        counter: 1_790_000_000_000,
        issued: 1_790_000_000,
        expires: 1_790_604_800,
    }
}

fn vector_membership() -> Membership {
    Membership {
        groups: vec![GroupName::new("canary").unwrap()],
    }
}

/// The Control of the published vector.
fn vector_control() -> Control {
    Control {
        topic: VECTOR_TOPIC.into(),
        counter: 1_790_000_000_000,
        issued: 1_790_000_000,
        expires: 1_790_604_800,
        body: vector_membership().to_value(),
    }
}

/// The signed Membership printed in docs/protocol.md (E2, "A worked
/// example"): its director key, kid, Control, auth and whole payload.
#[test]
fn published_signed_control_vector() {
    let key = director_key();
    let payload = control::sign(&vector_membership(), VECTOR_TOPIC, vector_stamp(), &key);
    let control = vector_control().encode();
    let auth = schemas::cose::sign(&control, &key);
    // payload = the v1 map with "auth" added: {"groups": ["canary"], "auth": auth}
    let mut expected = vec![0xA2, 0x66];
    expected.extend_from_slice(b"groups");
    expected.extend_from_slice(&[0x81, 0x66]);
    expected.extend_from_slice(b"canary");
    expected.push(0x64);
    expected.extend_from_slice(b"auth");
    expected.extend_from_slice(&bstr_head(auth.len()));
    expected.extend_from_slice(&auth);
    assert_eq!(payload, expected);

    let doc = include_str!("../../docs/protocol.md");
    let flat: String = doc.split_whitespace().collect();
    for (what, value) in [
        (
            "director public key",
            hex::encode(key.verifying_key().as_bytes()),
        ),
        ("kid", hex::encode(keys::kid(&key.verifying_key()))),
        ("Control", hex::encode(&control)),
        ("payload", hex::encode(&payload)),
    ] {
        assert!(
            flat.contains(value.as_str()),
            "docs/protocol.md lacks the control vector's {what}: {value}"
        );
    }
    let directors = DirectorKeys::new([key.verifying_key()]);
    let expect = Expect {
        topic: VECTOR_TOPIC,
        last_counter: None,
        now: Some(1_790_000_000),
    };
    let v = control::verify::<Membership>(&payload, expect, &directors).unwrap();
    assert_eq!(v.body, vector_membership());
    assert_eq!(v.stamp, vector_stamp());
}

/// The auth of a signed payload.
fn auth_of(payload: &[u8]) -> Vec<u8> {
    let ciborium::value::Value::Map(entries) = ciborium::de::from_reader(payload).unwrap() else {
        panic!("a map")
    };
    entries
        .into_iter()
        .find_map(|(k, v)| match (k, v) {
            (ciborium::value::Value::Text(k), ciborium::value::Value::Bytes(b)) if k == "auth" => {
                Some(b)
            }
            _ => None,
        })
        .expect("auth")
}

#[test]
fn coset_verifies_the_director_signature_and_ota_verifies_cosets() {
    let key = director_key();
    let payload = control::sign(&vector_membership(), VECTOR_TOPIC, vector_stamp(), &key);
    let parsed = CoseSign1::from_tagged_slice(&auth_of(&payload)).expect("coset reads auth");
    assert_eq!(
        parsed.unprotected.key_id,
        keys::kid(&key.verifying_key()).to_vec()
    );
    let control = Control::decode(parsed.payload.as_deref().unwrap()).unwrap();
    assert_eq!(control.topic, VECTOR_TOPIC);
    parsed
        .verify_signature(b"", |sig, data| ed25519_check(&key, sig, data))
        .expect("coset verifies the director's signature");

    // A Control signed by coset, put in auth by hand: ota accepts it.
    let signed = coset_sign(control.encode(), &key, iana::Algorithm::EdDSA, true)
        .to_vec()
        .unwrap();
    let mut outer = vector_membership().to_value();
    if let ciborium::value::Value::Map(e) = &mut outer {
        e.push(("auth".into(), ciborium::value::Value::Bytes(signed)));
    }
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&outer, &mut bytes).unwrap();
    let directors = DirectorKeys::new([key.verifying_key()]);
    let expect = Expect {
        topic: VECTOR_TOPIC,
        last_counter: Some(1_790_000_000_000),
        now: None,
    };
    assert_eq!(
        control::verify::<Membership>(&bytes, expect, &directors)
            .unwrap()
            .body,
        vector_membership()
    );
    // And the release key of the manifest vector is no director key.
    let by_release = control::sign(
        &vector_membership(),
        VECTOR_TOPIC,
        vector_stamp(),
        &vector_key(),
    );
    assert_eq!(
        control::verify::<Membership>(&by_release, expect, &directors)
            .unwrap_err()
            .code(),
        "unknown_key"
    );
}

/// Prints the control vector for docs/protocol.md:
/// `cargo test -p ota-schemas --test vectors print_control_vector -- --ignored --nocapture`
#[test]
#[ignore]
fn print_control_vector() {
    let key = director_key();
    let payload = control::sign(&vector_membership(), VECTOR_TOPIC, vector_stamp(), &key);
    let control = vector_control().encode();
    let auth = auth_of(&payload);
    println!("public {}", hex::encode(key.verifying_key().as_bytes()));
    println!("kid {}", hex::encode(keys::kid(&key.verifying_key())));
    println!("control {}", hex::encode(&control));
    println!("auth {}", hex::encode(&auth));
    println!("payload {}", hex::encode(&payload));
}
