//! Signed control messages: PROTOCOL.md E2.
//!
//! A Membership, Announcement or StatusAck may carry one more key, `auth`:
//! a COSE_Sign1 (as for manifests, see [`crate::cose`]) by the bridge's
//! *director key*, whose payload is the encoded [`Control`]:
//!
//! ```text
//! Control = { "topic": tstr, "counter": uint, "issued": uint,
//!             "expires": uint, "body": { * tstr => any } }
//! ```
//!
//! [`sign`] writes the v1 keys of the message (so a device without the
//! director key reads it as before) and `auth` beside them. [`verify`]
//! is what a device provisioned with director keys does instead of
//! reading the outer keys: E2's seven checks in E2's order, each failure
//! one [`ControlError`] whose [`ControlError::code`] is the reason a
//! device logs (never puts in a Status).
//!
//! Director keys live in their own [`DirectorKeys`], never in a release
//! [`TrustStore`]: a release key does not verify a Control and a director
//! key does not verify a manifest, because the two sets cannot be mixed up
//! by type, and [`DirectorKeys::apart_from`] refuses a set that shares a
//! key with the release keys.

use crate::cbor::{decode_strict, MapBuilder, MapReader, Value};
use crate::cose::{self, CoseError, TrustStore};
use crate::keys::{Kid, SigningKey, VerifyingKey};
use crate::msg::{Announcement, DecodeError, Membership, StatusAck, WireMessage};

/// The key of the envelope in a signed message.
pub const AUTH_KEY: &str = "auth";

/// Largest encoded Control we read (it holds a whole message).
pub const MAX_CONTROL_ENVELOPE: usize = crate::msg::limits::MAX_ANNOUNCEMENT_BYTES;

/// A message kind that may be signed, and whether its `expires` is checked
/// (E2 step 6: for a Membership or an Announcement, not a StatusAck).
pub trait ControlBody: WireMessage {
    /// True when a device with a clock refuses an expired one.
    const CHECKS_EXPIRY: bool;
}

impl ControlBody for Membership {
    const CHECKS_EXPIRY: bool = true;
}

impl ControlBody for Announcement {
    const CHECKS_EXPIRY: bool = true;
}

impl ControlBody for StatusAck {
    const CHECKS_EXPIRY: bool = false;
}

/// The signed payload of `auth`.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    /// The exact topic the message is published on.
    pub topic: String,
    /// Greater than every counter the bridge signed before.
    pub counter: u64,
    /// Unix seconds.
    pub issued: u64,
    /// Unix seconds; checked for Memberships and Announcements.
    pub expires: u64,
    /// The message itself, without `auth`: a map with text keys.
    pub body: Value,
}

impl Control {
    /// The encoded Control, keys in the order of E2.
    pub fn encode(&self) -> Vec<u8> {
        MapBuilder::new()
            .put("topic", self.topic.as_str())
            .put("counter", self.counter)
            .put("issued", self.issued)
            .put("expires", self.expires)
            .put("body", self.body.clone())
            .encode()
    }

    /// Decodes a Control strictly (one item, no duplicate key at any
    /// depth, `body` a map).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = MapReader::from_bytes(bytes, MAX_CONTROL_ENVELOPE, "Control")?;
        let topic = r.text("topic", 1024)?;
        let counter = r.uint("counter")?;
        let issued = r.uint("issued")?;
        let expires = r.uint("expires")?;
        let body = r.value("body")?;
        if !matches!(body, Value::Map(_)) {
            return Err(DecodeError::WrongType {
                key: "body",
                expected: "a map with text keys",
            });
        }
        Ok(Control {
            topic,
            counter,
            issued,
            expires,
            body,
        })
    }
}

/// When a signature was made and how long it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub counter: u64,
    pub issued: u64,
    pub expires: u64,
}

/// The counter to sign with next: the greater of the last one + 1 and the
/// clock in milliseconds (E2), so a counter never repeats, and a signer
/// that lost its last counter but not its clock still moves forward.
pub fn next_counter(last: u64, now_ms: u64) -> u64 {
    last.saturating_add(1).max(now_ms)
}

/// Signs `msg` for `topic`: its v1 keys, then `auth`, a COSE_Sign1 by
/// `director` of the Control whose body is the message.
pub fn sign<M: ControlBody>(msg: &M, topic: &str, stamp: Stamp, director: &SigningKey) -> Vec<u8> {
    let body = msg.to_value();
    let control = Control {
        topic: topic.to_string(),
        counter: stamp.counter,
        issued: stamp.issued,
        expires: stamp.expires,
        body: body.clone(),
    };
    let auth = cose::sign(&control.encode(), director);
    let Value::Map(mut entries) = body else {
        // Invariant: every WireMessage is a map (WireMessage::to_value).
        unreachable!("a wire message encodes as a map")
    };
    entries.push((Value::Text(AUTH_KEY.into()), Value::Bytes(auth)));
    crate::cbor::encode(&Value::Map(entries))
}

/// The trusted director public keys, by kid. Apart from release keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectorKeys {
    keys: TrustStore,
}

/// A director key that is also a release key: refused (E2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key {kid} is both a release key and a director key: a director key is never a release key; generate a separate director key (ota keygen) and provision devices with it")]
pub struct SharedKeyError {
    /// The kid, as hex.
    pub kid: String,
}

impl DirectorKeys {
    /// A set holding `keys`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self {
            keys: TrustStore::new(keys),
        }
    }

    /// A set holding `keys`, refused when one of them is in `release`.
    pub fn apart_from(
        keys: impl IntoIterator<Item = VerifyingKey>,
        release: &TrustStore,
    ) -> Result<Self, SharedKeyError> {
        let set = Self::new(keys);
        let shared = set.keys.kids().find(|k| release.contains(k)).copied();
        match shared {
            Some(k) => Err(SharedKeyError {
                kid: crate::keys::kid_to_hex(&k),
            }),
            None => Ok(set),
        }
    }

    /// True when no director key is provisioned: read messages as in v1.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when `kid` names a director key.
    pub fn contains(&self, kid: &Kid) -> bool {
        self.keys.contains(kid)
    }
}

/// Why a signed control message was dropped, in E2's order. The device
/// keeps what it knew from the topic and logs [`ControlError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// 1. Not one strict CBOR map holding `auth`.
    #[error("missing_auth: {0}")]
    MissingAuth(String),
    /// 2. `auth` is not a COSE_Sign1 with protected header `{1: -8}`.
    #[error("bad_envelope: {0}")]
    BadEnvelope(String),
    /// 2. The kid names no director key (or is missing).
    #[error("unknown_key: the kid of auth names no director key")]
    UnknownKey,
    /// 2. The signature does not hold.
    #[error(
        "bad_signature: the signature of auth does not verify with the director key its kid names"
    )]
    BadSignature,
    /// 3. The signed payload is not a Control.
    #[error("bad_control: {0}")]
    BadControl(String),
    /// 4. Signed for another topic.
    #[error("wrong_topic: signed for {signed:?}, arrived on {arrived:?}")]
    WrongTopic { signed: String, arrived: String },
    /// 5. Below the last counter accepted on this topic.
    #[error("old_counter: counter {counter} is below {last}, the last accepted on this topic")]
    OldCounter { counter: u64, last: u64 },
    /// 6. A Membership or Announcement whose `expires` has passed.
    #[error("expired: expired at {expires}, now is {now}")]
    Expired { expires: u64, now: u64 },
    /// 7. `body` is not a valid message of the topic's kind.
    #[error("bad_body: {0}")]
    BadBody(String),
}

impl ControlError {
    /// The reason, as E2 names it.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::MissingAuth(_) => "missing_auth",
            ControlError::BadEnvelope(_) => "bad_envelope",
            ControlError::UnknownKey => "unknown_key",
            ControlError::BadSignature => "bad_signature",
            ControlError::BadControl(_) => "bad_control",
            ControlError::WrongTopic { .. } => "wrong_topic",
            ControlError::OldCounter { .. } => "old_counter",
            ControlError::Expired { .. } => "expired",
            ControlError::BadBody(_) => "bad_body",
        }
    }

    /// Every reason, in E2's order.
    pub const CODES: [&'static str; 9] = [
        "missing_auth",
        "bad_envelope",
        "unknown_key",
        "bad_signature",
        "bad_control",
        "wrong_topic",
        "old_counter",
        "expired",
        "bad_body",
    ];
}

/// What the device knows when a signed message arrives.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The topic it arrived on, exactly.
    pub topic: &'a str,
    /// The last counter accepted on that topic, if any (none after a
    /// factory reset).
    pub last_counter: Option<u64>,
    /// Unix seconds, when the device has a clock.
    pub now: Option<u64>,
}

/// A message that passed every check: act on `body`, keep `counter`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified<M> {
    pub stamp: Stamp,
    pub body: M,
}

/// E2's checks, in order, on a non-empty payload (an empty one keeps its
/// v1 meaning and is not signed: the caller handles it).
pub fn verify<M: ControlBody>(
    payload: &[u8],
    expect: Expect<'_>,
    directors: &DirectorKeys,
) -> Result<Verified<M>, ControlError> {
    // 1. One strict CBOR map holding auth.
    let outer = decode_strict(payload, M::MAX_BYTES, M::NAME)
        .map_err(|e| ControlError::MissingAuth(e.to_string()))?;
    let Value::Map(entries) = outer else {
        return Err(ControlError::MissingAuth(format!(
            "the {} payload is not a map",
            M::NAME
        )));
    };
    let auth = entries
        .into_iter()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == AUTH_KEY))
        .map(|(_, v)| v)
        .ok_or_else(|| ControlError::MissingAuth(format!("the {} has no auth key", M::NAME)))?;

    // 2. The envelope, the kid, the signature.
    let Value::Bytes(auth) = auth else {
        return Err(ControlError::BadEnvelope(
            "auth is not a byte string".into(),
        ));
    };
    let signed = cose::verify(&auth, &directors.keys).map_err(|e| match e {
        CoseError::BadManifest(reason) => ControlError::BadEnvelope(reason),
        CoseError::UnknownKey => ControlError::UnknownKey,
        CoseError::BadSignature => ControlError::BadSignature,
    })?;

    // 3. A Control.
    let control = Control::decode(&signed).map_err(|e| ControlError::BadControl(e.to_string()))?;

    // 4. This topic.
    if control.topic != expect.topic {
        return Err(ControlError::WrongTopic {
            signed: control.topic.chars().take(200).collect(),
            arrived: expect.topic.to_string(),
        });
    }

    // 5. Not older than the last accepted (equal: the same message again).
    if let Some(last) = expect.last_counter {
        if control.counter < last {
            return Err(ControlError::OldCounter {
                counter: control.counter,
                last,
            });
        }
    }

    // 6. Not expired (Memberships and Announcements, with a clock).
    if let (true, Some(now)) = (M::CHECKS_EXPIRY, expect.now) {
        if control.expires <= now {
            return Err(ControlError::Expired {
                expires: control.expires,
                now,
            });
        }
    }

    // 7. The body, as a v1 message of this kind (its own auth ignored).
    let mut r =
        MapReader::new(control.body, M::NAME).map_err(|e| ControlError::BadBody(e.to_string()))?;
    let body = M::from_reader(&mut r).map_err(|e| ControlError::BadBody(e.to_string()))?;
    Ok(Verified {
        stamp: Stamp {
            counter: control.counter,
            issued: control.issued,
            expires: control.expires,
        },
        body,
    })
}

#[cfg(test)]
mod tests;
