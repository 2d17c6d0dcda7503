//! Step 4, "Maybe later": whether a device puts off a non-emergency
//! campaign. A hook, so a real device can ask its battery or maintenance
//! window and the simulator can roll dice from a seeded RNG. The machine
//! never asks it about an emergency.

use schemas::msg::Manifest;
use schemas::CampaignId;

/// Decides whether to put a campaign off.
pub trait DeferPolicy: Send + Sync {
    /// `Some(ms)`: put `campaign` off and look again in `ms` milliseconds;
    /// `None`: go ahead. Asked when the device accepts and at each look
    /// again; never for an emergency.
    fn defer(&mut self, now_ms: u64, campaign: &CampaignId, manifest: &Manifest) -> Option<u64>;
}

/// Never puts anything off.
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverDefer;

impl DeferPolicy for NeverDefer {
    fn defer(&mut self, _now_ms: u64, _campaign: &CampaignId, _manifest: &Manifest) -> Option<u64> {
        None
    }
}

/// Busy for the first `times` looks at each campaign, `for_ms` each time
/// (the simulator's "busy deferral", and tests').
#[derive(Debug, Clone, Default)]
pub struct BusyFor {
    times: u32,
    for_ms: u64,
    seen: std::collections::HashMap<CampaignId, u32>,
}

impl BusyFor {
    /// Busy `times` times per campaign, `for_ms` milliseconds each.
    pub fn new(times: u32, for_ms: u64) -> Self {
        Self {
            times,
            for_ms,
            seen: Default::default(),
        }
    }
}

impl DeferPolicy for BusyFor {
    fn defer(&mut self, _now_ms: u64, campaign: &CampaignId, _manifest: &Manifest) -> Option<u64> {
        let n = self.seen.entry(campaign.clone()).or_insert(0);
        if *n < self.times {
            *n += 1;
            Some(self.for_ms)
        } else {
            None
        }
    }
}
