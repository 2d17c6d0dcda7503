//! The gate in English, for the people who read it: decision texts, halt
//! reasons, percentages, gates and times of day. Nothing here is stored;
//! the events (`campaign::events`), the status reply (`campaign::view`)
//! and the logs render from the data each time.

use std::fmt;

use super::super::spec::Gates;
use super::decision::{Decision, DecisionKind, Resumed};
use super::judge::ratio_bp;
use super::{HaltReason, PassRule, PausedFrom, Phase};

/// What a text needs to know of its campaign: "wave 2 of 3" or "the
/// emergency".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub emergency: bool,
    pub waves: usize,
}

impl Scope {
    /// "wave 2 of 3", or "the emergency".
    pub fn label(&self, wave: usize) -> String {
        if self.emergency {
            "the emergency".to_string()
        } else {
            format!("wave {} of {}", wave + 1, self.waves)
        }
    }

    /// A phase for people: "running wave 1 of 3", "a draft", ...
    pub fn phase(&self, phase: &Phase) -> String {
        match *phase {
            Phase::Draft => "a draft".to_string(),
            Phase::Running { wave, .. } => format!("running {}", self.label(wave)),
            Phase::Soaking { wave, .. } => format!("soaking after {}", self.label(wave)),
            Phase::Standing { .. } => "standing".to_string(),
            Phase::Paused { from, .. } => format!("paused at {}", self.label(from.wave())),
            Phase::Halted { wave, .. } => format!("halted at {}", self.label(wave)),
            Phase::Completed { .. } => "completed".to_string(),
            Phase::Aborted { .. } => "aborted".to_string(),
            Phase::Expired { wave, .. } => format!("expired at {}", self.label(wave)),
        }
    }

    /// The decision's text.
    pub fn text(&self, d: &Decision) -> String {
        let wave = d.wave.unwrap_or(0);
        let label = || self.label(wave);
        match &d.kind {
            DecisionKind::WaveStarted {
                raised,
                deadline,
                timeout_secs,
            } => {
                let admits = match raised {
                    None => "every device".to_string(),
                    Some(r) => {
                        let groups: Vec<String> =
                            r.iter().map(|(g, &c)| format!("{g} {}", Pct(c))).collect();
                        format!("raises {}", groups.join(", "))
                    }
                };
                format!(
                    "{} started: {admits}; waits until {} ({timeout_secs} s)",
                    label(),
                    Clock(*deadline)
                )
            }
            DecisionKind::Paused { from } => {
                let left = match from {
                    PausedFrom::Running { remaining, .. } => {
                        format!("{remaining} s of the wave timeout left")
                    }
                    PausedFrom::Soaking { remaining, .. } => format!("{remaining} s of soak left"),
                    PausedFrom::Standing { .. } => "standing".to_string(),
                };
                format!("paused by the operator at {} with {left}", label())
            }
            DecisionKind::Resumed { to } => match *to {
                Resumed::Running {
                    deadline,
                    remaining,
                } => format!(
                    "resumed by the operator: {} waits until {} ({remaining} s left)",
                    label(),
                    Clock(deadline)
                ),
                Resumed::Soaking { until, remaining } => format!(
                    "resumed by the operator: {} soaks until {} ({remaining} s left)",
                    label(),
                    Clock(until)
                ),
                Resumed::Standing => {
                    "resumed by the operator: standing again, admitting new devices".to_string()
                }
                Resumed::AfterHalt { deadline } => format!(
                    "resumed by the operator after a halt: {} re-runs its gate until {}",
                    label(),
                    Clock(deadline)
                ),
            },
            DecisionKind::Aborted => match d.wave {
                Some(w) => format!(
                    "aborted by the operator at {}: devices not yet installing cancel",
                    self.label(w)
                ),
                None => "aborted by the operator before it started".to_string(),
            },
            DecisionKind::GatesSet { gates, were } => format!(
                "gates set by the operator: {} (were: {})",
                GatesText(gates),
                GatesText(were)
            ),
            DecisionKind::Passed {
                rule,
                counts,
                bar_bp,
            } => {
                let why = match rule {
                    PassRule::NoApplicableMembers => format!(
                        "no applicable member ({} members, {} not applicable)",
                        counts.members, counts.not_applicable
                    ),
                    PassRule::SuccessBar => format!(
                        "{} of {} applicable succeeded ({} >= bar {}), {} not applicable",
                        counts.success,
                        counts.applicable(),
                        Pct(counts.success_bp().unwrap_or(0)),
                        Pct(*bar_bp),
                        counts.not_applicable
                    ),
                    PassRule::AtTimeout => format!(
                        "at the timeout {} of {} terminal reports succeeded ({} >= bar {}), {} timed out, {} not applicable",
                        counts.success,
                        counts.decided(),
                        Pct(ratio_bp(counts.success, counts.decided()).unwrap_or(0)),
                        Pct(*bar_bp),
                        counts.applicable() - counts.decided(),
                        counts.not_applicable
                    ),
                };
                format!("{} passed: {why}", label())
            }
            DecisionKind::Soaking { until, soak_secs } => format!(
                "{} soaks until {} ({soak_secs} s) before wave {}",
                label(),
                Clock(*until),
                wave + 2
            ),
            DecisionKind::Halted { reason } => format!(
                "{} halted: {reason}; announced paused, resume or abort",
                label()
            ),
            DecisionKind::EmergencyFailureBar { reason } => format!(
                "{reason}: an emergency does not halt by itself; pause or abort it if the fix is bad"
            ),
            DecisionKind::EmergencyEnded {
                all_decided,
                counts: c,
            } => {
                let why = if *all_decided {
                    "every applicable member decided".to_string()
                } else {
                    format!(
                        "timeout with {} members still pending",
                        c.applicable() - c.decided()
                    )
                };
                format!(
                    "emergency ended ({why}): {} success, {} failure, {} not applicable{}",
                    c.success,
                    c.failure,
                    c.not_applicable,
                    if c.anomaly > 0 {
                        format!(" ({} anomalies: cancelled without an abort)", c.anomaly)
                    } else {
                        String::new()
                    }
                )
            }
            DecisionKind::Completed => {
                if self.emergency {
                    "campaign completed; the announcement stays active for devices that come online later"
                        .to_string()
                } else {
                    format!(
                        "campaign completed after {}; the announcement stays active for devices that come online later",
                        label()
                    )
                }
            }
            DecisionKind::Standing => format!(
                "{} passed: the campaign stands, admitting every device that joins its groups and halting on the failure rate of its latest results",
                label()
            ),
            DecisionKind::Expired { stop_at } => format!(
                "campaign expired at {} in {}: no wave widens any more; downloads under way finish",
                Clock(*stop_at),
                label()
            ),
            DecisionKind::Windows {
                closed,
                opened,
                held,
                deadline,
            } => {
                let list = |g: &[schemas::ids::GroupName]| {
                    g.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ")
                };
                let mut parts = Vec::new();
                if !closed.is_empty() {
                    parts.push(format!("window closed for {} (announced paused there)", list(closed)));
                }
                if !opened.is_empty() {
                    parts.push(format!("window open for {}", list(opened)));
                }
                let clock = match (held, deadline) {
                    (true, _) => "every group is outside its window: the wave timeout stands still".to_string(),
                    (false, Some(d)) => format!("{} waits until {}", label(), Clock(*d)),
                    (false, None) => String::new(),
                };
                if !clock.is_empty() {
                    parts.push(clock);
                }
                parts.join("; ")
            }
            DecisionKind::Note { text } => text.clone(),
        }
    }
}

impl fmt::Display for HaltReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HaltReason::FailureRate {
                failure,
                decided,
                failure_bp,
                halt_bp,
                rebooting,
                bound_bp,
                anomaly,
            } => {
                match bound_bp {
                    Some(bound) => write!(
                        f,
                        "failure rate {} ({failure} of {decided} decided, {rebooting} rebooting counted as not failed) is above the halt bar {} with 95% confidence (lower bound {})",
                        Pct(failure_bp),
                        Pct(halt_bp),
                        Pct(bound)
                    )?,
                    None => write!(
                        f,
                        "failure rate {} ({failure} of {decided} decided) is above the halt bar {}",
                        Pct(failure_bp),
                        Pct(halt_bp)
                    )?,
                }
                AnomalyText(anomaly).after(f)
            }
            HaltReason::NoSuccess {
                members,
                failure,
                not_applicable,
                anomaly,
            } => {
                write!(
                    f,
                    "no device installed the release ({members} members: {failure} failed, {not_applicable} not applicable), and a campaign never completes with no success"
                )?;
                AnomalyText(anomaly).after(f)
            }
            HaltReason::TooFewReports {
                terminal,
                min_sample,
            } => write!(
                f,
                "at the timeout only {terminal} members reached a terminal state, {min_sample} needed (min_sample)"
            ),
            HaltReason::UnderBar {
                success,
                terminal,
                success_bp,
                bar_bp,
            } => write!(
                f,
                "only {success} of {terminal} terminal reports succeeded ({}), under the success bar {}",
                Pct(success_bp),
                Pct(bar_bp)
            ),
        }
    }
}

/// What anomalies among the failures mean, for a halt's reason.
struct AnomalyText(u32);

impl AnomalyText {
    /// `; ` and the text, when there are anomalies.
    fn after(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0 {
            write!(f, "; {self}")?;
        }
        Ok(())
    }
}

impl fmt::Display for AnomalyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of the failures are anomalies: devices cancelled on an abort this bridge never announced (a forged announcement on the broker; check foreign_retained and the broker's ACLs)",
            self.0
        )
    }
}

/// Basis points shown as a percentage, `9500` → `95.00%`.
pub struct Pct(pub u16);

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}%", self.0 / 100, self.0 % 100)
    }
}

/// The gates in one line.
pub struct GatesText<'a>(pub &'a Gates);

impl fmt::Display for GatesText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.0;
        write!(
            f,
            "success bar {}, failure halt {}, min sample {}, wave timeout {} s, soak {} s",
            Pct(g.success_bar_bp),
            Pct(g.failure_halt_bp),
            g.min_sample,
            g.wave_timeout_secs,
            g.soak_secs
        )
    }
}

/// A Unix time shown as the UTC time of day, for decision texts people
/// read (`14:03:07 UTC`); the exact seconds stay in the effects' data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock(pub u64);

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0 % 86_400;
        write!(f, "{:02}:{:02}:{:02} UTC", t / 3600, (t / 60) % 60, t % 60)
    }
}
