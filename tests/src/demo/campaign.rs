//! Running one campaign of the demo: create (or the emergency command),
//! start, follow it by the bridge's events with a progress bar, and the
//! line it leaves in the summary; and following the rollback a halt
//! starts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bridge::campaign::view::CampaignStatus;
use bridge::client::EventStream;
use indicatif::ProgressBar;
use schemas::ops::Command;
use schemas::CampaignId;

use super::{bar, say, CampaignLine, DemoError, DemoOptions};
use crate::stack::Stack;

pub(super) async fn run_campaign(
    stack: &Stack,
    opts: &DemoOptions,
    spec: serde_json::Value,
    emergency: Option<Command>,
) -> Result<(CampaignLine, EventStream), DemoError> {
    let started = Instant::now();
    let mut events = stack.ops().events().await?;
    let status: CampaignStatus = match emergency {
        Some(cmd) => stack.ops().call_ok(cmd).await?,
        None => {
            let created: CampaignStatus = stack
                .ops()
                .call_ok(Command::CampaignCreate { spec })
                .await?;
            let p = &created.preflight;
            let arches: Vec<String> = p
                .by_arch
                .iter()
                .map(|(a, l)| {
                    format!(
                        "{a}: {}",
                        serde_json::to_value(l)
                            .ok()
                            .and_then(|v| v.get("devices").cloned())
                            .unwrap_or_default()
                    )
                })
                .collect();
            say(
                opts,
                format!(
                    "   pre-flight: {} devices targeted ({}); {} have an arch the release does not cover",
                    p.targeted,
                    arches.join(", "),
                    p.uncovered
                ),
            );
            stack
                .ops()
                .call_ok(Command::CampaignStart {
                    id: created.summary.id.clone(),
                })
                .await?
        }
    };
    let id = status.summary.id.clone();
    let pb = bar(opts, 1, "");
    let last = follow(stack, opts, &id, &mut events, &pb).await?;
    pb.finish_and_clear();
    let line = summarize(&last, started.elapsed());
    say(
        opts,
        format!(
            "   {} {}: {} succeeded, {} failed, {} not applicable, {} still pending, in {:.1} s",
            line.campaign,
            line.state,
            line.success,
            line.failure,
            line.not_applicable,
            line.no_report,
            line.seconds
        ),
    );
    if last.summary.state == "halted" {
        if let Some(d) = last
            .history
            .iter()
            .rev()
            .find(|d| d.text.contains("halted"))
        {
            say(opts, format!("   why: {}", d.text));
        }
    }
    Ok((line, events))
}

/// Creates and starts a campaign (or sends the emergency command), and
/// follows it to its end. Returns its summary line, and the event stream
/// (to follow a rollback it started).
pub(super) async fn run(
    stack: &Stack,
    opts: &DemoOptions,
    spec: serde_json::Value,
    emergency: Option<Command>,
) -> Result<CampaignLine, DemoError> {
    Ok(run_campaign(stack, opts, spec, emergency).await?.0)
}

/// Follows `id` until it completes, halts or is aborted: decisions are
/// printed as they come, and each of its events refreshes the bar from
/// its status. Its status is read first, so a campaign that moved before
/// the call (a rollback started by a halt) is not waited for in vain.
async fn follow(
    stack: &Stack,
    opts: &DemoOptions,
    id: &CampaignId,
    events: &mut EventStream,
    pb: &ProgressBar,
) -> Result<CampaignStatus, DemoError> {
    let ended =
        |s: &CampaignStatus| matches!(s.summary.state.as_str(), "completed" | "halted" | "aborted");
    let run = async {
        let first: CampaignStatus = stack
            .ops()
            .call_ok(Command::CampaignStatus { id: id.clone() })
            .await?;
        if ended(&first) {
            return Ok(first);
        }
        loop {
            let Some(ev) = events.next().await else {
                return Err(DemoError::Stalled(format!(
                    "the event stream closed before campaign {id} ended"
                )));
            };
            if ev.campaign.as_ref() != Some(id) {
                continue;
            }
            if ev.kind != "campaign.progress" && !opts.json {
                let text = format!(
                    "   [{}] {}",
                    ev.kind.trim_start_matches("campaign."),
                    ev.message
                );
                // A hidden bar (not a terminal) prints nothing: print plainly.
                if pb.is_hidden() {
                    println!("{text}");
                } else {
                    pb.println(text);
                }
            }
            let s: CampaignStatus = stack
                .ops()
                .call_ok(Command::CampaignStatus { id: id.clone() })
                .await?;
            show_progress(pb, id, &s);
            if ended(&s) {
                return Ok(s);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .map_err(|_| DemoError::Stalled(format!("campaign {id} did not end within 180 s")))?
}

/// After a halt: the rollback campaign the halt started, followed to its
/// end on the same event stream.
pub(super) async fn follow_rollback(
    stack: &Stack,
    opts: &DemoOptions,
    parent: &CampaignId,
    events: &mut EventStream,
) -> Result<CampaignLine, DemoError> {
    let started = Instant::now();
    let child = loop {
        let s: CampaignStatus = stack
            .ops()
            .call_ok(Command::CampaignStatus { id: parent.clone() })
            .await?;
        if let Some(c) = s.summary.rollback {
            break c;
        }
        // The rollback's start is an event: look again at the next one.
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        if !matches!(tokio::time::timeout(left, events.next()).await, Ok(Some(_))) {
            return Err(DemoError::Stalled(format!(
                "campaign {parent} halted but started no rollback"
            )));
        }
    };
    let pb = bar(opts, 1, "");
    let last = follow(stack, opts, &child, events, &pb).await?;
    pb.finish_and_clear();
    let line = summarize(&last, started.elapsed());
    say(
        opts,
        format!(
            "   {} {}: {} devices rolled back to {}, {} failed, {} still pending, in {:.1} s",
            line.campaign,
            line.state,
            line.success,
            last.summary.version,
            line.failure,
            line.no_report,
            line.seconds
        ),
    );
    Ok(line)
}

fn show_progress(pb: &ProgressBar, id: &CampaignId, s: &CampaignStatus) {
    let Some(b) = &s.current else { return };
    let c = &b.counts;
    pb.set_length(u64::from(c.members.max(1)));
    pb.set_position(u64::from(c.success + c.failure + c.not_applicable));
    let wave = s
        .summary
        .wave
        .map(|w| format!("wave {}/{}", w + 1, s.summary.waves))
        .unwrap_or_default();
    pb.set_message(format!(
        "{id} {wave}: {} ok, {} failed, {} n/a, {} pending",
        c.success, c.failure, c.not_applicable, c.pending
    ));
}

fn summarize(s: &CampaignStatus, took: Duration) -> CampaignLine {
    let mut errors = BTreeMap::new();
    let (mut success, mut failure, mut na, mut pending, mut targeted) = (0, 0, 0, 0, 0);
    if let Some(b) = &s.current {
        success = b.counts.success;
        failure = b.counts.failure;
        na = b.counts.not_applicable;
        pending = b.counts.pending;
        targeted = b.counts.members;
        errors = b.by_error.clone();
    }
    CampaignLine {
        campaign: s.summary.id.clone(),
        kind: format!("{:?}", s.summary.kind).to_lowercase(),
        emergency: s.summary.emergency,
        state: s.summary.state.clone(),
        targeted,
        success,
        failure,
        not_applicable: na,
        no_report: pending,
        seconds: took.as_secs_f64(),
        errors,
    }
}
