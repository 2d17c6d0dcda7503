//! Durable status: the pure ack arithmetic ([`tracker`]) and the actor that
//! stores reports with group commit and acknowledges them ([`ingest`]),
//! whose sled work runs on the blocking pool (`commit`).

pub(crate) mod commit;
pub mod ingest;
pub mod quota;
pub mod tracker;

use std::collections::BTreeMap;

use schemas::msg::common::Outcome;
use schemas::msg::{ErrorCode, Hello, StatusState};
use schemas::{ArtifactId, CampaignId, ComponentName, DeviceId};

pub use ingest::{Ingest, IngestError};
pub use tracker::{AckTracker, DeviceAcks, HelloEffect};

/// What the ingest actor tells core once a batch is committed (defined
/// here, with its sender, so that status knows nothing of core).
#[derive(Debug)]
pub enum CoreMsg {
    /// One committed batch of the status ingest actor.
    FromIngest {
        /// Hellos whose epoch is stored, in arrival order.
        hellos: Vec<(DeviceId, Hello, HelloEffect)>,
        /// Campaign states that changed.
        updates: Vec<StatusUpdate>,
        /// Devices heard from in the batch.
        seen: Vec<DeviceId>,
        /// Unix seconds of the commit.
        at: u64,
        /// When the batch was sent to core: core's wait is measured from here.
        sent: std::time::Instant,
    },
}

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
    /// The artifact the report names (E3: the full image or a delta).
    pub artifact: Option<ArtifactId>,
    /// The versions the device reported as installed.
    pub versions: BTreeMap<ComponentName, String>,
    /// Unix seconds when it was stored.
    pub at: u64,
}
