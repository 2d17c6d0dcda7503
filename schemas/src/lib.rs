//! The ota wire contract: everything a device, the bridge and an operator
//! exchange, made exact. No I/O, no async: every function here is a pure
//! transformation of bytes and values, so device teams and our own crates
//! share one definition and its tests are the proof.
//!
//! # Layout
//!
//! - [`ids`]: validated names (device, group, component, campaign, artifact).
//! - [`topic`]: [`topic::Topics`] builds every topic and parses incoming ones.
//! - [`cbor`]: strict CBOR reading (one item, no duplicate keys, bounds) and
//!   the map reader that names the key in every error.
//! - [`msg`]: one wire message per file, each with encode, decode and tests.
//! - [`cose`]: COSE_Sign1 envelopes for manifests (ed25519, kid).
//! - [`control`]: signed control messages (E2): the director key's `auth`,
//!   the Control it signs, and the checks a device runs in E2's order.
//! - [`merkle`]: the block Merkle tree, proofs and verification.
//! - [`bucket`]: which devices a cohort admits.
//! - [`version`]: semver precedence as the protocol defines it.
//! - [`bitmap`]: BlockRequest bitmaps.
//! - [`keys`]: key text formats and kids.
//! - [`ops`]: the operator command contract (signed JSON over MQTT).
//! - [`provisioning`]: the provisioning file a factory flashes (E1) and the
//!   password hash the registry keeps.
//! - [`release`]: building a manifest from an image (`ota artifact sign`),
//!   and a delta manifest from a delta payload (E3).
//! - [`delta_zstd`]: E3's payload, a zstd frame with the installed image as
//!   a reference prefix: making and applying it.
//! - [`hex_bytes`]: byte strings as hex in JSON (serde `with`).

pub mod bitmap;
pub mod bucket;
pub mod cbor;
pub mod control;
pub mod cose;
pub mod delta_zstd;
pub mod hex_bytes;
pub mod ids;
pub mod keys;
pub mod merkle;
pub mod msg;
pub mod ops;
pub mod provisioning;
pub mod release;
pub mod topic;
pub mod version;

pub use ids::{
    ArtifactId, CampaignId, ComponentName, DeviceId, Epoch, GroupName, NameError, RequestId,
};

/// The protocol version this crate implements.
pub const PROTOCOL_VERSION: u64 = 1;

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "ota/v1";
