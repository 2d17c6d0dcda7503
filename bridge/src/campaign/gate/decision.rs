//! What the gate decided, as data: [`Decision`] is one entry of a
//! campaign's decision log (persisted with the gate), [`DecisionKind`]
//! which decision with the numbers behind it (the wave, the counts, the
//! bar, the verdict). The English is rendered from it where people read
//! it ([`super::narrate`]), so the wording never becomes stored state.
//!
//! Decisions stored before they were data (`{at, wave, text}`) still load:
//! they become [`DecisionKind::Note`], rendered as the text they had.

use std::collections::BTreeMap;

use schemas::ids::GroupName;
use serde::{Deserialize, Serialize};

use super::super::spec::Gates;
use super::{HaltReason, PassRule, PausedFrom, WaveCounts};

/// One line of the campaign's decision log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct Decision {
    pub at: u64,
    /// The wave it is about (0-based); `None` before the first.
    pub wave: Option<usize>,
    pub kind: DecisionKind,
}

/// Which decision, and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DecisionKind {
    /// A wave started: the groups whose cohort it raises (`None`: an
    /// emergency to every device), judged until `deadline`.
    WaveStarted {
        raised: Option<BTreeMap<GroupName, u16>>,
        deadline: u64,
        timeout_secs: u64,
    },
    /// The operator paused, with the time the wave or soak had left.
    Paused { from: PausedFrom },
    /// The operator resumed.
    Resumed { to: Resumed },
    /// The operator aborted (before the start when `wave` is `None`).
    Aborted,
    /// The operator replaced the gates.
    GatesSet { gates: Gates, were: Gates },
    /// The wave passed by `rule`, with its counts against the bar.
    Passed {
        rule: PassRule,
        counts: WaveCounts,
        bar_bp: u16,
    },
    /// The passed wave soaks until `until` before the next one.
    Soaking { until: u64, soak_secs: u64 },
    /// The gate halted the wave.
    Halted { reason: HaltReason },
    /// An emergency crossed the failure bar: logged, never halted.
    EmergencyFailureBar { reason: HaltReason },
    /// An emergency ended: every applicable member decided, or the timeout.
    EmergencyEnded {
        all_decided: bool,
        counts: WaveCounts,
    },
    /// Every wave passed (or the emergency ended).
    Completed,
    /// A standing campaign's last wave passed: from now on it admits every
    /// device that joins and judges its latest results.
    Standing,
    /// The campaign's `stop_at` came: no wave widens any more.
    Expired { stop_at: u64 },
    /// Maintenance windows closed or opened: `closed` are the groups now
    /// paused by their window, `opened` those that came back. `held`: every
    /// target group is closed, so the wave timeout stands still; `deadline`
    /// is the wave's timeout after the change.
    Windows {
        closed: Vec<GroupName>,
        opened: Vec<GroupName>,
        held: bool,
        deadline: Option<u64>,
    },
    /// A decision stored as text only (before decisions were data).
    Note { text: String },
}

/// Where a resume went on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Resumed {
    /// The paused wave, until `deadline` (`remaining` s were left).
    Running { deadline: u64, remaining: u64 },
    /// The paused soak, until `until`.
    Soaking { until: u64, remaining: u64 },
    /// The halted wave re-runs its gate until `deadline`.
    AfterHalt { deadline: u64 },
    /// A standing campaign stands again.
    Standing,
}

/// A decision as stored: today's shape, or the text of older bridges.
#[derive(Deserialize)]
struct Stored {
    at: u64,
    #[serde(default)]
    wave: Option<usize>,
    #[serde(default)]
    kind: Option<DecisionKind>,
    #[serde(default)]
    text: Option<String>,
}

impl From<Stored> for Decision {
    fn from(s: Stored) -> Self {
        Decision {
            at: s.at,
            wave: s.wave,
            kind: s.kind.unwrap_or_else(|| DecisionKind::Note {
                text: s.text.unwrap_or_default(),
            }),
        }
    }
}
