//! `ota campaign retarget`: a standing campaign moves to a newer release
//! (the bridge makes the new standing campaign and ends the old one:
//! `bridge::ops::campaign_cmds::retarget`).

use bridge::campaign::view::CampaignStatus;
use schemas::ops::Command;
use schemas::{ArtifactId, CampaignId};

use super::{conn, parse, table};
use crate::Run;

/// Move a standing campaign (a factory line's) to a newer release.
///
/// A new standing campaign with the same groups, waves, gates and windows
/// starts at once with the new release, and the old one is aborted:
/// devices that have not started take the new release, devices already
/// installing the old one finish, and later devices get the new one.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
    ota campaign retarget line-3 --release fw-2.2-esp32   # starts line-3-r2\n  \
    ota campaign retarget line-3-r2 --release fw-2.3-esp32 --id line-3-2026w50")]
pub struct Retarget {
    /// The standing campaign to move.
    #[arg(value_name = "ID", value_parser = parse::name::<CampaignId>)]
    id: CampaignId,

    /// The new release: pushed artifacts, one per arch, of the same
    /// component.
    #[arg(long, required = true, value_name = "A,B", value_delimiter = ',',
          value_parser = parse::name::<ArtifactId>)]
    release: Vec<ArtifactId>,

    /// The new campaign's id; ID-r2 (then -r3, ...) by default.
    #[arg(long = "id", value_name = "NEW_ID", value_parser = parse::name::<CampaignId>)]
    new_id: Option<CampaignId>,

    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    conn: conn::Conn,
}

impl Run for Retarget {
    fn run(self) -> anyhow::Result<()> {
        let cmd = Command::CampaignRetarget {
            id: self.id.clone(),
            release: self.release,
            new_id: self.new_id,
        };
        let status: CampaignStatus = self.conn.call(cmd)?;
        table::show(self.json, &status, |s| {
            format!(
                "{} retargeted: {} now stands with {} {}; {} was aborted (devices installing it finish)\n{}",
                self.id,
                s.summary.id,
                s.summary.component,
                s.summary.version,
                self.id,
                table::status(s)
            )
        })
    }
}
