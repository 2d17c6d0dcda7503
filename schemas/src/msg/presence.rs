//! Presence: online or not (`P/devices/{id}/presence`, retained; also the
//! device's MQTT will with `online: false`).

use super::{DecodeError, WireMessage};
use crate::cbor::{MapBuilder, MapReader, Value};

/// `Presence = { "online": bool }`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// True while the device is connected.
    pub online: bool,
}

impl WireMessage for Presence {
    const NAME: &'static str = "Presence";

    fn to_value(&self) -> Value {
        MapBuilder::new().put("online", self.online).build()
    }

    fn from_reader(r: &mut MapReader) -> Result<Self, DecodeError> {
        Ok(Presence {
            online: r.bool("online")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::testutil::*;

    #[test]
    fn round_trips() {
        round_trip(&Presence { online: true });
        round_trip(&Presence { online: false });
        assert_eq!(
            Presence { online: true }.encode(),
            [0xa1, 0x66, b'o', b'n', b'l', b'i', b'n', b'e', 0xf5]
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let b = MapBuilder::new().put("online", 1u64).encode();
        assert_eq!(
            Presence::decode(&b),
            Err(DecodeError::WrongType {
                key: "online",
                expected: "a boolean"
            })
        );
    }
}
