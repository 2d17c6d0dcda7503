//! BlockRequest: the blocks a device still lacks (`P/devices/{id}/request`).

use super::{DecodeError, WireMessage};
use crate::bitmap::MAX_BITMAP_BYTES;
use crate::cbor::{MapBuilder, MapReader, Value};
use crate::ids::ArtifactId;

/// `BlockRequest = { "artifact", "offset", "bitmap": bstr .size (1..128) }`.
/// Bit i set means block `offset + i` is wanted; bit i is
/// `(bitmap[i/8] >> (i%8)) & 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRequest {
    /// The artifact being downloaded.
    pub artifact: ArtifactId,
    /// The block index of bit 0.
    pub offset: u32,
    /// 1 to 128 bytes.
    pub bitmap: Vec<u8>,
}

impl BlockRequest {
    /// The absolute indices of the wanted blocks.
    pub fn wanted(&self) -> impl Iterator<Item = u32> + '_ {
        crate::bitmap::wanted(self.offset, &self.bitmap)
    }
}

impl WireMessage for BlockRequest {
    const NAME: &'static str = "BlockRequest";

    fn to_value(&self) -> Value {
        MapBuilder::new()
            .put("artifact", self.artifact.as_str())
            .put("offset", u64::from(self.offset))
            .put_bytes("bitmap", &self.bitmap)
            .build()
    }

    fn from_reader(r: &mut MapReader) -> Result<Self, DecodeError> {
        let artifact = r.name("artifact")?;
        let offset = r.uint("offset")?;
        let offset = u32::try_from(offset).map_err(|_| DecodeError::Invalid {
            key: "offset",
            reason: format!("{offset} is past any image"),
        })?;
        let bitmap = r.bytes("bitmap", MAX_BITMAP_BYTES)?;
        if bitmap.is_empty() {
            return Err(DecodeError::Invalid {
                key: "bitmap",
                reason: "must hold 1 to 128 bytes".into(),
            });
        }
        Ok(BlockRequest {
            artifact,
            offset,
            bitmap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::testutil::*;

    #[test]
    fn round_trips() {
        let r = BlockRequest {
            artifact: ArtifactId::new("fw-1").unwrap(),
            offset: 1024,
            bitmap: vec![0b0000_0101, 0x80],
        };
        round_trip(&r);
        assert_eq!(r.wanted().collect::<Vec<_>>(), vec![1024, 1026, 1039]);
    }

    #[test]
    fn refuses_empty_or_oversized_bitmaps() {
        let mut r = BlockRequest {
            artifact: ArtifactId::new("fw-1").unwrap(),
            offset: 0,
            bitmap: vec![],
        };
        assert!(matches!(
            BlockRequest::decode(&r.encode()),
            Err(DecodeError::Invalid { key: "bitmap", .. })
        ));
        r.bitmap = vec![0xff; 129];
        assert!(matches!(
            BlockRequest::decode(&r.encode()),
            Err(DecodeError::Invalid { key: "bitmap", .. })
        ));
        r.bitmap = vec![0xff; 128];
        assert!(BlockRequest::decode(&r.encode()).is_ok());
    }
}
