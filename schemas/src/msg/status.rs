//! Status: a device's report on a campaign (`P/devices/{id}/status`).

use std::collections::BTreeMap;

use super::common::{put_versions, read_versions, ErrorCode, StatusState};
use super::limits::MAX_TEXT;
use super::{DecodeError, WireMessage};
use crate::cbor::{MapBuilder, MapReader, Value};
use crate::ids::{ArtifactId, CampaignId, ComponentName};

/// `Status = { "seq", ? "campaign", ? "artifact", "state", ? "progress", ? "error", ? "detail", "versions" }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Per device, the previous Status's seq + 1.
    pub seq: u64,
    /// The campaign reported on.
    pub campaign: Option<CampaignId>,
    /// The artifact picked.
    pub artifact: Option<ArtifactId>,
    /// Where the device stands.
    pub state: StatusState,
    /// Blocks verified so far.
    pub progress: Option<u64>,
    /// Why it failed.
    pub error: Option<ErrorCode>,
    /// Free text, e.g. `already_installed`, `superseded`.
    pub detail: Option<String>,
    /// Installed versions now.
    pub versions: BTreeMap<ComponentName, String>,
}

impl Status {
    /// The gating outcome of this report, if it is terminal.
    pub fn outcome(&self) -> Option<super::common::Outcome> {
        super::common::outcome(self.state, self.error)
    }
}

impl WireMessage for Status {
    const NAME: &'static str = "Status";

    fn to_value(&self) -> Value {
        let b = MapBuilder::new()
            .put("seq", self.seq)
            .put_opt("campaign", self.campaign.as_ref().map(|c| c.as_str()))
            .put_opt("artifact", self.artifact.as_ref().map(|a| a.as_str()))
            .put("state", self.state.as_str())
            .put_opt("progress", self.progress)
            .put_opt("error", self.error.map(|e| e.as_str()))
            .put_opt("detail", self.detail.as_deref());
        put_versions(b, &self.versions).build()
    }

    fn from_reader(r: &mut MapReader) -> Result<Self, DecodeError> {
        let seq = r.uint("seq")?;
        let campaign = r.opt_name("campaign")?;
        let artifact = r.opt_name("artifact")?;
        let state = StatusState::from_text("state", &r.text("state", 32)?)?;
        let progress = r.opt_uint("progress")?;
        let error = r
            .opt_text("error", 64)?
            .map(|e| ErrorCode::from_text("error", &e))
            .transpose()?;
        let detail = r.opt_text("detail", MAX_TEXT)?;
        let versions = read_versions(r)?;
        Ok(Status {
            seq,
            campaign,
            artifact,
            state,
            progress,
            error,
            detail,
            versions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::testutil::*;

    fn sample() -> Status {
        Status {
            seq: 1_790_000_000_123,
            campaign: Some(CampaignId::new("camp-2026-001").unwrap()),
            artifact: Some(ArtifactId::new("fw-1.3.0-esp32").unwrap()),
            state: StatusState::Failed,
            progress: Some(12),
            error: Some(ErrorCode::HashMismatch),
            detail: Some("sha256 differs".into()),
            versions: [(ComponentName::new("main").unwrap(), "1.2.0".to_string())].into(),
        }
    }

    #[test]
    fn round_trips() {
        round_trip(&sample());
        round_trip(&Status {
            seq: 1,
            campaign: None,
            artifact: None,
            state: StatusState::Accepted,
            progress: None,
            error: None,
            detail: None,
            versions: BTreeMap::new(),
        });
        assert_eq!(
            Status::decode(&with_unknown_key(&sample().encode())).unwrap(),
            sample()
        );
    }

    #[test]
    fn refuses_unknown_state_and_error() {
        let b = MapBuilder::new()
            .put("seq", 1u64)
            .put("state", "exploded")
            .put_text_map("versions", &BTreeMap::new())
            .encode();
        assert!(matches!(
            Status::decode(&b),
            Err(DecodeError::Invalid { key: "state", .. })
        ));
        let b = MapBuilder::new()
            .put("seq", 1u64)
            .put("state", "failed")
            .put("error", "meltdown")
            .put_text_map("versions", &BTreeMap::new())
            .encode();
        assert!(matches!(
            Status::decode(&b),
            Err(DecodeError::Invalid { key: "error", .. })
        ));
    }
}
