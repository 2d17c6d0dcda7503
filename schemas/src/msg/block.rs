//! Block: one verified piece of an image (`P/artifacts/{a}/blocks` broadcast
//! or `P/devices/{id}/blocks` unicast).

use super::limits::{MAX_BLOCK_DATA, MAX_PROOF};
use super::{DecodeError, WireMessage};
use crate::cbor::{MapBuilder, MapReader, Value};
use crate::ids::ArtifactId;

/// `Block = { "artifact", "index", "data": bstr, "proof": [* bstr .size 32] }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The artifact.
    pub artifact: ArtifactId,
    /// The block's index.
    pub index: u32,
    /// The block's bytes.
    pub data: Vec<u8>,
    /// Merkle siblings from the leaf level upward.
    pub proof: Vec<[u8; 32]>,
}

impl WireMessage for Block {
    const NAME: &'static str = "Block";
    const MAX_BYTES: usize = super::limits::MAX_BLOCK_BYTES;

    fn to_value(&self) -> Value {
        let proof = self
            .proof
            .iter()
            .map(|h| Value::Bytes(h.to_vec()))
            .collect();
        MapBuilder::new()
            .put("artifact", self.artifact.as_str())
            .put("index", u64::from(self.index))
            .put_bytes("data", &self.data)
            .put("proof", Value::Array(proof))
            .build()
    }

    fn from_reader(r: &mut MapReader) -> Result<Self, DecodeError> {
        let artifact = r.name("artifact")?;
        let index = r.uint("index")?;
        let index = u32::try_from(index).map_err(|_| DecodeError::Invalid {
            key: "index",
            reason: format!("{index} is past any image"),
        })?;
        let data = r.bytes("data", MAX_BLOCK_DATA)?;
        let items = r.array("proof", MAX_PROOF)?;
        let mut proof = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::Bytes(b) if b.len() == 32 => {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(&b);
                    proof.push(h);
                }
                _ => {
                    return Err(DecodeError::WrongType {
                        key: "proof",
                        expected: "an array of 32-byte strings",
                    })
                }
            }
        }
        Ok(Block {
            artifact,
            index,
            data,
            proof,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::testutil::*;

    #[test]
    fn round_trips() {
        round_trip(&Block {
            artifact: ArtifactId::new("fw-1").unwrap(),
            index: 7,
            data: vec![0xab; 4096],
            proof: vec![[1; 32], [2; 32]],
        });
        round_trip(&Block {
            artifact: ArtifactId::new("fw-1").unwrap(),
            index: 0,
            data: vec![1],
            proof: vec![],
        });
    }

    #[test]
    fn refuses_bad_proof_entries() {
        let b = MapBuilder::new()
            .put("artifact", "a")
            .put("index", 0u64)
            .put_bytes("data", &[1])
            .put("proof", Value::Array(vec![Value::Bytes(vec![0; 31])]))
            .encode();
        assert!(matches!(
            Block::decode(&b),
            Err(DecodeError::WrongType { key: "proof", .. })
        ));
    }

    #[test]
    fn refuses_oversized_data() {
        let b = Block {
            artifact: ArtifactId::new("a").unwrap(),
            index: 0,
            data: vec![0; MAX_BLOCK_DATA + 1],
            proof: vec![],
        };
        assert!(Block::decode(&b.encode()).is_err());
    }
}
