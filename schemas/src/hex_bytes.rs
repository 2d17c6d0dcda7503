//! Byte strings as lowercase hex in JSON, for `#[serde(with =
//! "schemas::hex_bytes")]` on a `Vec<u8>`: the bridge's campaign records
//! and the device agent's state file keep signed envelopes this way.

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    hex::decode(text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Env(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn round_trips_as_lowercase_hex_and_refuses_other_text() {
        let json = serde_json::to_string(&Env(vec![0xab, 0x01])).unwrap();
        assert_eq!(json, "\"ab01\"");
        assert_eq!(
            serde_json::from_str::<Env>(&json).unwrap(),
            Env(vec![0xab, 0x01])
        );
        assert!(serde_json::from_str::<Env>("\"xyz\"").is_err());
    }
}
