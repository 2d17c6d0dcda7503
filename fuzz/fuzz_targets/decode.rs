//! Every decoder of the wire contract on arbitrary bytes: each schemas
//! message decode, COSE verify (against a fixed trusted key), the
//! operator CommandEnvelope parse, and Topics::parse. None may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::cose::TrustStore;
use schemas::msg::{
    Announcement, Block, BlockRequest, Hello, Manifest, Membership, Presence, Status, StatusAck,
    WireMessage,
};
use schemas::ops::CommandEnvelope;
use schemas::topic::Topics;

fuzz_target!(|data: &[u8]| {
    let _ = Hello::decode(data);
    let _ = Presence::decode(data);
    let _ = Membership::decode(data);
    let _ = StatusAck::decode(data);
    let _ = Announcement::decode(data);
    let _ = Manifest::decode(data);
    let _ = BlockRequest::decode(data);
    let _ = Block::decode(data);
    let _ = Status::decode(data);
    let key = schemas::keys::SigningKey::from_bytes(&[7; 32]);
    let trust = TrustStore::new([key.verifying_key()]);
    let _ = schemas::cose::verify(data, &trust);
    let _ = schemas::msg::manifest::verify_entry(data, &trust);
    let _ = CommandEnvelope::parse(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Topics::default().parse(s);
    }
});
