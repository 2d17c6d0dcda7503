//! Membership: the groups a device belongs to (`P/devices/{id}/groups`,
//! bridge → device, retained). An empty payload means no groups.

use super::limits::MAX_GROUPS;
use super::{DecodeError, WireMessage};
use crate::cbor::{as_text, MapBuilder, MapReader, Value};
use crate::ids::GroupName;

/// `Membership = { "groups": [* tstr] }`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// Group names, sorted and without duplicates when the bridge builds it.
    pub groups: Vec<GroupName>,
}

impl Membership {
    /// Decodes a retained payload: empty means no groups.
    pub fn decode_retained(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            Ok(Self::default())
        } else {
            Self::decode(bytes)
        }
    }
}

impl WireMessage for Membership {
    const NAME: &'static str = "Membership";

    fn to_value(&self) -> Value {
        let groups = self
            .groups
            .iter()
            .map(|g| Value::Text(g.to_string()))
            .collect();
        MapBuilder::new()
            .put("groups", Value::Array(groups))
            .build()
    }

    fn from_reader(r: &mut MapReader) -> Result<Self, DecodeError> {
        let items = r.array("groups", MAX_GROUPS)?;
        let mut groups = Vec::with_capacity(items.len());
        for item in items {
            let s = as_text("groups", item, 256)?;
            let g = GroupName::new(s).map_err(|e| DecodeError::Invalid {
                key: "groups",
                reason: e.to_string(),
            })?;
            groups.push(g);
        }
        Ok(Membership { groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::testutil::*;

    #[test]
    fn round_trips() {
        round_trip(&Membership::default());
        round_trip(&Membership {
            groups: vec![
                GroupName::new("acme").unwrap(),
                GroupName::new("canary").unwrap(),
            ],
        });
        assert_eq!(
            Membership::decode_retained(&[]).unwrap(),
            Membership::default()
        );
    }

    #[test]
    fn refuses_a_bad_group_name() {
        let b = MapBuilder::new()
            .put("groups", Value::Array(vec!["a/b".into()]))
            .encode();
        assert!(matches!(
            Membership::decode(&b),
            Err(DecodeError::Invalid { key: "groups", .. })
        ));
    }
}
