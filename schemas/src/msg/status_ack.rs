//! StatusAck: every Status of this device with `seq <= ack.seq` is durably
//! stored (`P/devices/{id}/ack`, bridge → device, retained).

use super::{DecodeError, WireMessage};
use crate::cbor::{MapBuilder, MapReader, Value};

/// `StatusAck = { "seq": uint }`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusAck {
    /// The highest seq covered.
    pub seq: u64,
}

impl WireMessage for StatusAck {
    const NAME: &'static str = "StatusAck";

    fn to_value(&self) -> Value {
        MapBuilder::new().put("seq", self.seq).build()
    }

    fn from_reader(r: &mut MapReader) -> Result<Self, DecodeError> {
        Ok(StatusAck {
            seq: r.uint("seq")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::testutil::*;

    #[test]
    fn round_trips() {
        round_trip(&StatusAck { seq: 0 });
        round_trip(&StatusAck { seq: u64::MAX });
        round_trip(&StatusAck {
            seq: 1_790_000_000_000,
        });
    }
}
