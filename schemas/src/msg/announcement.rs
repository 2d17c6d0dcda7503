//! Announcement: a campaign offered to a group (`P/groups/{g}/campaign`),
//! an emergency to a group (`P/groups/{g}/emergency`) or to every device
//! (`P/emergency`). Retained; an empty payload means "no campaign".

use super::common::{CampaignState, Kind};
use super::limits::{MAX_DELTAS, MAX_MANIFEST_BYTES, MAX_RELEASE};
use super::{DecodeError, WireMessage};
use crate::cbor::{MapBuilder, MapReader, Value};
use crate::ids::CampaignId;

/// The largest cohort: every device of the group.
pub const FULL_COHORT: u64 = 10_000;

/// `Announcement = { "campaign", "kind", "release", "cohort", "emergency", "state", ? "deadline", ? "deltas" }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The campaign.
    pub campaign: CampaignId,
    /// Firmware, app or config.
    pub kind: Kind,
    /// COSE_Sign1 manifests, one per architecture (1 to 16).
    pub release: Vec<Vec<u8>>,
    /// Basis points of the group admitted so far (0..=10000).
    pub cohort: u16,
    /// True on emergency topics only.
    pub emergency: bool,
    /// Active, paused or aborted.
    pub state: CampaignState,
    /// Informational: when the bridge stops waiting (Unix seconds).
    pub deadline: Option<u64>,
    /// E3: COSE_Sign1 delta manifests (0 to `MAX_DELTAS`); absent when empty.
    pub deltas: Vec<Vec<u8>>,
}

impl Announcement {
    /// Decodes a retained payload: empty means no campaign (`Ok(None)`).
    pub fn decode_retained(bytes: &[u8]) -> Result<Option<Self>, DecodeError> {
        if bytes.is_empty() {
            Ok(None)
        } else {
            Self::decode(bytes).map(Some)
        }
    }
}

impl WireMessage for Announcement {
    const NAME: &'static str = "Announcement";
    const MAX_BYTES: usize = super::limits::MAX_ANNOUNCEMENT_BYTES;

    fn to_value(&self) -> Value {
        let release = self
            .release
            .iter()
            .map(|m| Value::Bytes(m.clone()))
            .collect();
        MapBuilder::new()
            .put("campaign", self.campaign.as_str())
            .put("kind", self.kind.as_str())
            .put("release", Value::Array(release))
            .put("cohort", u64::from(self.cohort))
            .put("emergency", self.emergency)
            .put("state", self.state.as_str())
            .put_opt("deadline", self.deadline)
            .put_opt(
                "deltas",
                (!self.deltas.is_empty()).then(|| {
                    Value::Array(
                        self.deltas
                            .iter()
                            .map(|m| Value::Bytes(m.clone()))
                            .collect(),
                    )
                }),
            )
            .build()
    }

    fn from_reader(r: &mut MapReader) -> Result<Self, DecodeError> {
        let campaign = r.name("campaign")?;
        let kind = Kind::from_text("kind", &r.text("kind", 32)?)?;
        let items = r.array("release", MAX_RELEASE)?;
        if items.is_empty() {
            return Err(DecodeError::Invalid {
                key: "release",
                reason: "must hold at least one manifest".into(),
            });
        }
        let release = manifests("release", items)?;
        let deltas = if r.has("deltas") {
            manifests("deltas", r.array("deltas", MAX_DELTAS)?)?
        } else {
            Vec::new()
        };
        let cohort = r.uint("cohort")?;
        if cohort > FULL_COHORT {
            return Err(DecodeError::Invalid {
                key: "cohort",
                reason: format!("{cohort} is above 10000"),
            });
        }
        Ok(Announcement {
            campaign,
            kind,
            release,
            cohort: cohort as u16,
            emergency: r.bool("emergency")?,
            state: CampaignState::from_text("state", &r.text("state", 32)?)?,
            deadline: r.opt_uint("deadline")?,
            deltas,
        })
    }
}

/// An array of byte strings, each at most `MAX_MANIFEST_BYTES`.
fn manifests(key: &'static str, items: Vec<Value>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Bytes(b) if b.len() <= MAX_MANIFEST_BYTES => out.push(b),
            Value::Bytes(_) => {
                return Err(DecodeError::Invalid {
                    key,
                    reason: format!("a manifest is over {MAX_MANIFEST_BYTES} bytes"),
                })
            }
            _ => {
                return Err(DecodeError::WrongType {
                    key,
                    expected: "an array of byte strings",
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::testutil::*;

    fn sample() -> Announcement {
        Announcement {
            campaign: CampaignId::new("camp-2026-001").unwrap(),
            kind: Kind::Firmware,
            release: vec![vec![0xd2, 0x84], vec![0x84]],
            cohort: 1000,
            emergency: false,
            state: CampaignState::Active,
            deadline: Some(1_790_000_000),
            deltas: Vec::new(),
        }
    }

    #[test]
    fn round_trips() {
        round_trip(&sample());
        let mut a = sample();
        a.deadline = None;
        a.emergency = true;
        a.cohort = 10_000;
        a.state = CampaignState::Aborted;
        round_trip(&a);
        a.deltas = vec![vec![0xd2, 0x84, 1]];
        round_trip(&a);
        assert_eq!(Announcement::decode_retained(&[]).unwrap(), None);
    }

    #[test]
    fn refuses_bad_fields() {
        let mut a = sample();
        a.release.clear();
        assert!(matches!(
            Announcement::decode(&a.encode()),
            Err(DecodeError::Invalid { key: "release", .. })
        ));
        let mut a = sample();
        a.release = vec![vec![0; MAX_MANIFEST_BYTES + 1]];
        assert!(Announcement::decode(&a.encode()).is_err());
        let mut a = sample();
        a.release = vec![vec![0]; MAX_RELEASE + 1];
        assert!(Announcement::decode(&a.encode()).is_err());
        let mut a = sample();
        a.deltas = vec![vec![0]; MAX_DELTAS + 1];
        assert!(matches!(
            Announcement::decode(&a.encode()),
            Err(DecodeError::Invalid { key: "deltas", .. })
        ));
        let mut a = sample();
        a.deltas = vec![vec![0; MAX_MANIFEST_BYTES + 1]];
        assert!(matches!(
            Announcement::decode(&a.encode()),
            Err(DecodeError::Invalid { key: "deltas", .. })
        ));
        // The largest announcement fits the broker's smallest payload bound.
        let mut a = sample();
        a.release = vec![vec![0; MAX_MANIFEST_BYTES]; MAX_RELEASE];
        a.deltas = vec![vec![0; MAX_MANIFEST_BYTES]; MAX_DELTAS];
        assert!(a.encode().len() <= super::super::limits::MAX_ANNOUNCEMENT_BYTES);
        assert!(Announcement::decode(&a.encode()).is_ok());
        let b = MapBuilder::new()
            .put("campaign", "c")
            .put("kind", "firmware")
            .put("release", Value::Array(vec![Value::Bytes(vec![1])]))
            .put("cohort", 10_001u64)
            .put("emergency", false)
            .put("state", "active")
            .encode();
        assert!(matches!(
            Announcement::decode(&b),
            Err(DecodeError::Invalid { key: "cohort", .. })
        ));
        let b = MapBuilder::new()
            .put("campaign", "c")
            .put("kind", "kernel")
            .encode();
        assert!(matches!(
            Announcement::decode(&b),
            Err(DecodeError::Invalid { key: "kind", .. })
        ));
    }
}
