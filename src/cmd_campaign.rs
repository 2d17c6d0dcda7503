//! `ota campaign create | start | pause | resume | abort | status | list |
//! watch | retry` and `ota emergency`: signed operator commands to a running
//! bridge, through [`bridge::client::OpsClient`]. The tables live in
//! `cmd_campaign/table.rs`, the live view in `cmd_campaign/watch.rs`, the
//! flag parsers (percentages, durations, waves) in `cmd_campaign/parse.rs`.

pub(crate) mod conn;
pub(crate) mod parse;
mod plan_table;
mod retarget;
mod retry;
pub(crate) mod table;
mod watch;

use std::path::PathBuf;

use anyhow::Context as _;
use bridge::campaign::plan::Plan;
use bridge::campaign::spec::{CampaignSpec, Gates, Kind, RollbackSpec, StandingSpec, WaveSpec};
use bridge::campaign::view::{CampaignList, CampaignStatus};
use schemas::ops::Command;
use schemas::{ArtifactId, CampaignId, GroupName};

use crate::Run;
use conn::Conn;

/// Roll out a release in waves, watch it, stop it.
///
/// A campaign sends a release (one signed artifact per arch, pushed with
/// `ota artifact push`) to target groups wave by wave: each wave raises
/// the share (cohort) of some groups that may take part. The next wave
/// starts only when the current one reaches its success bar; a failure
/// rate above the halt bar halts the campaign by itself (announced
/// `paused`, so no further device starts) until you resume or abort it.
#[derive(clap::Subcommand)]
#[command(after_long_help = "Examples:\n  \
    ota campaign plan --id fw-2.1 --release fw-2.1-esp32,fw-2.1-armv7 \\\n      \
        --wave canary=100% --wave acme=10% --wave acme=100%,globex=100%   # changes nothing\n  \
    ota campaign create --id fw-2.1 --release fw-2.1-esp32,fw-2.1-armv7 \\\n      \
        --wave canary=100% --wave acme=10% --wave acme=100%,globex=100%\n  \
    ota campaign start fw-2.1\n  \
    ota campaign watch fw-2.1\n  \
    ota campaign pause fw-2.1      # devices stop downloading, keep their blocks\n  \
    ota campaign resume fw-2.1\n  \
    ota campaign abort fw-2.1      # devices not yet installing report cancelled\n  \
    ota campaign set-gates fw-2.1 --halt-above 10%   # after a halt, then resume\n  \
    ota campaign retry fw-2.1      # a draft for the devices it left behind\n  \
    ota campaign rollback fw-2.1   # its --rollback-release to the devices that installed it\n  \
    ota campaign retarget line-3 --release fw-2.2-esp32   # a standing campaign moves on\n  \
    ota campaign list --json")]
pub enum Campaign {
    Create(Create),
    /// Show what `create` with the same flags would do; changes nothing.
    ///
    /// Per wave: the devices it admits by group and arch, those that will
    /// not download (no manifest for their arch, already on the version,
    /// below min_version), the bytes sent, and how long the downloads take
    /// at the bridge's measured pacing rate. --json for scripts.
    Plan(Create),
    /// Start a draft: announce its first wave.
    Start(Id),
    /// Pause: devices stop downloading (keeping their blocks), none
    /// starts, and the wave's timer stops.
    Pause(Id),
    /// Resume a paused campaign, or re-run a halted wave's gate with a
    /// fresh timeout.
    Resume(Id),
    /// Abort for good: devices not yet installing report cancelled;
    /// those installing finish.
    Abort(Id),
    SetGates(SetGates),
    /// Show a campaign: its plan and each wave's result, the current
    /// wave's counts by group, state and error, and the latest decisions.
    Status(Id),
    List(List),
    Watch(Watch),
    Retry(retry::Retry),
    Retarget(retarget::Retarget),
    /// Roll a campaign back now: abort it if it still runs, then send its
    /// --rollback-release to exactly the devices that installed it (what
    /// a halt does by itself).
    Rollback(Id),
}

impl Run for Campaign {
    fn run(self) -> anyhow::Result<()> {
        match self {
            Campaign::Create(c) => c.run(),
            Campaign::Plan(c) => c.plan(),
            Campaign::Start(i) => i.command("started", |id| Command::CampaignStart { id }),
            Campaign::Pause(i) => i.command("paused", |id| Command::CampaignPause { id }),
            Campaign::Resume(i) => i.command("resumed", |id| Command::CampaignResume { id }),
            Campaign::Abort(i) => i.command("aborted", |id| Command::CampaignAbort { id }),
            Campaign::SetGates(g) => g.run(),
            Campaign::Status(i) => i.command("", |id| Command::CampaignStatus { id }),
            Campaign::List(l) => l.run(),
            Campaign::Watch(w) => w.run(),
            Campaign::Retry(r) => r.run(),
            Campaign::Retarget(r) => r.run(),
            Campaign::Rollback(i) => {
                i.command("rollback started", |id| Command::CampaignRollback { id })
            }
        }
    }
}

/// Create a campaign (a draft: nothing is announced until `start`).
///
/// Give the waves with --wave, in order; each names groups and the share
/// of each group admitted once that wave starts (a group keeps its share
/// in later waves unless raised). Which devices a share admits is fixed
/// by a hash of the campaign id and device id, so 10% then 100% reaches
/// the same first 10% first. Or give the whole spec as JSON with --spec.
///
/// The reply is a pre-flight: the devices targeted, by arch, and how many
/// have an arch the release does not cover (they will report
/// incompatible_arch, counted apart from failures).
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
    ota campaign create --id fw-2.1 --release fw-2.1-esp32,fw-2.1-armv7 \\\n      \
        --wave canary=100% --wave acme=10% --wave acme=100%,globex=100% \\\n      \
        --success-bar 95% --halt-above 5% --min-sample 10 --wave-timeout 10m --soak 5m\n  \
    ota campaign create --id fw-2.2 --release fw-2.2-esp32 --wave canary=100% \\\n      \
        --target acme,globex --ramp 1%*2      # then 1%, 2%, 4% ... 64%, 100%\n  \
    ota campaign create --spec campaign.json\n\n\
    The spec file:\n  \
    {\"id\": \"fw-2.1\", \"kind\": \"firmware\", \"release\": [\"fw-2.1-esp32\", \"fw-2.1-armv7\"],\n   \
     \"waves\": [{\"cohorts\": {\"canary\": 10000}}, {\"cohorts\": {\"acme\": 1000}}],\n   \
     \"gates\": {\"success_bar_bp\": 9500, \"failure_halt_bp\": 500, \"min_sample\": 10,\n             \
     \"wave_timeout_secs\": 600, \"soak_secs\": 0}}\n  \
    (cohorts and bars in basis points: 10000 = 100%)")]
pub struct Create {
    /// The campaign id (1-64 characters of [A-Za-z0-9._-]).
    #[arg(long, value_name = "ID", required_unless_present = "spec", value_parser = parse::name::<CampaignId>)]
    id: Option<CampaignId>,

    /// The release: pushed artifact ids, one per arch, comma-separated.
    #[arg(long, value_name = "A,B", value_delimiter = ',', required_unless_present = "spec",
          value_parser = parse::name::<ArtifactId>)]
    release: Vec<ArtifactId>,

    /// One wave: GROUP=SHARE[,GROUP=SHARE...], e.g. acme=10% or
    /// acme=100%,globex=100%. Repeat for each wave, in order. Waves given
    /// here come before those of --ramp (a canary wave, say).
    #[arg(long, value_name = "GROUPS", required_unless_present_any = ["spec", "ramp"], value_parser = parse::wave)]
    wave: Vec<WaveSpec>,

    /// Waves as a ramp over the --target groups: 1%*2 starts at 1% of
    /// each and doubles every wave until 100%; 1%,10%,50%,100% gives the
    /// steps.
    #[arg(long, value_name = "RAMP", requires = "target", value_parser = parse::ramp)]
    ramp: Option<parse::Ramp>,

    /// The groups a --ramp raises, comma-separated.
    #[arg(long, value_name = "G,H", value_delimiter = ',', requires = "ramp",
          value_parser = parse::name::<GroupName>)]
    target: Vec<GroupName>,

    /// A wave passes when this share of its devices report success
    /// (devices that report not applicable, e.g. incompatible_arch, are
    /// left out).
    #[arg(long, value_name = "PCT", default_value = "95%", value_parser = parse::percent)]
    success_bar: u16,

    /// Halt when more than this share of the devices that finished failed
    /// or rolled back (judged once --min-sample have finished).
    #[arg(long, value_name = "PCT", default_value = "5%", value_parser = parse::percent)]
    halt_above: u16,

    /// Finished devices needed before the failure rate is judged, and
    /// for a wave to pass at its timeout.
    #[arg(long, value_name = "N", default_value_t = 10)]
    min_sample: u32,

    /// How long a wave waits for its devices (offline ones never stall
    /// it): e.g. 90s, 10m, 1h.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse::duration)]
    wave_timeout: u64,

    /// How long to watch a passed wave (late rollbacks still halt) before
    /// the next starts.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse::duration)]
    soak: u64,

    /// firmware, app or config; by default the kind of the first artifact.
    #[arg(long, value_name = "KIND", value_parser = parse::kind)]
    kind: Option<Kind>,

    /// Start by itself at this time, instead of on `ota campaign start`:
    /// RFC 3339 (2026-12-03T02:00:00Z, 2026-12-03T02:00:00+01:00) or a
    /// delay from now (+90m). `ota campaign start` before it starts at once.
    #[arg(long, value_name = "TIME", value_parser = parse::time)]
    start_at: Option<u64>,

    /// Stop widening at this time (RFC 3339 or +DURATION, as --start-at):
    /// no wave starts after it, downloads under way finish, and the
    /// campaign ends `expired` with its counts.
    #[arg(long, value_name = "TIME", value_parser = parse::time)]
    stop_at: Option<u64>,

    /// A maintenance window of one target group, GROUP=DAYS START-END ZONE
    /// (e.g. 'line-3=Mon-Fri 22:00-05:00 Europe/Brussels', 'acme=daily
    /// 01:00-04:00 UTC'). Outside it the group is announced paused: its
    /// devices keep their blocks and wait. While every target group is
    /// outside its window the wave timeout stands still. Repeatable.
    #[arg(long, value_name = "GROUP=WINDOW", value_parser = parse::window)]
    window: Vec<(GroupName, String)>,

    /// A standing campaign, for a factory line: it never completes, keeps
    /// admitting every device that joins its groups (through the last
    /// wave's shares, usually 100%), and halts by itself when the failure
    /// rate over its latest --halt-window results passes --halt-above.
    /// `ota campaign retarget` moves it to a newer release.
    #[arg(long)]
    standing: bool,

    /// Create it even if no registered device would take it (its groups
    /// match no device, or no device has an arch the release covers).
    /// Without it such a campaign is refused, saying why.
    #[arg(long)]
    allow_empty: bool,

    /// The latest results (success or failure) a standing campaign judges.
    #[arg(long, value_name = "N", default_value_t = 50, requires = "standing")]
    halt_window: u32,

    /// Roll back on a halt: pushed artifacts of the earlier version, one
    /// per arch, signed with allow_downgrade. When the campaign halts (or
    /// on `ota campaign rollback`), a linked campaign sends it to exactly
    /// the devices that installed this release.
    #[arg(long, value_name = "A,B", value_delimiter = ',', value_parser = parse::name::<ArtifactId>)]
    rollback_release: Vec<ArtifactId>,

    /// The rollback's waves, as rising shares of the devices to roll back
    /// (e.g. 10%,100%); by default all at once.
    #[arg(long, value_name = "PCT,PCT", value_delimiter = ',', requires = "rollback_release",
          value_parser = parse::percent)]
    rollback_waves: Vec<u16>,

    /// The whole spec as a JSON file, instead of the flags above.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["id", "release", "wave", "ramp", "kind"])]
    spec: Option<PathBuf>,

    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    conn: Conn,
}

impl Create {
    /// The --wave waves, then the --ramp's.
    fn waves(&self) -> Vec<WaveSpec> {
        let mut waves = self.wave.clone();
        if let Some(parse::Ramp(steps)) = &self.ramp {
            waves.extend(parse::ramp_waves(&self.target, steps));
        }
        waves
    }
}

impl Create {
    /// The spec the flags (or --spec) give, as JSON.
    async fn spec_json(
        &self,
        client: &bridge::client::OpsClient,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(match &self.spec {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read spec file {}", path.display()))?;
                serde_json::from_str::<serde_json::Value>(&text)
                    .with_context(|| format!("spec file {} is not JSON", path.display()))?
            }
            None => {
                let release = self.release.clone();
                let kind = match self.kind {
                    Some(k) => k,
                    None => conn::kind_of(client, &release).await?,
                };
                let spec = CampaignSpec {
                    // Invariant: clap requires --id without --spec.
                    id: self.id.clone().context("give --id (or --spec)")?,
                    kind,
                    release,
                    waves: self.waves(),
                    gates: Gates {
                        success_bar_bp: self.success_bar,
                        failure_halt_bp: self.halt_above,
                        min_sample: self.min_sample,
                        wave_timeout_secs: self.wave_timeout,
                        soak_secs: self.soak,
                    },
                    emergency: false,
                    parent: None,
                    rollback: (!self.rollback_release.is_empty()).then(|| RollbackSpec {
                        release: self.rollback_release.clone(),
                        waves: self.rollback_waves.clone(),
                    }),
                    start_at: self.start_at,
                    stop_at: self.stop_at,
                    windows: self.window.iter().cloned().collect(),
                    standing: self.standing.then_some(StandingSpec {
                        halt_window: self.halt_window,
                    }),
                    allow_empty: self.allow_empty,
                };
                serde_json::to_value(&spec).context("spec")?
            }
        })
    }

    /// `campaign plan`: the same flags, nothing created.
    fn plan(self) -> anyhow::Result<()> {
        let plan: Plan = crate::rt::block_on(conn::with_client(&self.conn, async |c| {
            let spec = self.spec_json(c).await?;
            Ok(c.call_ok(Command::CampaignPlan { spec }).await?)
        }))??;
        table::show(self.json, &plan, plan_table::plan)
    }
}

impl Run for Create {
    fn run(self) -> anyhow::Result<()> {
        let status: CampaignStatus =
            crate::rt::block_on(conn::with_client(&self.conn, async |c| {
                let spec = self.spec_json(c).await?;
                Ok(c.call_ok(Command::CampaignCreate { spec }).await?)
            }))??;
        table::show(self.json, &status, table::created)
    }
}

/// Change a running, paused or halted campaign's gates: only the flags
/// given change. After a halt, relax the bar you judged too strict, then
/// `ota campaign resume`: the wave's gate runs again with a fresh timeout.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
    ota campaign set-gates fw-2.1 --halt-above 10%\n  \
    ota campaign set-gates fw-2.1 --wave-timeout 30m --min-sample 50")]
pub struct SetGates {
    /// The campaign id.
    #[arg(value_name = "ID", value_parser = parse::name::<CampaignId>)]
    id: CampaignId,
    /// New success bar (share of a wave's applicable devices).
    #[arg(long, value_name = "PCT", value_parser = parse::percent)]
    success_bar: Option<u16>,
    /// New failure halt bar.
    #[arg(long, value_name = "PCT", value_parser = parse::percent)]
    halt_above: Option<u16>,
    /// New minimum sample.
    #[arg(long, value_name = "N")]
    min_sample: Option<u32>,
    /// New wave timeout, e.g. 30m.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    wave_timeout: Option<u64>,
    /// New soak time, e.g. 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    soak: Option<u64>,
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

impl SetGates {
    fn run(self) -> anyhow::Result<()> {
        let mut gates = serde_json::Map::new();
        let mut put = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                gates.insert(k.to_string(), v);
            }
        };
        put("success_bar_bp", self.success_bar.map(Into::into));
        put("failure_halt_bp", self.halt_above.map(Into::into));
        put("min_sample", self.min_sample.map(Into::into));
        put("wave_timeout_secs", self.wave_timeout.map(Into::into));
        put("soak_secs", self.soak.map(Into::into));
        if gates.is_empty() {
            anyhow::bail!("nothing to change: give at least one of --success-bar, --halt-above, --min-sample, --wave-timeout, --soak");
        }
        let cmd = Command::CampaignSetGates {
            id: self.id,
            gates: serde_json::Value::Object(gates),
        };
        let status: CampaignStatus = self.conn.call(cmd)?;
        table::show(self.json, &status, |s| {
            format!(
                "campaign {} gates changed: now {}\n{}",
                s.summary.id,
                s.summary.state,
                table::status(s)
            )
        })
    }
}

/// A campaign id, and how to print the reply.
#[derive(clap::Args)]
pub struct Id {
    /// The campaign id.
    #[arg(value_name = "ID", value_parser = parse::name::<CampaignId>)]
    id: CampaignId,

    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    conn: Conn,
}

impl Id {
    fn command(self, verb: &'static str, make: fn(CampaignId) -> Command) -> anyhow::Result<()> {
        let status: CampaignStatus = self.conn.call(make(self.id.clone()))?;
        table::show(self.json, &status, |s| {
            let head = match verb {
                "" => String::new(),
                _ => format!(
                    "campaign {} {verb}: now {}\n",
                    s.summary.id, s.summary.state
                ),
            };
            head + &table::status(s)
        })
    }
}

/// List every campaign with its state and current wave.
#[derive(clap::Args)]
pub struct List {
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    conn: Conn,
}

impl List {
    fn run(self) -> anyhow::Result<()> {
        let list: CampaignList = self.conn.call(Command::CampaignList)?;
        table::show(self.json, &list, table::list)
    }
}

/// Follow a campaign live: progress bars per wave and group, counts by
/// state and error, gate decisions as they happen, and a summary table
/// when it completes, halts or is aborted.
///
/// Exits 0 when the campaign completes, 1 when it halts or is aborted.
/// With --json, prints each event as one JSON line, and the final status
/// as the last line (kind "campaign.final").
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
    ota campaign watch fw-2.1\n  \
    ota campaign watch fw-2.1 --json | jq -r .message")]
pub struct Watch {
    /// The campaign id.
    #[arg(value_name = "ID", value_parser = parse::name::<CampaignId>)]
    id: CampaignId,

    /// Events as JSON lines instead of progress bars.
    #[arg(long)]
    json: bool,

    /// How often to ask for the counts.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse::duration_ms)]
    every: u64,

    #[command(flatten)]
    conn: Conn,
}

impl Watch {
    fn run(self) -> anyhow::Result<()> {
        let every = std::time::Duration::from_millis(self.every.max(100));
        crate::rt::block_on(conn::with_client(&self.conn, async |c| {
            watch::watch(c, &self.id, self.json, every).await
        }))?
    }
}

/// Send a critical fix now: no waves, no deferral, its blocks served first.
///
/// The release goes to every device of the groups (on their emergency
/// topics), or to every device (--all). Devices take it at once, even
/// those deferring or downloading another campaign. It shows in `ota
/// campaign status` and `watch` like any campaign; it completes once every
/// device reported (or after 10 minutes), and you can pause or abort it.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
    ota emergency --release cfg-1.0.1 --groups acme,globex\n  \
    ota emergency --release fix-esp32,fix-armv7 --all --id fix-2026-01\n  \
    ota campaign watch fix-2026-01")]
pub struct Emergency {
    /// The release: pushed artifact ids, one per arch, comma-separated.
    #[arg(long, value_name = "A,B", value_delimiter = ',', required = true,
          value_parser = parse::name::<ArtifactId>)]
    release: Vec<ArtifactId>,

    /// The target groups, comma-separated.
    #[arg(long, value_name = "G,H", value_delimiter = ',', required_unless_present = "all",
          conflicts_with = "all", value_parser = parse::name::<GroupName>)]
    groups: Vec<GroupName>,

    /// Every device (on P/emergency).
    #[arg(long)]
    all: bool,

    /// The campaign id; by default emergency-<unix seconds>.
    #[arg(long, value_name = "ID", value_parser = parse::name::<CampaignId>)]
    id: Option<CampaignId>,

    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    conn: Conn,
}

impl Run for Emergency {
    fn run(self) -> anyhow::Result<()> {
        let id = match self.id {
            Some(id) => id,
            None => CampaignId::new(format!("emergency-{}", bridge::unix_now()))
                .context("made-up emergency id")?,
        };
        let cmd = Command::Emergency {
            id,
            release: self.release,
            groups: self.groups,
            all: self.all,
        };
        let status: CampaignStatus = self.conn.call(cmd)?;
        table::show(self.json, &status, table::created)
    }
}
