//! COSE_Sign1 envelopes for manifests: PROTOCOL.md "Signed manifests"
//! (RFC 9052 §4.2, one signer, ed25519).
//!
//! ```text
//! COSE_Sign1 = 18([                ; the tag is optional when reading
//!     protected:   bstr .cbor {1: -8},   ; h'A10127': alg = EdDSA
//!     unprotected: {4: bstr .size 8},    ; kid = SHA-256(public key)[..8]
//!     payload:     bstr,                 ; the encoded Manifest
//!     signature:   bstr .size 64,        ; ed25519 over the Sig_structure
//! ])
//! Sig_structure = ["Signature1", protected, h'', payload]
//! ```
//!
//! [`verify`] checks in the protocol's order (step 2, "Verify") and maps
//! each failure to the Status error a device reports: first the envelope
//! ([`CoseError::BadManifest`]), then the kid ([`CoseError::UnknownKey`]),
//! then the signature ([`CoseError::BadSignature`]). Decoding the manifest
//! inside the payload is `msg::manifest`'s job.
//!
//! [`peek_payload`] is the lenient, unverified read of step 1, "Pick".

use crate::keys::{kid, Kid, SigningKey, VerifyingKey};
use ciborium::Value;
use ed25519_dalek::{Signature, Signer};
use std::collections::HashMap;

/// The CBOR tag of a COSE_Sign1.
pub const COSE_SIGN1_TAG: u64 = 18;
/// The protected header label of the algorithm.
pub const HEADER_ALG: i128 = 1;
/// The header label of the kid.
pub const HEADER_KID: i128 = 4;
/// The COSE algorithm id v1 uses: EdDSA (ed25519).
pub const ALG_EDDSA: i128 = -8;
/// The protected header [`sign`] writes: the map `{1: -8}` encoded.
pub const PROTECTED_HEADER: [u8; 3] = [0xA1, 0x01, 0x27];
/// The context string of a COSE_Sign1 Sig_structure.
pub const SIGNATURE1_CONTEXT: &str = "Signature1";

/// Why an envelope was refused. [`CoseError::code`] is the Status `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoseError {
    /// The envelope is not a COSE_Sign1 with an EdDSA protected header.
    #[error("bad_manifest: {0}")]
    BadManifest(String),
    /// The unprotected header has no kid, or one that names no trusted key.
    #[error("unknown_key: the kid in the unprotected header names no trusted release key")]
    UnknownKey,
    /// The signature does not hold for the named key.
    #[error("bad_signature: the signature does not verify with the key the kid names")]
    BadSignature,
}

impl CoseError {
    /// The protocol's Status `error` for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            CoseError::BadManifest(_) => "bad_manifest",
            CoseError::UnknownKey => "unknown_key",
            CoseError::BadSignature => "bad_signature",
        }
    }
}

fn bad(reason: impl Into<String>) -> CoseError {
    CoseError::BadManifest(reason.into())
}

/// The trusted release public keys, by kid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustStore {
    keys: HashMap<Kid, VerifyingKey>,
}

impl TrustStore {
    /// A store holding `keys`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        keys.into_iter().collect()
    }

    /// Adds a key; true when it was not there yet.
    pub fn insert(&mut self, key: VerifyingKey) -> bool {
        self.keys.insert(kid(&key), key).is_none()
    }

    /// True when a key with this kid is trusted.
    pub fn contains(&self, kid: &Kid) -> bool {
        self.keys.contains_key(kid)
    }

    /// The trusted key with this kid.
    pub fn get(&self, kid: &Kid) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted (nothing will verify).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted kids, in no particular order.
    pub fn kids(&self) -> impl Iterator<Item = &Kid> {
        self.keys.keys()
    }
}

impl FromIterator<VerifyingKey> for TrustStore {
    fn from_iter<I: IntoIterator<Item = VerifyingKey>>(iter: I) -> Self {
        Self {
            keys: iter.into_iter().map(|k| (kid(&k), k)).collect(),
        }
    }
}

/// Encodes a value. Writing into a `Vec` cannot fail, and every `Value`
/// ciborium builds is encodable, so an error here is a bug in ciborium.
fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("a Value always encodes into a Vec");
    out
}

/// Decodes exactly one CBOR item: trailing bytes are an error.
fn decode_one(bytes: &[u8], what: &str) -> Result<Value, CoseError> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader(&mut rest)
        .map_err(|e| bad(format!("{what} is not valid CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(bad(format!(
            "{what} has {} trailing bytes after its CBOR item",
            rest.len()
        )));
    }
    Ok(value)
}

/// The bytes an ed25519 signature covers: the encoded
/// `["Signature1", protected, h'', payload]` (RFC 9052 §4.4), where
/// `protected` is the protected header bstr's content as received.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    encode(&Value::Array(vec![
        Value::Text(SIGNATURE1_CONTEXT.into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]))
}

/// Signs `payload` with a release key: a tagged COSE_Sign1 whose
/// unprotected header holds the key's kid.
pub fn sign(payload: &[u8], key: &SigningKey) -> Vec<u8> {
    let signature = key.sign(&sig_structure(&PROTECTED_HEADER, payload));
    let kid = kid(&key.verifying_key());
    encode(&Value::Tag(
        COSE_SIGN1_TAG,
        Box::new(Value::Array(vec![
            Value::Bytes(PROTECTED_HEADER.to_vec()),
            Value::Map(vec![(Value::Integer(4.into()), Value::Bytes(kid.to_vec()))]),
            Value::Bytes(payload.to_vec()),
            Value::Bytes(signature.to_bytes().to_vec()),
        ])),
    ))
}

/// True when `v` is the CBOR integer `n` (not a float, bool or bignum-like
/// text).
fn is_int(v: &Value, n: i128) -> bool {
    matches!(v, Value::Integer(i) if i128::from(*i) == n)
}

/// Refuses a header map that holds a label twice (RFC 9052 §3: labels are
/// unique). Labels are compared as decoded.
fn check_unique_labels(map: &[(Value, Value)], what: &str) -> Result<(), CoseError> {
    for (i, (label, _)) in map.iter().enumerate() {
        if map[..i].iter().any(|(earlier, _)| earlier == label) {
            return Err(bad(format!("the {what} holds label {label:?} twice")));
        }
    }
    Ok(())
}

/// Verifies a release entry in the protocol's order and returns its payload
/// (the encoded manifest, not yet decoded).
pub fn verify(envelope: &[u8], trust: &TrustStore) -> Result<Vec<u8>, CoseError> {
    // 1. The envelope: one CBOR item, tag 18 or none, [bstr, map, bstr, bstr].
    let value = decode_one(envelope, "the envelope")?;
    let value = match value {
        Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
        Value::Tag(tag, _) => {
            return Err(bad(format!(
                "the envelope has tag {tag}, expected 18 (COSE_Sign1) or none"
            )))
        }
        other => other,
    };
    let Value::Array(items) = value else {
        return Err(bad("the envelope is not a CBOR array"));
    };
    let [protected, unprotected, payload, signature]: [Value; 4] =
        items.try_into().map_err(|items: Vec<Value>| {
            bad(format!(
                "the envelope has {} elements, expected 4",
                items.len()
            ))
        })?;
    let (
        Value::Bytes(protected),
        Value::Map(unprotected),
        Value::Bytes(payload),
        Value::Bytes(signature),
    ) = (protected, unprotected, payload, signature)
    else {
        return Err(bad(
            "the envelope's elements are not [bstr protected, map unprotected, bstr payload, bstr signature]",
        ));
    };

    // The protected header: a map holding 1: -8; other entries are ignored.
    let Value::Map(header) = decode_one(&protected, "the protected header")? else {
        return Err(bad("the protected header is not a CBOR map"));
    };
    check_unique_labels(&header, "protected header")?;
    match header.iter().find(|(label, _)| is_int(label, HEADER_ALG)) {
        None => return Err(bad("the protected header has no alg (label 1)")),
        Some((_, alg)) if !is_int(alg, ALG_EDDSA) => {
            return Err(bad(format!(
                "the protected header's alg is {alg:?}, expected -8 (EdDSA)"
            )))
        }
        Some(_) => {}
    }
    check_unique_labels(&unprotected, "unprotected header")?;

    // 2. The kid, from the unprotected header only.
    let key = unprotected
        .iter()
        .find(|(label, _)| is_int(label, HEADER_KID))
        .and_then(|(_, kid)| match kid {
            Value::Bytes(b) => Kid::try_from(b.as_slice()).ok(),
            _ => None,
        })
        .and_then(|kid| trust.get(&kid))
        .ok_or(CoseError::UnknownKey)?;

    // 3. The signature.
    let signature = Signature::from_slice(&signature).map_err(|_| CoseError::BadSignature)?;
    key.verify_strict(&sig_structure(&protected, &payload), &signature)
        .map_err(|_| CoseError::BadSignature)?;
    Ok(payload)
}

/// The payload of an envelope, unverified and read leniently, for step 1
/// ("Pick"): any 4-element array, tagged 18 or not, whose third element is
/// a bstr. Trailing bytes and the headers are not looked at; [`verify`]
/// refuses what this lets through.
pub fn peek_payload(envelope: &[u8]) -> Option<Vec<u8>> {
    let value: Value = ciborium::de::from_reader(envelope).ok()?;
    let value = match value {
        Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
        other => other,
    };
    let Value::Array(items) = value else {
        return None;
    };
    let [_, _, Value::Bytes(payload), _]: [Value; 4] = items.try_into().ok()? else {
        return None;
    };
    Some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trust(k: &SigningKey) -> TrustStore {
        TrustStore::new([k.verifying_key()])
    }

    fn decode(bytes: &[u8]) -> Value {
        ciborium::de::from_reader(bytes).unwrap()
    }

    /// Builds an envelope from its parts, signing over `protected` as given.
    fn envelope(
        protected: &[u8],
        unprotected: Value,
        payload: &[u8],
        k: &SigningKey,
        tagged: bool,
    ) -> Vec<u8> {
        let sig = k.sign(&sig_structure(protected, payload));
        let array = Value::Array(vec![
            Value::Bytes(protected.to_vec()),
            unprotected,
            Value::Bytes(payload.to_vec()),
            Value::Bytes(sig.to_bytes().to_vec()),
        ]);
        encode(&if tagged {
            Value::Tag(18, Box::new(array))
        } else {
            array
        })
    }

    fn kid_header(k: &SigningKey) -> Value {
        Value::Map(vec![(
            Value::Integer(4.into()),
            Value::Bytes(kid(&k.verifying_key()).to_vec()),
        )])
    }

    fn is_bad_manifest(r: Result<Vec<u8>, CoseError>) -> bool {
        matches!(r, Err(CoseError::BadManifest(_)))
    }

    #[test]
    fn round_trip() {
        let k = key(1);
        let env = sign(b"hello manifest", &k);
        assert_eq!(verify(&env, &trust(&k)).unwrap(), b"hello manifest");
        assert_eq!(peek_payload(&env).unwrap(), b"hello manifest");
        // Tag 18 (0xD2), array of 4 (0x84), protected bstr of 3 (0x43 A1 01 27).
        assert_eq!(&env[..6], &[0xD2, 0x84, 0x43, 0xA1, 0x01, 0x27]);
        // Empty payloads sign too (the manifest decoder refuses them later).
        let env = sign(b"", &k);
        assert_eq!(verify(&env, &trust(&k)).unwrap(), b"");
    }

    #[test]
    fn untagged_form_verifies() {
        let k = key(1);
        let tagged = sign(b"p", &k);
        let Value::Tag(18, inner) = decode(&tagged) else {
            panic!("sign must tag")
        };
        let untagged = encode(&inner);
        assert_eq!(untagged[0], 0x84);
        assert_eq!(verify(&untagged, &trust(&k)).unwrap(), b"p");
        assert_eq!(peek_payload(&untagged).unwrap(), b"p");
    }

    #[test]
    fn sig_structure_is_rfc_9052_exact() {
        // protected = h'A10127': the map {1: -8} is A1 (map of 1), 01 (1), 27 (-8).
        let mut ciborium_protected = Vec::new();
        ciborium::ser::into_writer(
            &Value::Map(vec![(
                Value::Integer(1.into()),
                Value::Integer((-8).into()),
            )]),
            &mut ciborium_protected,
        )
        .unwrap();
        assert_eq!(ciborium_protected, PROTECTED_HEADER);

        let payload = b"{\"a\":1}"; // 7 bytes; any bytes will do
        let mut expected = vec![0x84]; // array(4)
        expected.push(0x6A); // tstr(10)
        expected.extend_from_slice(b"Signature1");
        expected.extend_from_slice(&[0x43, 0xA1, 0x01, 0x27]); // bstr(3) protected
        expected.push(0x40); // bstr(0): external_aad h''
        expected.push(0x47); // bstr(7)
        expected.extend_from_slice(payload);
        assert_eq!(sig_structure(&PROTECTED_HEADER, payload), expected);

        let k = key(9);
        let env = sign(payload, &k);
        let Value::Tag(18, inner) = decode(&env) else {
            panic!("tagged")
        };
        let Value::Array(items) = *inner else {
            panic!("array")
        };
        let Value::Bytes(sig) = &items[3] else {
            panic!("bstr")
        };
        let sig = Signature::from_slice(sig).unwrap();
        assert!(k.verifying_key().verify(&expected, &sig).is_ok());

        // A longer payload takes a one-byte length: 0x58 len.
        let long = [0xAB; 100];
        let s = sig_structure(&PROTECTED_HEADER, &long);
        assert_eq!(&s[17..19], &[0x58, 100]);
        assert_eq!(s.len(), 19 + 100);
    }

    #[test]
    fn flipped_bits_are_bad_signature() {
        let k = key(1);
        let t = trust(&k);
        let payload = b"0123456789abcdef";
        let env = sign(payload, &k);
        // Payload bytes sit just before the signature: 2-byte bstr header + 64.
        let sig_start = env.len() - 64;
        let payload_start = sig_start - 2 - payload.len();
        assert_eq!(&env[payload_start..sig_start - 2], payload);
        for i in (payload_start..sig_start - 2).chain(sig_start..env.len()) {
            for bit in [0x01, 0x80] {
                let mut bad = env.clone();
                bad[i] ^= bit;
                assert_eq!(
                    verify(&bad, &t),
                    Err(CoseError::BadSignature),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
        // A signature of the wrong length is bad_signature too.
        let short = envelope(&PROTECTED_HEADER, kid_header(&k), payload, &k, true);
        let mut v = decode(&short);
        if let Value::Tag(_, inner) = &mut v {
            if let Value::Array(items) = inner.as_mut() {
                items[3] = Value::Bytes(vec![0; 63]);
            }
        }
        assert_eq!(verify(&encode(&v), &t), Err(CoseError::BadSignature));
    }

    #[test]
    fn signed_by_another_key_is_bad_signature() {
        let (k, other) = (key(1), key(2));
        // k's kid, other's signature.
        let sig = other.sign(&sig_structure(&PROTECTED_HEADER, b"p"));
        let env = encode(&Value::Array(vec![
            Value::Bytes(PROTECTED_HEADER.to_vec()),
            kid_header(&k),
            Value::Bytes(b"p".to_vec()),
            Value::Bytes(sig.to_bytes().to_vec()),
        ]));
        assert_eq!(verify(&env, &trust(&k)), Err(CoseError::BadSignature));
    }

    #[test]
    fn unknown_or_missing_kid() {
        let (k, other) = (key(1), key(2));
        let env = sign(b"p", &k);
        assert_eq!(verify(&env, &trust(&other)), Err(CoseError::UnknownKey));
        assert_eq!(
            verify(&env, &TrustStore::default()),
            Err(CoseError::UnknownKey)
        );
        assert_eq!(
            verify(
                &env,
                &TrustStore::new([other.verifying_key(), k.verifying_key()])
            ),
            Ok(b"p".to_vec())
        );

        let t = trust(&k);
        let kid_bytes = Value::Bytes(kid(&k.verifying_key()).to_vec());
        let cases = [
            ("empty unprotected", Value::Map(vec![])),
            (
                "kid as text",
                Value::Map(vec![(
                    Value::Integer(4.into()),
                    Value::Text(hex::encode(kid(&k.verifying_key()))),
                )]),
            ),
            (
                "kid too long",
                Value::Map(vec![(Value::Integer(4.into()), Value::Bytes(vec![0; 9]))]),
            ),
            (
                "kid label as float",
                Value::Map(vec![(Value::Float(4.0), kid_bytes.clone())]),
            ),
            (
                "kid label as text",
                Value::Map(vec![(Value::Text("4".into()), kid_bytes.clone())]),
            ),
        ];
        for (what, unprotected) in cases {
            let env = envelope(&PROTECTED_HEADER, unprotected, b"p", &k, true);
            assert_eq!(verify(&env, &t), Err(CoseError::UnknownKey), "{what}");
        }

        // A kid in the protected header only is not read.
        let mut protected = Vec::new();
        ciborium::ser::into_writer(
            &Value::Map(vec![
                (Value::Integer(1.into()), Value::Integer((-8).into())),
                (Value::Integer(4.into()), kid_bytes),
            ]),
            &mut protected,
        )
        .unwrap();
        let env = envelope(&protected, Value::Map(vec![]), b"p", &k, true);
        assert_eq!(verify(&env, &t), Err(CoseError::UnknownKey));
        // With the kid in both, it verifies (other protected entries are ignored).
        let env = envelope(&protected, kid_header(&k), b"p", &k, true);
        assert_eq!(verify(&env, &t), Ok(b"p".to_vec()));
    }

    #[test]
    fn bad_protected_header_is_bad_manifest() {
        let k = key(1);
        let t = trust(&k);
        let header = |entries: Vec<(Value, Value)>| {
            let mut out = Vec::new();
            ciborium::ser::into_writer(&Value::Map(entries), &mut out).unwrap();
            out
        };
        let int = |n: i64| Value::Integer(n.into());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("alg -7 (ES256)", header(vec![(int(1), int(-7))])),
            (
                "alg -19 (Ed25519, RFC 9864; v1 uses -8)",
                header(vec![(int(1), int(-19))]),
            ),
            (
                "alg -8 and -19",
                header(vec![(int(1), int(-8)), (int(1), int(-19))]),
            ),
            ("no alg", header(vec![])),
            ("empty bstr", vec![]),
            (
                "alg label as float",
                header(vec![(Value::Float(1.0), int(-8))]),
            ),
            (
                "alg label as true",
                header(vec![(Value::Bool(true), int(-8))]),
            ),
            (
                "alg label as text",
                header(vec![(Value::Text("1".into()), int(-8))]),
            ),
            (
                "alg value as float",
                header(vec![(int(1), Value::Float(-8.0))]),
            ),
            (
                "alg value as text",
                header(vec![(int(1), Value::Text("EdDSA".into()))]),
            ),
            (
                "duplicate alg",
                header(vec![(int(1), int(-8)), (int(1), int(-8))]),
            ),
            ("not a map", vec![0x82, 0x01, 0x27]),
            ("trailing bytes", vec![0xA1, 0x01, 0x27, 0x00]),
            ("not CBOR", vec![0xFF]),
        ];
        for (what, protected) in cases {
            let env = envelope(&protected, kid_header(&k), b"p", &k, true);
            assert!(
                is_bad_manifest(verify(&env, &t)),
                "{what}: {:?}",
                verify(&env, &t)
            );
        }
        // Other entries beside 1: -8 are ignored, in any order.
        let extra = header(vec![
            (int(3), int(0)),
            (int(1), int(-8)),
            (Value::Text("x".into()), Value::Bool(true)),
        ]);
        let env = envelope(&extra, kid_header(&k), b"p", &k, false);
        assert_eq!(verify(&env, &t), Ok(b"p".to_vec()));
    }

    #[test]
    fn bad_envelope_is_bad_manifest() {
        let k = key(1);
        let t = trust(&k);
        let env = sign(b"p", &k);
        let Value::Tag(18, inner) = decode(&env) else {
            panic!("tagged")
        };
        let Value::Array(items) = *inner else {
            panic!("array")
        };

        let mut trailing = env.clone();
        trailing.push(0x00);
        let mut three = items.clone();
        three.pop();
        let mut five = items.clone();
        five.push(Value::Null);
        let mut unprotected_bstr = items.clone();
        unprotected_bstr[1] = Value::Bytes(vec![]);
        let mut payload_nil = items.clone();
        payload_nil[2] = Value::Null;
        let mut protected_tagged = items.clone();
        protected_tagged[0] = Value::Tag(24, Box::new(Value::Bytes(PROTECTED_HEADER.to_vec())));
        let mut dup_unprotected = items.clone();
        if let Value::Map(m) = &mut dup_unprotected[1] {
            let first = m[0].clone();
            m.push(first);
        }

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("not CBOR", vec![0xFF]),
            ("an integer", vec![0x01]),
            ("a map", encode(&Value::Map(vec![]))),
            ("trailing bytes", trailing),
            ("truncated", env[..env.len() - 1].to_vec()),
            ("3 elements", encode(&Value::Array(three))),
            ("5 elements", encode(&Value::Array(five))),
            (
                "unprotected as bstr",
                encode(&Value::Array(unprotected_bstr)),
            ),
            ("detached payload", encode(&Value::Array(payload_nil))),
            ("tagged protected", encode(&Value::Array(protected_tagged))),
            (
                "duplicate unprotected label",
                encode(&Value::Array(dup_unprotected)),
            ),
            (
                "tag 98 (COSE_Sign)",
                encode(&Value::Tag(98, Box::new(Value::Array(items.clone())))),
            ),
            (
                "tag 18 twice",
                encode(&Value::Tag(
                    18,
                    Box::new(Value::Tag(18, Box::new(Value::Array(items.clone())))),
                )),
            ),
        ];
        for (what, bytes) in cases {
            let r = verify(&bytes, &t);
            assert!(is_bad_manifest(r.clone()), "{what}: {r:?}");
        }
    }

    #[test]
    fn structure_is_checked_before_the_kid() {
        // An unknown kid in a broken envelope is still bad_manifest.
        let k = key(1);
        let env = envelope(&[0xA1, 0x01, 0x26], kid_header(&k), b"p", &k, true);
        assert!(is_bad_manifest(verify(&env, &TrustStore::default())));
        // An unknown kid with a broken signature is unknown_key.
        let mut env = sign(b"p", &k);
        let n = env.len();
        env[n - 1] ^= 1;
        assert_eq!(
            verify(&env, &TrustStore::default()),
            Err(CoseError::UnknownKey)
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(CoseError::BadManifest("x".into()).code(), "bad_manifest");
        assert_eq!(CoseError::UnknownKey.code(), "unknown_key");
        assert_eq!(CoseError::BadSignature.code(), "bad_signature");
        let e = verify(&[0x01], &TrustStore::default()).unwrap_err();
        assert!(e.to_string().contains("not a CBOR array"), "{e}");
    }

    #[test]
    fn peek_is_lenient() {
        let k = key(1);
        let env = sign(b"p", &k);
        let mut trailing = env.clone();
        trailing.extend_from_slice(&[1, 2, 3]);
        assert_eq!(peek_payload(&trailing).unwrap(), b"p");
        let junk = encode(&Value::Array(vec![
            Value::Null,
            Value::Null,
            Value::Bytes(b"q".to_vec()),
            Value::Null,
        ]));
        assert_eq!(peek_payload(&junk).unwrap(), b"q");
        assert!(peek_payload(&[]).is_none());
        assert!(peek_payload(&[0x01]).is_none());
        let three = encode(&Value::Array(vec![
            Value::Null,
            Value::Null,
            Value::Bytes(b"q".to_vec()),
        ]));
        assert!(peek_payload(&three).is_none());
        let text = encode(&Value::Array(vec![
            Value::Null,
            Value::Null,
            Value::Text("q".into()),
            Value::Null,
        ]));
        assert!(peek_payload(&text).is_none());
    }

    #[test]
    fn trust_store() {
        let (a, b) = (key(1).verifying_key(), key(2).verifying_key());
        let mut t = TrustStore::new([a]);
        assert!(t.contains(&kid(&a)));
        assert!(!t.contains(&kid(&b)));
        assert_eq!(t.get(&kid(&a)), Some(&a));
        assert!(t.insert(b));
        assert!(!t.insert(b));
        assert_eq!(t.len(), 2);
        assert_eq!(t.kids().count(), 2);
        assert!(TrustStore::default().is_empty());
    }
}
