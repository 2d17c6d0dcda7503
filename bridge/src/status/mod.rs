//! Durable status: the pure ack arithmetic ([`tracker`]) and the actor that
//! stores reports with group commit and acknowledges them ([`ingest`]).

pub mod ingest;
pub mod tracker;

use std::collections::BTreeMap;

use schemas::msg::common::Outcome;
use schemas::msg::{ErrorCode, StatusState};
use schemas::{CampaignId, ComponentName, DeviceId};

pub use ingest::Ingest;
pub use tracker::{AckTracker, DeviceAcks, HelloEffect};

/// A device's state in a campaign changed (sent to core once stored; the
/// campaign engine counts terminal outcomes from these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub device: DeviceId,
    pub campaign: CampaignId,
    pub state: StatusState,
    pub error: Option<ErrorCode>,
    /// The gating outcome, when the state is terminal.
    pub outcome: Option<Outcome>,
    pub detail: Option<String>,
    /// The versions the device reported as installed.
    pub versions: BTreeMap<ComponentName, String>,
    /// Unix seconds when it was stored.
    pub at: u64,
}
