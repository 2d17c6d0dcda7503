//! Incoming publishes as the machine's events: the topic parsed, the
//! payload decoded strictly, or the reason it was refused.

use schemas::msg::{Announcement, Block, Membership, StatusAck, WireMessage};
use schemas::topic::{Topic, Topics};

use super::event::Event;

/// Turns an incoming publish into an event, or says why it was refused
/// (the device then keeps what it knew from that topic).
pub fn classify(topics: &Topics, topic: &str, payload: &[u8]) -> Result<Event, &'static str> {
    let t = topics.parse(topic).map_err(|_| "topic")?;
    match t {
        Topic::Groups(_) => Membership::decode_retained(payload)
            .map(Event::Membership)
            .map_err(|_| "membership"),
        Topic::GroupCampaign(_) | Topic::GroupEmergency(_) | Topic::Emergency => {
            Announcement::decode_retained(payload)
                .map(|payload| Event::Announcement { topic: t, payload })
                .map_err(|_| "announcement")
        }
        Topic::DeviceBlocks(_) | Topic::ArtifactBlocks(_) => Block::decode(payload)
            .map(Event::Block)
            .map_err(|_| "block"),
        Topic::Ack(_) if payload.is_empty() => Err("empty ack"),
        Topic::Ack(_) => StatusAck::decode(payload)
            .map(Event::Ack)
            .map_err(|_| "ack"),
        _ => Err("topic"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::msg::CampaignState;

    #[test]
    fn refused_payloads_are_not_events() {
        let t = Topics::default();
        assert!(matches!(
            classify(&t, "ota/v1/groups/g1/campaign", &[]),
            Ok(Event::Announcement { payload: None, .. })
        ));
        // Malformed, trailing bytes, duplicate key: refused, no event.
        assert_eq!(
            classify(&t, "ota/v1/groups/g1/campaign", &[0xff]).unwrap_err(),
            "announcement"
        );
        let img = crate::testkit::TestImage::new(
            "fw",
            schemas::msg::Kind::App,
            "main",
            "1.3.0",
            "esp32",
            vec![1; 300],
            256,
        )
        .unwrap();
        let mut a =
            crate::testkit::announcement("c", schemas::msg::Kind::App, vec![vec![1]]).unwrap();
        a.state = CampaignState::Paused;
        let mut bytes = a.encode();
        bytes.push(0x00);
        assert!(classify(&t, "ota/v1/emergency", &bytes).is_err());
        let b = img.block(0).unwrap();
        assert!(matches!(
            classify(&t, "ota/v1/devices/d/blocks", &b.encode()),
            Ok(Event::Block(_))
        ));
        assert!(matches!(
            classify(&t, "ota/v1/artifacts/fw/blocks", &b.encode()),
            Ok(Event::Block(_))
        ));
        assert!(classify(&t, "ota/v1/devices/d/ack", &[]).is_err());
        assert!(matches!(
            classify(&t, "ota/v1/devices/d/ack", &StatusAck { seq: 3 }.encode()),
            Ok(Event::Ack(StatusAck { seq: 3 }))
        ));
        assert!(matches!(
            classify(&t, "ota/v1/devices/d/groups", &[]),
            Ok(Event::Membership(m)) if m.groups.is_empty()
        ));
        let bad_group = schemas::cbor::MapBuilder::new()
            .put("groups", schemas::cbor::Value::Array(vec!["a/b".into()]))
            .encode();
        assert!(classify(&t, "ota/v1/devices/d/groups", &bad_group).is_err());
        assert!(classify(&t, "elsewhere/x", &[]).is_err());
        assert!(classify(&t, "ota/v1/devices/d/status", &[]).is_err());
    }
}
