//! What goes into the gate and what comes out: [`Input`], [`Effect`],
//! the [`Phase`] a campaign is in, the [`WaveCounts`] it judges and why it
//! passed or halted a wave. All of it is data (serialized into the store
//! and the events); the English is [`super::narrate`]'s.

use std::collections::{BTreeMap, BTreeSet};

use schemas::ids::{CampaignId, GroupName};
use serde::{Deserialize, Serialize};

use super::super::spec::{Gates, SpecError};
use super::decision::Decision;
use super::judge::ratio_bp;

/// The tally of the current wave's members, by PROTOCOL.md's gating classes.
/// `members` is authoritative; `pending` (no terminal state yet) is carried
/// for reports only.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct WaveCounts {
    pub members: u32,
    pub success: u32,
    pub failure: u32,
    pub not_applicable: u32,
    pub pending: u32,
    /// Of the pending, those rebooting into the new image: past
    /// `installing`, so past the install failures that are reported
    /// first. The failure rate counts them as not failed until they
    /// report (`bound.rs`).
    #[serde(default)]
    pub rebooting: u32,
    /// Of the failures, anomalies: `cancelled` reports (not `superseded`)
    /// of a campaign the bridge never aborted, the answer to an `aborted`
    /// announcement someone else published (see `tally`).
    #[serde(default)]
    pub anomaly: u32,
}

impl WaveCounts {
    /// Members the gate judges: all but the not applicable ones (never fewer
    /// than those that decided, should the tally be inconsistent).
    pub fn applicable(&self) -> u32 {
        self.members
            .saturating_sub(self.not_applicable)
            .max(self.decided())
    }

    /// Members with a success or failure report: the terminal ones, not
    /// applicable excluded.
    pub fn decided(&self) -> u32 {
        self.success.saturating_add(self.failure)
    }

    /// success / applicable in basis points; `None` with no applicable member.
    pub fn success_bp(&self) -> Option<u16> {
        ratio_bp(self.success, self.applicable())
    }

    /// failure / decided in basis points; `None` before any decision.
    pub fn failure_bp(&self) -> Option<u16> {
        ratio_bp(self.failure, self.decided())
    }
}

/// Where the campaign is. Every timer is an absolute Unix second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Created, nothing announced.
    Draft,
    /// Wave `wave` is announced and judged until `deadline`.
    Running {
        wave: usize,
        started_at: u64,
        deadline: u64,
        /// Since when every target group's maintenance window is closed:
        /// the wave timeout stands still until one opens, and `deadline`
        /// then moves by the time held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held_since: Option<u64>,
    },
    /// Wave `wave` passed; the next starts at `until`.
    Soaking { wave: usize, until: u64 },
    /// A standing campaign's last wave passed at `since`: it admits every
    /// device that joins its groups, never completes, and halts when the
    /// failure rate over its latest results (`halt_window`) is too high.
    Standing { wave: usize, since: u64 },
    /// Stopped by the operator at `at`; `from` says how to go on.
    Paused { at: u64, from: PausedFrom },
    /// Stopped by the gate at `at`; waits for an operator.
    Halted {
        wave: usize,
        at: u64,
        reason: HaltReason,
    },
    /// Every wave passed (or the emergency ended) at `at`.
    Completed { at: u64 },
    /// Ended by the operator; `announced` is the wave whose cohorts were
    /// announced `aborted` (`None`: aborted before it started).
    Aborted { at: u64, announced: Option<usize> },
    /// Its `stop_at` came at `at` in wave `wave`: no wave widens any more,
    /// and the announcement stays as it was (`active` or `paused`), so
    /// downloads under way finish.
    Expired {
        at: u64,
        wave: usize,
        announced: AnnounceState,
    },
}

/// What a pause interrupted, with the time it had left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum PausedFrom {
    Running {
        wave: usize,
        started_at: u64,
        remaining: u64,
    },
    Soaking {
        wave: usize,
        remaining: u64,
    },
    Standing {
        wave: usize,
    },
}

impl PausedFrom {
    pub fn wave(&self) -> usize {
        match *self {
            PausedFrom::Running { wave, .. }
            | PausedFrom::Soaking { wave, .. }
            | PausedFrom::Standing { wave } => wave,
        }
    }
}

/// Why the gate halted a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum HaltReason {
    /// The failure rate's lower confidence bound went above the halt bar.
    FailureRate {
        failure: u32,
        decided: u32,
        failure_bp: u16,
        halt_bp: u16,
        /// Members rebooting, counted as not failed (0 in decisions made
        /// before the bound).
        #[serde(default)]
        rebooting: u32,
        /// The one-sided 95% Wilson lower bound of failure / (decided +
        /// rebooting) (`None` in decisions made before the bound).
        #[serde(default)]
        bound_bp: Option<u16>,
        /// Of `failure`, the anomalies: cancels of an abort the bridge
        /// never announced.
        #[serde(default)]
        anomaly: u32,
    },
    /// The campaign would have completed, but no device installed the
    /// release: a campaign never ends `completed` with zero successes.
    NoSuccess {
        members: u32,
        failure: u32,
        not_applicable: u32,
        anomaly: u32,
    },
    /// At the timeout, fewer terminal reports than `min_sample`.
    TooFewReports { terminal: u32, min_sample: u32 },
    /// At the timeout, or once every applicable member decided, success /
    /// terminal under the success bar.
    UnderBar {
        success: u32,
        terminal: u32,
        success_bp: u16,
        bar_bp: u16,
    },
}

/// Which rule passed a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PassRule {
    /// No member the gate can judge (empty group, all not applicable).
    NoApplicableMembers,
    /// success / applicable reached the bar.
    SuccessBar,
    /// At the timeout, success / terminal reached the bar over a large
    /// enough sample.
    AtTimeout,
}

/// The `state` of an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnnounceState {
    Active,
    Paused,
    Aborted,
}

/// What the retained announcements of the campaign must say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The wave whose cohorts these are.
    pub wave: usize,
    /// Cohort per target group, every target group listed (0 before its
    /// first wave). Empty for an emergency campaign aimed at every device:
    /// publish on `P/emergency`.
    pub cohorts: BTreeMap<GroupName, u16>,
    pub state: AnnounceState,
    /// The announcement's informational `deadline`: the wave timeout while
    /// a wave runs.
    pub deadline: Option<u64>,
    /// Groups whose maintenance window is closed: announced `paused` while
    /// `state` is `active`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub closed: BTreeSet<GroupName>,
}

impl Announcement {
    /// The state announced on `group`'s topic.
    pub fn state_on(&self, group: &GroupName) -> AnnounceState {
        if self.state == AnnounceState::Active && self.closed.contains(group) {
            AnnounceState::Paused
        } else {
            self.state
        }
    }
}

/// What the bridge must do after a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Publish (retained) this announcement.
    Announce(Announcement),
    /// Wave `wave` began; send its counts.
    WaveStarted {
        wave: usize,
        deadline: u64,
    },
    WavePassed {
        wave: usize,
        rule: PassRule,
        counts: WaveCounts,
    },
    /// The passed wave `wave` soaks until `until`.
    Soaking {
        wave: usize,
        until: u64,
    },
    Halted {
        wave: usize,
        reason: HaltReason,
        counts: WaveCounts,
    },
    Paused {
        wave: usize,
    },
    Resumed {
        wave: usize,
    },
    /// The final counts of the last wave (zeros if none were sent).
    Completed {
        counts: WaveCounts,
    },
    Aborted,
    /// `stop_at` ended the campaign in wave `wave`.
    Expired {
        wave: usize,
        counts: WaveCounts,
    },
    /// A line for the operator event log (also kept in the history).
    Decision(Decision),
}

/// What can happen to a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// Operator: announce the first wave.
    Start,
    /// Operator: stop admitting and downloading, keep the time left.
    Pause,
    /// Operator: continue a paused campaign, or re-run a halted wave.
    Resume,
    /// Operator: end the campaign; devices not yet installing cancel.
    Abort,
    /// Operator: replace the gates (the override after a halt). New bars
    /// are judged at once; a new timeout or soak applies from the next
    /// wave, soak or resume.
    SetGates(Gates),
    /// Time passed.
    Tick,
    /// The target groups whose maintenance window is closed now (all of
    /// them listed; an emergency ignores it).
    Windows { closed: BTreeSet<GroupName> },
    /// The tally of wave `wave`, which must be the current wave.
    Counts { wave: usize, counts: WaveCounts },
}

/// An input the campaign's phase does not allow. The gate is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("cannot {input} campaign {campaign}: it is {phase}; {hint}")]
    Illegal {
        campaign: CampaignId,
        input: &'static str,
        phase: String,
        hint: &'static str,
    },
    #[error("counts for wave {} arrived while campaign {campaign} is {phase}: send the tally of the current wave", .got + 1)]
    StaleCounts {
        campaign: CampaignId,
        got: usize,
        phase: String,
    },
    #[error("gates refused: {0}")]
    BadGates(#[from] SpecError),
}
