//! The operator's steps the harness takes for a campaign, as `ota campaign
//! create` and `ota campaign start` do them.

use bridge::campaign::view::CampaignStatus;
use bridge::client::{ClientError, OpsClient};
use schemas::ops::Command;
use schemas::CampaignId;

/// Creates and starts a campaign from its JSON spec; returns its id.
pub async fn start_campaign(
    ops: &OpsClient,
    spec: serde_json::Value,
) -> Result<CampaignId, ClientError> {
    let created: CampaignStatus = ops.call_ok(Command::CampaignCreate { spec }).await?;
    let id = created.summary.id.clone();
    let _: CampaignStatus = ops
        .call_ok(Command::CampaignStart { id: id.clone() })
        .await?;
    Ok(id)
}
