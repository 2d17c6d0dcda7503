//! `ota campaign retry`: a follow-up draft for the leftovers of a
//! campaign that ended (the bridge picks them: `bridge::campaign::followup`).

use bridge::campaign::view::CampaignStatus;
use schemas::ops::Command;
use schemas::CampaignId;

use super::{conn, parse, table};
use crate::Run;

/// Follow up the devices a campaign left behind: a new draft with the
/// same release and gates whose members are exactly those devices.
///
/// Once a campaign completed, halted or was aborted, some of its devices
/// timed out (offline, or still downloading at the wave timeout) or
/// failed. `retry` puts them in an explicit group named after the new
/// campaign and creates a draft targeting that group; start it with
/// `ota campaign start`, like any draft. Devices that succeeded, or were
/// counted apart (wrong arch, version rules, cancelled), are not taken.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
    ota campaign retry fw-2.1                         # timed-out and failed devices\n  \
    ota campaign retry fw-2.1 --only failed:timeout,offline --id fw-2.1-b\n  \
    ota campaign start fw-2.1-retry\n\n\
    --only classes:\n  \
    timed-out        no final report (offline or not)\n  \
    offline          no final report, and offline now\n  \
    failed           failed or rolled back, any error\n  \
    failed:ERROR     failed with that error, e.g. failed:timeout, failed:install_failed")]
pub struct Retry {
    /// The campaign to follow up.
    #[arg(value_name = "ID", value_parser = parse::name::<CampaignId>)]
    id: CampaignId,

    /// The follow-up's id (and its group's name); ID-retry by default.
    #[arg(long = "id", value_name = "NEW_ID", value_parser = parse::name::<CampaignId>)]
    new_id: Option<CampaignId>,

    /// Which leftovers, comma-separated: timed-out, offline, failed,
    /// failed:ERROR. By default timed-out and failed.
    #[arg(long, value_name = "CLASSES", value_delimiter = ',')]
    only: Vec<String>,

    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    conn: conn::Conn,
}

impl Run for Retry {
    fn run(self) -> anyhow::Result<()> {
        let cmd = Command::CampaignRetry {
            id: self.id.clone(),
            new_id: self.new_id,
            only: self.only,
        };
        let status: CampaignStatus = self.conn.call(cmd)?;
        table::show(self.json, &status, |s| {
            format!(
                "follow-up of {}: {} device(s) left behind\n{}",
                self.id,
                s.preflight.targeted,
                table::created(s)
            )
        })
    }
}
