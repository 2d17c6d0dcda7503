//! The device protocol's messages, one per file, each with encode, decode
//! and its round-trip tests.
//!
//! Every message is a CBOR map with text keys. Decoding is strict about the
//! payload (one item, no duplicate keys, bounded sizes) and lenient about
//! content it does not know (unknown keys are ignored).

pub mod announcement;
pub mod block;
pub mod block_request;
pub mod common;
pub mod delta;
pub mod hello;
pub mod manifest;
pub mod membership;
pub mod presence;
pub mod status;
pub mod status_ack;

pub use announcement::Announcement;
pub use block::Block;
pub use block_request::BlockRequest;
pub use common::{CampaignState, ErrorCode, Kind, StatusState};
pub use delta::Delta;
pub use hello::Hello;
pub use manifest::Manifest;
pub use membership::Membership;
pub use presence::Presence;
pub use status::Status;
pub use status_ack::StatusAck;

pub use crate::cbor::DecodeError;

/// Bounds on every length a message may carry. A payload over one is refused.
pub mod limits {
    /// Longest free text (versions, label values, detail, arch).
    pub const MAX_TEXT: usize = 256;
    /// Most entries in `versions` or `labels`.
    pub const MAX_MAP_ENTRIES: usize = 64;
    /// Most groups in a Membership.
    pub const MAX_GROUPS: usize = 256;
    /// Most manifests in a release (one per architecture).
    pub const MAX_RELEASE: usize = 16;
    /// Most delta manifests in an announcement (E3): three earlier
    /// versions for two architectures, say. With `MAX_RELEASE` manifests it
    /// keeps the largest announcement under the broker's smallest
    /// `max_payload_size` (96 KiB).
    pub const MAX_DELTAS: usize = 6;
    /// Most entries in a Hello's `features` (E3), each at most
    /// `MAX_FEATURE_LEN` bytes.
    pub const MAX_FEATURES: usize = 16;
    /// Longest feature name.
    pub const MAX_FEATURE_LEN: usize = 64;
    /// Largest encoded COSE_Sign1 manifest.
    pub const MAX_MANIFEST_BYTES: usize = 4096;
    /// Largest block (`block_size` is at most 65536).
    pub const MAX_BLOCK_DATA: usize = 65536;
    /// Most Merkle proof entries (enough for 2^32 blocks).
    pub const MAX_PROOF: usize = 32;
    /// Smallest and largest `block_size`.
    pub const MIN_BLOCK_SIZE: u32 = 256;
    /// Largest `block_size`.
    pub const MAX_BLOCK_SIZE: u32 = 65536;
    /// Largest payload of a control message (everything but Block and
    /// Announcement).
    pub const MAX_CONTROL_BYTES: usize = 16 * 1024;
    /// Largest Announcement payload.
    pub const MAX_ANNOUNCEMENT_BYTES: usize =
        (MAX_RELEASE + MAX_DELTAS) * MAX_MANIFEST_BYTES + 1024;
    // The largest announcement fits the broker's smallest payload bound.
    const _: () = assert!(MAX_ANNOUNCEMENT_BYTES < 96 * 1024);
    /// Largest Block payload.
    pub const MAX_BLOCK_BYTES: usize = MAX_BLOCK_DATA + 2048;
}

/// A wire message: a CBOR map with text keys.
pub trait WireMessage: Sized {
    /// The message's name in errors.
    const NAME: &'static str;
    /// Largest encoded size accepted.
    const MAX_BYTES: usize = limits::MAX_CONTROL_BYTES;

    /// The message as a CBOR value.
    fn to_value(&self) -> crate::cbor::Value;

    /// Reads the message from its top-level map.
    fn from_reader(r: &mut crate::cbor::MapReader) -> Result<Self, DecodeError>;

    /// The encoded payload.
    fn encode(&self) -> Vec<u8> {
        crate::cbor::encode(&self.to_value())
    }

    /// Decodes a payload strictly (one item, no duplicate keys, bounded).
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = crate::cbor::MapReader::from_bytes(bytes, Self::MAX_BYTES, Self::NAME)?;
        Self::from_reader(&mut r)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::WireMessage;
    use std::fmt::Debug;

    /// encode → decode is the identity, and the encoding is stable.
    pub fn round_trip<M: WireMessage + PartialEq + Debug>(m: &M) {
        let b = m.encode();
        let back = M::decode(&b).unwrap_or_else(|e| panic!("{}: {e}", M::NAME));
        assert_eq!(&back, m);
        assert_eq!(back.encode(), b);
    }

    /// Adds an unknown key to an encoded map: readers must ignore it.
    pub fn with_unknown_key(bytes: &[u8]) -> Vec<u8> {
        let v = crate::cbor::decode_strict(bytes, usize::MAX, "t").unwrap();
        let mut entries = match v {
            crate::cbor::Value::Map(m) => m,
            _ => panic!("not a map"),
        };
        entries.push((
            "zz_future_key".into(),
            crate::cbor::Value::Array(vec![1.into()]),
        ));
        crate::cbor::encode(&crate::cbor::Value::Map(entries))
    }
}
