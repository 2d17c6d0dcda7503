//! `ota campaign watch`: progress bars per group of the current wave
//! (indicatif), the gate's decisions as they happen (from `P/ops/events`),
//! counts polled from `campaign status`, and the summary table once the
//! campaign completes, halts or is aborted. `--json` prints the events as
//! JSON lines instead.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use bridge::campaign::events::kind;
use bridge::campaign::gate::Phase;
use bridge::campaign::tally::Breakdown;
use bridge::campaign::view::CampaignStatus;
use bridge::client::OpsClient;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use schemas::ops::{Command, Event};
use schemas::CampaignId;

use super::table;

/// Follows campaign `id` until it completes (Ok), halts or is aborted (an
/// error, so scripts can tell).
pub async fn watch(
    client: &OpsClient,
    id: &CampaignId,
    json: bool,
    every: Duration,
) -> anyhow::Result<()> {
    // Subscribe first: nothing that happens after the first status is missed.
    let mut events = client.events().await?;
    let mut status: CampaignStatus = client
        .call_ok(Command::CampaignStatus { id: id.clone() })
        .await?;
    let mut bars = (!json).then(Bars::new);
    if let Some(b) = &mut bars {
        b.say(&format!(
            "watching campaign {id} ({}): Ctrl-C stops watching, not the campaign",
            status.summary.state
        ));
        b.update(&status);
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !ended(&status) {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { bail!("lost the connection to the broker while watching") };
                if ev.campaign.as_ref() != Some(id) {
                    continue;
                }
                match &mut bars {
                    None => println!("{}", serde_json::to_string(&ev)?),
                    Some(b) => b.event(&ev),
                }
                if matches!(ev.kind.as_str(), kind::COMPLETED | kind::ABORTED | kind::HALTED | kind::WAVE_STARTED) {
                    status = client.call_ok(Command::CampaignStatus { id: id.clone() }).await?;
                    if let Some(b) = &mut bars { b.update(&status); }
                }
            }
            _ = tick.tick() => {
                status = client.call_ok(Command::CampaignStatus { id: id.clone() }).await?;
                if let Some(b) = &mut bars { b.update(&status); }
            }
        }
    }
    match bars {
        None => {
            let last = Event {
                ts: status.now,
                kind: "campaign.final".into(),
                campaign: Some(id.clone()),
                message: format!("campaign {id} is {}", status.summary.state),
                data: serde_json::to_value(&status)?,
            };
            println!("{}", serde_json::to_string(&last)?);
        }
        Some(b) => {
            b.finish();
            print!("{}", table::summary(&status));
        }
    }
    match &status.phase {
        Phase::Completed { .. } => Ok(()),
        Phase::Halted { reason, .. } => bail!(
            "campaign {id} halted: {reason} (resume it with `ota campaign resume {id}`, or abort it)"
        ),
        Phase::Expired { .. } => bail!(
            "campaign {id} expired (its --stop-at came): `ota campaign retry {id}` follows up the devices it did not reach"
        ),
        _ => bail!("campaign {id} was aborted"),
    }
}

fn ended(s: &CampaignStatus) -> bool {
    matches!(
        s.phase,
        Phase::Completed { .. }
            | Phase::Aborted { .. }
            | Phase::Halted { .. }
            | Phase::Expired { .. }
    )
}

/// The bars of the current wave: one per target group and one for all.
struct Bars {
    mp: MultiProgress,
    wave: Option<usize>,
    bars: BTreeMap<String, ProgressBar>,
}

impl Bars {
    fn new() -> Self {
        Self {
            mp: MultiProgress::new(),
            wave: None,
            bars: BTreeMap::new(),
        }
    }

    /// A line above the bars (or plainly, when they are hidden).
    fn say(&self, line: &str) {
        if self.mp.is_hidden() || self.mp.println(line).is_err() {
            println!("{line}");
        }
    }

    fn event(&mut self, ev: &Event) {
        // Progress events only move the bars, which polling does too.
        if ev.kind != kind::PROGRESS && ev.kind != kind::ANNOUNCED {
            let time = clock(ev.ts);
            self.say(&format!("{time}  {}", ev.message));
        }
    }

    fn update(&mut self, s: &CampaignStatus) {
        if s.summary.wave != self.wave {
            for (_, b) in std::mem::take(&mut self.bars) {
                b.finish();
            }
            self.wave = s.summary.wave;
            if let Some(w) = self.wave {
                let label = if s.summary.emergency {
                    "emergency".to_string()
                } else {
                    format!("wave {} of {}", w + 1, s.summary.waves)
                };
                self.say(&format!("-- {label} --"));
            }
        }
        let mut lines: Vec<(String, &Breakdown)> = s
            .groups
            .iter()
            .map(|g| (format!("{} {}", g.group, table::pct(g.cohort)), &g.members))
            .collect();
        if let Some(all) = &s.current {
            lines.push(("all".to_string(), all));
        }
        for (name, b) in lines {
            let bar = self.bars.entry(name.clone()).or_insert_with(|| {
                let bar = self.mp.add(ProgressBar::new(0));
                // Invariant: the template is a constant that parses.
                if let Ok(style) = ProgressStyle::with_template(
                    "{prefix:>16} [{bar:28.green/red}] {pos:>5}/{len:<5} {msg}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(name);
                bar
            });
            let c = &b.counts;
            bar.set_length(u64::from(c.members));
            bar.set_position(u64::from(c.success + c.failure + c.not_applicable));
            bar.set_message(counts_text(b));
        }
    }

    fn finish(self) {
        for (_, b) in self.bars {
            b.finish();
        }
    }
}

/// `ok 10  failed 1  n/a 2 | downloading 3, installing 1 | no_space 1`
fn counts_text(b: &Breakdown) -> String {
    let c = &b.counts;
    let mut s = format!(
        "ok {}  failed {}  n/a {}",
        c.success, c.failure, c.not_applicable
    );
    if c.anomaly > 0 {
        s.push_str(&format!("  anomalies {}", c.anomaly));
    }
    let busy: Vec<String> = b
        .by_state
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "success" | "failed" | "rolled_back" | "cancelled"
            )
        })
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if !busy.is_empty() {
        s.push_str(" | ");
        s.push_str(&busy.join(", "));
    }
    if !b.by_error.is_empty() {
        let errors: Vec<String> = b.by_error.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s.push_str(" | ");
        s.push_str(&errors.join(", "));
    }
    s
}

/// `HH:MM:SS` (UTC) of a Unix time.
fn clock(ts: u64) -> String {
    let s = ts % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}
