//! Operator events for campaigns, on `P/ops/events`: one per gate effect
//! (`campaign.wave_started`, `campaign.halted`, `campaign.decision`, ...),
//! plus `campaign.created` and throttled `campaign.progress` tallies. The
//! `data` of a gate effect is the effect itself as JSON (a decision's
//! numbers included), so scripts read the same shapes as `ota campaign
//! status --json`; the `message` is the English, rendered here and in
//! [`super::gate::narrate`].

use schemas::ops::Event;
use schemas::CampaignId;

use super::gate::{AnnounceState, Clock, Effect, Scope, WaveCounts};

/// The event kind of every campaign event, for `--json` readers.
pub mod kind {
    pub const CREATED: &str = "campaign.created";
    pub const ANNOUNCED: &str = "campaign.announced";
    pub const WAVE_STARTED: &str = "campaign.wave_started";
    pub const WAVE_PASSED: &str = "campaign.wave_passed";
    pub const SOAKING: &str = "campaign.soaking";
    pub const HALTED: &str = "campaign.halted";
    pub const PAUSED: &str = "campaign.paused";
    pub const RESUMED: &str = "campaign.resumed";
    pub const COMPLETED: &str = "campaign.completed";
    pub const ABORTED: &str = "campaign.aborted";
    pub const EXPIRED: &str = "campaign.expired";
    pub const DECISION: &str = "campaign.decision";
    pub const PROGRESS: &str = "campaign.progress";
    pub const ANOMALY: &str = "campaign.anomaly";
}

/// The event for one gate effect; `scope` is its campaign's (the texts
/// say "wave 2 of 3" or "the emergency").
pub fn of_effect(campaign: &CampaignId, scope: Scope, at: u64, effect: &Effect) -> Event {
    let (k, message) = match effect {
        Effect::Announce(a) => (
            kind::ANNOUNCED,
            format!(
                "campaign {campaign} announced {} at wave {}{}",
                match a.state {
                    AnnounceState::Active => "active",
                    AnnounceState::Paused => "paused",
                    AnnounceState::Aborted => "aborted",
                },
                a.wave + 1,
                if a.closed.is_empty() || a.state != AnnounceState::Active {
                    String::new()
                } else {
                    let g: Vec<String> = a.closed.iter().map(|g| g.to_string()).collect();
                    format!(" (paused outside its window: {})", g.join(", "))
                }
            ),
        ),
        Effect::WaveStarted { wave, deadline } => (
            kind::WAVE_STARTED,
            format!(
                "campaign {campaign}: wave {} started, waits until {}",
                wave + 1,
                Clock(*deadline)
            ),
        ),
        Effect::WavePassed { wave, counts, .. } => (
            kind::WAVE_PASSED,
            format!(
                "campaign {campaign}: wave {} passed ({})",
                wave + 1,
                counts_text(counts)
            ),
        ),
        Effect::Soaking { wave, until } => (
            kind::SOAKING,
            format!(
                "campaign {campaign}: wave {} soaks until {}",
                wave + 1,
                Clock(*until)
            ),
        ),
        Effect::Halted { wave, reason, .. } => (
            kind::HALTED,
            format!("campaign {campaign}: halted at wave {}: {reason}", wave + 1),
        ),
        Effect::Paused { wave } => (
            kind::PAUSED,
            format!("campaign {campaign}: paused at wave {}", wave + 1),
        ),
        Effect::Resumed { wave } => (
            kind::RESUMED,
            format!("campaign {campaign}: resumed at wave {}", wave + 1),
        ),
        Effect::Completed { counts } => (
            kind::COMPLETED,
            format!("campaign {campaign} completed ({})", counts_text(counts)),
        ),
        Effect::Aborted => (kind::ABORTED, format!("campaign {campaign} aborted")),
        Effect::Expired { wave, counts } => (
            kind::EXPIRED,
            format!(
                "campaign {campaign} expired at wave {} ({})",
                wave + 1,
                counts_text(counts)
            ),
        ),
        Effect::Decision(d) => (
            kind::DECISION,
            format!("campaign {campaign}: {}", scope.text(d)),
        ),
    };
    Event {
        ts: at,
        kind: k.to_string(),
        campaign: Some(campaign.clone()),
        message,
        data: serde_json::to_value(effect).unwrap_or(serde_json::Value::Null),
    }
}

/// A progress event: the current wave's tally.
pub fn progress(campaign: &CampaignId, at: u64, wave: Option<usize>, counts: &WaveCounts) -> Event {
    Event {
        ts: at,
        kind: kind::PROGRESS.to_string(),
        campaign: Some(campaign.clone()),
        message: format!("campaign {campaign}: {}", counts_text(counts)),
        data: serde_json::json!({ "wave": wave, "counts": counts }),
    }
}

/// The flag of `count` new anomalies (see `tally`), naming the first
/// `devices`: `campaign.anomaly`, at most one per campaign and tick.
pub fn anomaly(
    campaign: &CampaignId,
    at: u64,
    count: u32,
    devices: &[schemas::DeviceId],
    counts: &WaveCounts,
) -> Event {
    let names: Vec<&str> = devices.iter().map(|d| d.as_str()).collect();
    let more = if count as usize > names.len() {
        ", ..."
    } else {
        ""
    };
    Event {
        ts: at,
        kind: kind::ANOMALY.to_string(),
        campaign: Some(campaign.clone()),
        message: format!(
            "campaign {campaign}: {count} device(s) reported cancelled ({}{more}), but this bridge never aborted the campaign and they were not superseded: someone else published an aborted announcement on its topics (the bridge overwrites it; see foreign_retained). Counted as failures, not as not applicable ({} anomalies in all)",
            names.join(", "),
            counts.anomaly
        ),
        data: serde_json::json!({ "new": count, "devices": names, "counts": counts }),
    }
}

/// `12 members: 10 success, 1 failure, 1 not applicable, 0 pending`, and
/// the anomalies among the failures when there are any.
pub fn counts_text(c: &WaveCounts) -> String {
    let anomaly = if c.anomaly > 0 {
        format!(
            " ({} of them anomalies: cancelled without an abort)",
            c.anomaly
        )
    } else {
        String::new()
    };
    format!(
        "{} members: {} success, {} failure{anomaly}, {} not applicable, {} pending",
        c.members, c.success, c.failure, c.not_applicable, c.pending
    )
}
