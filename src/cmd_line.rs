//! `ota line`: factory lines as a first-class word. A line is a group
//! (`line=NAME` by default) and the standing campaign that brings every
//! device on it to the line's release; these commands make, move and show
//! both through the ordinary group and campaign commands (no second code
//! path: `ota campaign status` shows the same campaign).

use std::fmt::Write as _;

use anyhow::Context as _;
use bridge::campaign::spec::{CampaignSpec, Gates, StandingSpec, WaveSpec, FULL_COHORT};
use bridge::campaign::view::{CampaignList, CampaignStatus, CampaignSummary};
use bridge::client::OpsClient;
use schemas::ops::Command;
use schemas::{ArtifactId, CampaignId, GroupName};

use crate::cmd_campaign::{conn, parse, table};
use crate::Run;

/// Factory lines: a group and its standing campaign, in one word.
#[derive(clap::Subcommand)]
#[command(after_long_help = "Examples:\n  \
    ota line put line-3 --release fw-2.1-esp32           # group line=line-3, standing campaign\n  \
    ota line put line-3 --release fw-2.2-esp32           # later: retargets the line\n  \
    ota line list\n  \
    ota line status line-3")]
pub enum Line {
    Put(Put),
    /// Every line: its release, state and devices brought up.
    List(Opts),
    /// One line: its release, devices brought up today and in all, the
    /// failure rate over its window, first Hello to success (p50, p99),
    /// and the devices that failed.
    Status(Name),
}

/// Make or update a line: its group and its standing campaign.
///
/// The group NAME selects the line's devices (`line=NAME` unless
/// --selector). The first time, a standing campaign NAME takes every
/// device of the group to --release, now and as they come off the line;
/// it halts by itself when more than --halt-above of its latest
/// --halt-window results fail. Given a new release later, the line's
/// campaign is retargeted (`ota campaign retarget`): devices that have
/// not started take the new release, those installing finish.
#[derive(clap::Args)]
pub struct Put {
    /// The line's name (also its group's and, at first, its campaign's).
    #[arg(value_parser = parse::name::<GroupName>)]
    name: GroupName,
    /// The line's release: pushed artifacts, one per arch.
    #[arg(long, required = true, value_name = "A,B", value_delimiter = ',',
          value_parser = parse::name::<ArtifactId>)]
    release: Vec<ArtifactId>,
    /// Which devices are on the line; default `line=NAME`.
    #[arg(long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Halt when more than this share of the latest results failed.
    #[arg(long, value_name = "PCT", default_value = "5%", value_parser = parse::percent)]
    halt_above: u16,
    /// The latest results judged.
    #[arg(long, value_name = "N", default_value_t = 50)]
    halt_window: u32,
    /// Results needed before the failure rate is judged.
    #[arg(long, value_name = "N", default_value_t = 10)]
    min_sample: u32,
    #[command(flatten)]
    opts: Opts,
}

/// A line's name.
#[derive(clap::Args)]
pub struct Name {
    #[arg(value_parser = parse::name::<GroupName>)]
    name: GroupName,
    #[command(flatten)]
    opts: Opts,
}

/// The flags every line command takes.
#[derive(clap::Args)]
pub struct Opts {
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: conn::Conn,
}

impl Run for Line {
    fn run(self) -> anyhow::Result<()> {
        match self {
            Line::Put(p) => p.run(),
            Line::List(o) => {
                let lines = crate::rt::block_on(conn::with_client(&o.conn, lines))??;
                table::show(o.json, &lines, |l| list_table(l))
            }
            Line::Status(n) => {
                let s = crate::rt::block_on(conn::with_client(&n.opts.conn, async |c| {
                    line_status(c, &n.name).await
                }))??;
                table::show(n.opts.json, &s, |s| status_text(&n.name, s))
            }
        }
    }
}

impl Put {
    fn run(self) -> anyhow::Result<()> {
        let (what, s) = crate::rt::block_on(conn::with_client(&self.opts.conn, async |c| {
            self.put(c).await
        }))??;
        table::show(self.opts.json, &s, |s| {
            format!("line {}: {what}\n{}", self.name, status_text(&self.name, s))
        })
    }

    async fn put(&self, client: &OpsClient) -> anyhow::Result<(String, CampaignStatus)> {
        let selector = self
            .selector
            .clone()
            .unwrap_or_else(|| format!("line={}", self.name));
        let _: serde_json::Value = client
            .call_ok(Command::GroupPut {
                name: self.name.clone(),
                selector: Some(selector),
                members: None,
            })
            .await?;
        if let Some(current) = current(client, &self.name).await? {
            let s = status(client, &current.id).await?;
            let now: Vec<&ArtifactId> = s.release.iter().map(|a| &a.artifact).collect();
            if now.len() == self.release.len() && self.release.iter().all(|a| now.contains(&a)) {
                return Ok((format!("already on {}", current.version), s));
            }
            let s: CampaignStatus = client
                .call_ok(Command::CampaignRetarget {
                    id: current.id.clone(),
                    release: self.release.clone(),
                    new_id: None,
                })
                .await?;
            let what = format!(
                "retargeted from {} {} to {} (campaign {})",
                current.component, current.version, s.summary.version, s.summary.id
            );
            return Ok((what, s));
        }
        let kind = conn::kind_of(client, &self.release).await?;
        let id = free_id(client, &self.name).await?;
        let spec = CampaignSpec {
            gates: Gates {
                failure_halt_bp: self.halt_above,
                min_sample: self.min_sample,
                ..Gates::default()
            },
            standing: Some(StandingSpec {
                halt_window: self.halt_window,
            }),
            ..CampaignSpec::new(
                id.clone(),
                kind,
                self.release.clone(),
                vec![WaveSpec {
                    cohorts: [(self.name.clone(), FULL_COHORT)].into(),
                }],
            )
        };
        let spec = serde_json::to_value(&spec).context("spec")?;
        let _: CampaignStatus = client.call_ok(Command::CampaignCreate { spec }).await?;
        let s: CampaignStatus = client.call_ok(Command::CampaignStart { id }).await?;
        Ok((format!("made, standing campaign {}", s.summary.id), s))
    }
}

/// The live standing campaigns: one per line.
async fn lines(client: &OpsClient) -> anyhow::Result<Vec<CampaignSummary>> {
    let l: CampaignList = client.call_ok(Command::CampaignList).await?;
    Ok(l.campaigns
        .into_iter()
        .filter(|c| c.standing && is_live(c))
        .collect())
}

fn is_live(c: &CampaignSummary) -> bool {
    !matches!(
        c.state.as_str(),
        "draft" | "completed" | "aborted" | "expired"
    )
}

/// The live standing campaign of line `name`.
async fn current(client: &OpsClient, name: &GroupName) -> anyhow::Result<Option<CampaignSummary>> {
    Ok(lines(client)
        .await?
        .into_iter()
        .find(|c| c.target_groups.len() == 1 && &c.target_groups[0] == name))
}

async fn status(client: &OpsClient, id: &CampaignId) -> anyhow::Result<CampaignStatus> {
    Ok(client
        .call_ok(Command::CampaignStatus { id: id.clone() })
        .await?)
}

async fn line_status(client: &OpsClient, name: &GroupName) -> anyhow::Result<CampaignStatus> {
    let Some(c) = current(client, name).await? else {
        anyhow::bail!(
            "no line {name}: no standing campaign runs on group {name} (make one with `ota line put {name} --release A`)"
        );
    };
    status(client, &c.id).await
}

/// The line's name as a campaign id, or the first free `NAME-rN` after an
/// ended one.
async fn free_id(client: &OpsClient, name: &GroupName) -> anyhow::Result<CampaignId> {
    let l: CampaignList = client.call_ok(Command::CampaignList).await?;
    let mut id = CampaignId::new(name.as_str()).context("a group name is a campaign id")?;
    while l.campaigns.iter().any(|c| c.id == id) {
        id = bridge::campaign::followup::retarget_id(&id)
            .with_context(|| format!("no free campaign id after {id}"))?;
    }
    Ok(id)
}

fn list_table(lines: &[CampaignSummary]) -> String {
    if lines.is_empty() {
        return "no lines yet: `ota line put NAME --release A` makes one\n".to_string();
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|c| {
            let counts = c.counts.unwrap_or_default();
            vec![
                c.target_groups
                    .first()
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
                c.id.to_string(),
                format!("{} {}", c.component, c.version),
                c.state.clone(),
                counts.success.to_string(),
                counts.failure.to_string(),
                counts.pending.to_string(),
            ]
        })
        .collect();
    table::table(
        &[
            "LINE", "CAMPAIGN", "RELEASE", "STATE", "SUCCESS", "FAILED", "PENDING",
        ],
        &rows,
    )
}

fn status_text(name: &GroupName, s: &CampaignStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "line {name}: {} {} ({}, campaign {})",
        s.summary.component, s.summary.version, s.summary.state, s.summary.id
    );
    if let Some(l) = &s.line {
        let _ = writeln!(
            out,
            "brought up: {} today, {} in all; {} failed",
            l.success_today, l.success_total, l.failure_total
        );
        let w = &l.window;
        let rate = bridge::campaign::gate::WaveCounts::failure_bp(w)
            .map_or_else(|| "-".to_string(), table::pct);
        let _ = writeln!(
            out,
            "failure rate over the latest {} results: {rate} ({} of {}; halts above {})",
            l.halt_window,
            w.failure,
            w.decided(),
            table::pct(s.gates.failure_halt_bp)
        );
        let secs = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |s| format!("{s} s"));
        let _ = writeln!(
            out,
            "first Hello to success: p50 {}, p99 {}",
            secs(l.to_success_p50),
            secs(l.to_success_p99)
        );
        if !l.failed.is_empty() {
            out.push_str("latest failures:\n");
            for f in &l.failed {
                let _ = writeln!(
                    out,
                    "  {}  {}  {}",
                    f.id,
                    f.error.as_deref().unwrap_or("-"),
                    table::when(f.at, s.now)
                );
            }
        }
    }
    out
}
