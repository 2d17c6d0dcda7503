//! The wave gate: a pure state machine over (state, input) → (state,
//! effects). No I/O, no clock: every input comes with `now` in Unix seconds,
//! and every timer is stored as an absolute Unix second, so a [`Gate`]
//! serialized to the store and read back after a restart carries on exactly.
//!
//! Long file: one state machine, every phase's transitions in one place;
//! what goes in and out, the judging, the calendar and the texts are its
//! submodules.
//!
//! # What the bridge does around it
//!
//! - Calls [`Gate::step`] with operator inputs, with [`Input::Counts`]
//!   whenever the tally of the current wave changes (and once right after a
//!   [`Effect::WaveStarted`], even when the wave has no member: only counts
//!   tell the gate a wave is empty), and with [`Input::Tick`] at
//!   [`Gate::next_timer`]. After a restart it sends fresh counts before the
//!   first tick: the stored counts may be older than the status store.
//! - Carries out the effects: publishes [`Effect::Announce`] (retained, on
//!   every group of its `cohorts`, or on `P/emergency` for an emergency
//!   campaign with no groups), logs [`Effect::Decision`] to `P/ops/events`,
//!   and persists the gate after every step that returned effects.
//! - Decides who counts: [`WaveCounts`] is the tally of the devices the
//!   current wave's cohorts admit (this wave's and every earlier wave's
//!   members), sorted into the classes of PROTOCOL.md "Status order and what
//!   gating counts".
//!
//! Wave indices in the API are 0-based; texts meant for people say
//! "wave 1 of 3".
//!
//! # Layout
//!
//! - this file: [`Gate`], its phases and timers ([`Gate::step`]);
//! - [`model`]: what goes in and out: inputs, effects, phases, counts;
//! - [`judge`]: the verdict on a wave's counts, pure arithmetic;
//! - [`decision`]: the decision log as data, older text entries migrated;
//! - [`narrate`]: the English of decisions, reasons and phases;
//! - `calendar`: `stop_at` and maintenance windows.
//!
//! # Rules
//!
//! - success rate = success / (members − not_applicable); failure rate =
//!   failure / (success + failure). Both compare exactly in integers (no
//!   rounding at the bar).
//! - The failure rate is judged once `success + failure ≥ min_sample`, or
//!   once every applicable member has decided (a wave smaller than the
//!   sample). Above `failure_halt_bp` the campaign halts. This check runs
//!   first: with both bars crossed, safety wins.
//! - A wave passes when its success rate reaches `success_bar_bp`; a wave
//!   with no applicable member passes as soon as counts say so.
//! - At the wave timeout, members with no terminal state are timed out
//!   (neither success nor failure): the wave passes when success /
//!   (success + failure) reaches the bar over at least `min_sample` terminal
//!   reports, else it halts, the reason saying which. A wave whose every
//!   applicable member decided under the bar halts at once: terminal states
//!   are final, waiting would change nothing.
//! - After a pass the gate soaks `soak_secs`, still halting on the failure
//!   rate (late rollbacks are what a soak is for), then starts the next
//!   wave; the last wave's pass completes the campaign at once.
//! - **Anomalies** (`cancelled` of an abort the bridge never announced,
//!   not `superseded`: see `tally`) are failures: they count against the
//!   failure bar, and the halt's reason says how many of the failures they
//!   are. A forged `aborted` thus halts a wave instead of emptying it.
//! - **Never completed with zero successes.** Where the campaign would
//!   complete (the last wave passed, the emergency ended) with members but
//!   no success in its counts, it halts instead ([`HaltReason::NoSuccess`]):
//!   every member not applicable, failed or cancelled is no rollout. This
//!   holds for an emergency too (its one exception to never halting:
//!   nothing was fixed, so an operator must look). A campaign with no
//!   member at all (`allow_empty`, groups still empty) asked nothing of
//!   any device and completes, its announcement active for devices that
//!   join later.
//!
//! # Choices
//!
//! - **A halt announces `paused`.** Paused devices stop requesting blocks
//!   and keep them; devices already installing finish; no device starts.
//!   That is what a halt needs: stop the spread and keep every option open.
//!   `aborted` would make every device that accepted or was downloading
//!   report `cancelled`, a terminal state (PROTOCOL.md step 8), so an
//!   operator who investigated and resumed would find those devices gone
//!   for good. Abort stays an explicit operator decision.
//! - **Resume after a halt re-runs the gate** of the halted wave with a
//!   fresh timeout, judging the current counts at once. A halt for too few
//!   reports thus gets more time; a halt for the failure rate halts again at
//!   once unless the operator first changes the bars with
//!   [`Input::SetGates`] (an override is a visible, logged decision, not a
//!   side effect of resume).
//! - **Emergency campaigns are never halted by the gate.** They have one
//!   implicit wave (their groups at 10000, or every device) and no success
//!   bar; they complete when every applicable member has decided or at the
//!   timeout. Crossing the failure bar is logged once as a decision for the
//!   operator, who can pause or abort: an emergency fix that stops itself
//!   leaves the fleet exposed, and devices whose boot fails roll back on
//!   their own.
//! - **Completion leaves the announcement `active`** at the final cohorts,
//!   so admitted devices that were offline still update later. Withdrawing
//!   it is not the gate's business.
//! - A pause remembers the time left on the wave timeout (or the soak), so
//!   paused time never eats it. Counts that arrive while paused or halted are
//!   stored and judged on resume.

pub mod bound;
mod calendar;
pub mod decision;
pub mod judge;
pub mod model;
pub mod narrate;

use std::collections::{BTreeMap, BTreeSet};

use schemas::ids::{CampaignId, GroupName};
use serde::{Deserialize, Serialize};

pub use decision::{Decision, DecisionKind, Resumed};
pub use model::{
    AnnounceState, Announcement, Effect, HaltReason, Input, PassRule, PausedFrom, Phase, StepError,
    WaveCounts,
};
pub use narrate::{Clock, Scope};

use super::spec::{CampaignSpec, Gates, SpecError};
use judge::Verdict;

/// The wave gate of one campaign. Serialize it to persist it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    id: CampaignId,
    emergency: bool,
    /// Cumulative cohorts per wave; one (maybe empty) map for an emergency.
    waves: Vec<BTreeMap<GroupName, u16>>,
    gates: Gates,
    phase: Phase,
    /// The latest tally of the current wave, `None` until one arrives.
    counts: Option<WaveCounts>,
    /// Emergency: the failure bar crossing was logged for this run.
    failure_warned: bool,
    history: Vec<Decision>,
    /// Unix seconds: the campaign expires then (`--stop-at`).
    #[serde(default)]
    stop_at: Option<u64>,
    /// Target groups whose maintenance window is closed (the latest
    /// [`Input::Windows`]).
    #[serde(default)]
    closed: BTreeSet<GroupName>,
    /// A standing campaign: its last wave's pass leads to
    /// [`Phase::Standing`], not to completion.
    #[serde(default)]
    standing: bool,
}

impl Gate {
    /// A draft gate for `spec`, which is validated first.
    pub fn new(spec: &CampaignSpec) -> Result<Gate, SpecError> {
        spec.validate()?;
        let waves = if spec.waves.is_empty() {
            vec![BTreeMap::new()]
        } else {
            (0..spec.waves.len()).map(|k| spec.cohorts_at(k)).collect()
        };
        Ok(Gate {
            id: spec.id.clone(),
            emergency: spec.emergency,
            waves,
            gates: spec.gates,
            phase: Phase::Draft,
            counts: None,
            failure_warned: false,
            history: Vec::new(),
            stop_at: spec.stop_at,
            closed: BTreeSet::new(),
            standing: spec.standing.is_some(),
        })
    }

    pub fn id(&self) -> &CampaignId {
        &self.id
    }

    pub fn is_emergency(&self) -> bool {
        self.emergency
    }

    pub fn gates(&self) -> &Gates {
        &self.gates
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Every decision so far, oldest first.
    pub fn history(&self) -> &[Decision] {
        &self.history
    }

    /// The latest tally of the current wave.
    pub fn counts(&self) -> Option<&WaveCounts> {
        self.counts.as_ref()
    }

    /// How many waves (1 for an emergency).
    pub fn wave_count(&self) -> usize {
        self.waves.len()
    }

    /// The cumulative cohorts of wave `wave` (empty past the last wave, and
    /// for an emergency aimed at every device).
    pub fn cohorts(&self, wave: usize) -> &BTreeMap<GroupName, u16> {
        static EMPTY: BTreeMap<GroupName, u16> = BTreeMap::new();
        self.waves.get(wave).unwrap_or(&EMPTY)
    }

    /// The wave the counts are about: the running, soaking, paused or halted
    /// one, the last one once completed; `None` before the start.
    pub fn current_wave(&self) -> Option<usize> {
        match self.phase {
            Phase::Draft => None,
            Phase::Running { wave, .. }
            | Phase::Soaking { wave, .. }
            | Phase::Standing { wave, .. }
            | Phase::Halted { wave, .. } => Some(wave),
            Phase::Paused { from, .. } => Some(from.wave()),
            Phase::Completed { .. } => Some(self.last_wave()),
            Phase::Aborted { announced, .. } => announced,
            Phase::Expired { wave, .. } => Some(wave),
        }
    }

    /// A standing campaign (`--standing`).
    pub fn is_standing(&self) -> bool {
        self.standing
    }

    /// Completed, aborted or expired: no input but counts and windows
    /// changes anything any more.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.phase,
            Phase::Completed { .. } | Phase::Aborted { .. } | Phase::Expired { .. }
        )
    }

    /// When the bridge should send the next [`Input::Tick`]: the wave
    /// timeout (not while windows hold it), the soak's end, or `stop_at`.
    pub fn next_timer(&self) -> Option<u64> {
        let timer = match self.phase {
            Phase::Running {
                deadline,
                held_since: None,
                ..
            } => Some(deadline),
            Phase::Soaking { until, .. } => Some(until),
            _ => None,
        };
        let stop = self
            .stop_at
            .filter(|_| !self.is_finished() && self.phase != Phase::Draft);
        match (timer, stop) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The `stop_at` of the campaign.
    pub fn stop_at(&self) -> Option<u64> {
        self.stop_at
    }

    /// Target groups whose maintenance window is closed.
    pub fn closed(&self) -> &BTreeSet<GroupName> {
        &self.closed
    }

    /// What the retained announcements must say now; `None` when nothing
    /// was ever announced.
    pub fn announcement(&self) -> Option<Announcement> {
        let (wave, state, deadline) = match self.phase {
            Phase::Draft
            | Phase::Aborted {
                announced: None, ..
            } => return None,
            Phase::Running { wave, deadline, .. } => (wave, AnnounceState::Active, Some(deadline)),
            Phase::Soaking { wave, .. } | Phase::Standing { wave, .. } => {
                (wave, AnnounceState::Active, None)
            }
            Phase::Paused { from, .. } => (from.wave(), AnnounceState::Paused, None),
            Phase::Halted { wave, .. } => (wave, AnnounceState::Paused, None),
            Phase::Completed { .. } => (self.last_wave(), AnnounceState::Active, None),
            Phase::Aborted {
                announced: Some(wave),
                ..
            } => (wave, AnnounceState::Aborted, None),
            Phase::Expired {
                wave, announced, ..
            } => (wave, announced, None),
        };
        Some(Announcement {
            wave,
            cohorts: self.cohorts(wave).clone(),
            state,
            deadline,
            closed: if self.emergency {
                BTreeSet::new()
            } else {
                self.closed.clone()
            },
        })
    }

    /// Applies `input` at `now` (Unix seconds) and returns what the bridge
    /// must do. On an error nothing changed.
    pub fn step(&mut self, now: u64, input: Input) -> Result<Vec<Effect>, StepError> {
        let mut fx = Vec::new();
        match input {
            Input::Start => {
                if self.phase != Phase::Draft {
                    return Err(self.illegal(
                        "start",
                        "a campaign starts once; resume continues a paused or halted one",
                    ));
                }
                if self.stop_at.is_some_and(|t| now >= t) {
                    return Err(self.illegal(
                        "start",
                        "its stop_at has passed: create it again with a later --stop-at",
                    ));
                }
                self.start_wave(0, now, &mut fx);
            }
            Input::Pause => {
                let from = match self.phase {
                    Phase::Running {
                        wave,
                        started_at,
                        deadline,
                        held_since,
                    } => PausedFrom::Running {
                        wave,
                        started_at,
                        remaining: deadline.saturating_sub(held_since.unwrap_or(now)),
                    },
                    Phase::Soaking { wave, until } => PausedFrom::Soaking {
                        wave,
                        remaining: until.saturating_sub(now),
                    },
                    Phase::Standing { wave, .. } => PausedFrom::Standing { wave },
                    _ => {
                        return Err(self
                            .illegal("pause", "only a running or soaking campaign can be paused"))
                    }
                };
                self.phase = Phase::Paused { at: now, from };
                self.note(now, from.wave(), DecisionKind::Paused { from }, &mut fx);
                fx.push(Effect::Paused { wave: from.wave() });
                self.announce(&mut fx);
            }
            Input::Resume => {
                let (wave, to) = match self.phase {
                    Phase::Paused {
                        from:
                            PausedFrom::Running {
                                wave,
                                started_at,
                                remaining,
                            },
                        ..
                    } => {
                        let deadline = now.saturating_add(remaining);
                        self.phase = Phase::Running {
                            wave,
                            started_at,
                            deadline,
                            held_since: self.windows_hold().then_some(now),
                        };
                        (
                            wave,
                            Resumed::Running {
                                deadline,
                                remaining,
                            },
                        )
                    }
                    Phase::Paused {
                        from: PausedFrom::Soaking { wave, remaining },
                        ..
                    } => {
                        let until = now.saturating_add(remaining);
                        self.phase = Phase::Soaking { wave, until };
                        (wave, Resumed::Soaking { until, remaining })
                    }
                    Phase::Paused {
                        from: PausedFrom::Standing { wave },
                        ..
                    } => {
                        self.phase = Phase::Standing { wave, since: now };
                        (wave, Resumed::Standing)
                    }
                    Phase::Halted { wave, .. } => {
                        let deadline = self.run_afresh(wave, now);
                        (wave, Resumed::AfterHalt { deadline })
                    }
                    _ => {
                        return Err(self
                            .illegal("resume", "only a paused or halted campaign can be resumed"))
                    }
                };
                self.note(now, wave, DecisionKind::Resumed { to }, &mut fx);
                fx.push(Effect::Resumed { wave });
                self.announce(&mut fx);
            }
            Input::Abort => {
                if self.is_finished() {
                    return Err(self.illegal("abort", "it has already ended"));
                }
                let announced = self.current_wave();
                self.phase = Phase::Aborted { at: now, announced };
                self.log(now, announced, DecisionKind::Aborted, &mut fx);
                fx.push(Effect::Aborted);
                self.announce(&mut fx);
            }
            Input::SetGates(gates) => {
                if self.is_finished() {
                    return Err(self.illegal("change the gates of", "it has already ended"));
                }
                gates.validate()?;
                let set = DecisionKind::GatesSet {
                    gates,
                    were: self.gates,
                };
                self.gates = gates;
                let wave = self.current_wave();
                self.log(now, wave, set, &mut fx);
            }
            Input::Tick => {}
            Input::Windows { closed } => self.windows(now, closed, &mut fx),
            Input::Counts { wave, counts } => {
                if self.current_wave() != Some(wave) {
                    return Err(StepError::StaleCounts {
                        campaign: self.id.clone(),
                        got: wave,
                        phase: self.scope().phase(&self.phase),
                    });
                }
                self.counts = Some(counts);
            }
        }
        self.settle(now, &mut fx);
        Ok(fx)
    }

    /// Runs the judgements and timers that `now` makes due, until nothing
    /// moves. Ends: every turn either returns, or moves to a later wave
    /// whose counts are still unknown (so it returns on the next turn).
    fn settle(&mut self, now: u64, fx: &mut Vec<Effect>) {
        loop {
            if self.stop_at.is_some_and(|t| now >= t) {
                self.expire(now, fx);
            }
            match self.phase {
                Phase::Running {
                    wave,
                    deadline,
                    held_since,
                    ..
                } => {
                    let timed_out = held_since.is_none() && now >= deadline;
                    if self.emergency {
                        self.settle_emergency(now, wave, timed_out, fx);
                        return;
                    }
                    match judge::judge(self.counts, &self.gates, timed_out) {
                        None => return,
                        Some(Verdict::Halt(reason)) => {
                            self.halt(now, wave, reason, fx);
                            return;
                        }
                        Some(Verdict::Pass(rule)) => self.pass(now, wave, rule, fx),
                    }
                }
                Phase::Soaking { wave, until } => {
                    if let Some(reason) = self
                        .counts
                        .and_then(|c| judge::failure_halt(&c, &self.gates))
                    {
                        self.halt(now, wave, reason, fx);
                        return;
                    }
                    if now < until {
                        return;
                    }
                    if wave + 1 < self.waves.len() {
                        self.start_wave(wave + 1, now, fx);
                    } else {
                        self.complete(now, fx);
                    }
                }
                Phase::Standing { wave, .. } => {
                    // The counts are the latest `halt_window` results.
                    if let Some(reason) = self
                        .counts
                        .and_then(|c| judge::failure_halt(&c, &self.gates))
                    {
                        self.halt(now, wave, reason, fx);
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    fn settle_emergency(&mut self, now: u64, wave: usize, timed_out: bool, fx: &mut Vec<Effect>) {
        if let Some(c) = self.counts {
            if !self.failure_warned {
                if let Some(reason) = judge::failure_halt(&c, &self.gates) {
                    self.failure_warned = true;
                    self.note(now, wave, DecisionKind::EmergencyFailureBar { reason }, fx);
                }
            }
        }
        let all_decided = self.counts.is_some_and(|c| c.decided() >= c.applicable());
        if all_decided || timed_out {
            let counts = self.counts.unwrap_or_default();
            let ended = DecisionKind::EmergencyEnded {
                all_decided,
                counts,
            };
            self.note(now, wave, ended, fx);
            self.complete(now, fx);
        }
    }

    /// `wave` running from `now` with its whole timeout; returns the
    /// deadline. A wave's start, and a resume after a halt.
    fn run_afresh(&mut self, wave: usize, now: u64) -> u64 {
        let deadline = now.saturating_add(self.gates.wave_timeout_secs);
        self.phase = Phase::Running {
            wave,
            started_at: now,
            deadline,
            held_since: self.windows_hold().then_some(now),
        };
        deadline
    }

    fn start_wave(&mut self, wave: usize, now: u64, fx: &mut Vec<Effect>) {
        let deadline = self.run_afresh(wave, now);
        self.counts = None;
        self.failure_warned = false;
        let started = DecisionKind::WaveStarted {
            raised: self.raised(wave),
            deadline,
            timeout_secs: self.gates.wave_timeout_secs,
        };
        self.note(now, wave, started, fx);
        fx.push(Effect::WaveStarted { wave, deadline });
        self.announce(fx);
    }

    fn pass(&mut self, now: u64, wave: usize, rule: PassRule, fx: &mut Vec<Effect>) {
        let counts = self.counts.unwrap_or_default();
        let passed = DecisionKind::Passed {
            rule,
            counts,
            bar_bp: self.gates.success_bar_bp,
        };
        self.note(now, wave, passed, fx);
        fx.push(Effect::WavePassed { wave, rule, counts });
        if wave + 1 >= self.waves.len() && self.standing {
            self.phase = Phase::Standing { wave, since: now };
            self.note(now, wave, DecisionKind::Standing, fx);
        } else if wave + 1 >= self.waves.len() {
            self.complete(now, fx);
        } else if self.gates.soak_secs == 0 {
            self.start_wave(wave + 1, now, fx);
        } else {
            let until = now.saturating_add(self.gates.soak_secs);
            self.phase = Phase::Soaking { wave, until };
            let soaking = DecisionKind::Soaking {
                until,
                soak_secs: self.gates.soak_secs,
            };
            self.note(now, wave, soaking, fx);
            fx.push(Effect::Soaking { wave, until });
        }
    }

    fn halt(&mut self, now: u64, wave: usize, reason: HaltReason, fx: &mut Vec<Effect>) {
        self.phase = Phase::Halted {
            wave,
            at: now,
            reason,
        };
        self.note(now, wave, DecisionKind::Halted { reason }, fx);
        fx.push(Effect::Halted {
            wave,
            reason,
            counts: self.counts.unwrap_or_default(),
        });
        self.announce(fx);
    }

    /// Completes the campaign, unless it has members and none installed
    /// the release: then it halts, saying so (a campaign never ends
    /// `completed` with zero successes; an emergency neither).
    fn complete(&mut self, now: u64, fx: &mut Vec<Effect>) {
        let c = self.counts.unwrap_or_default();
        if c.success == 0 && c.members > 0 {
            let reason = HaltReason::NoSuccess {
                members: c.members,
                failure: c.failure,
                not_applicable: c.not_applicable,
                anomaly: c.anomaly,
            };
            self.halt(now, self.last_wave(), reason, fx);
            return;
        }
        self.phase = Phase::Completed { at: now };
        self.note(now, self.last_wave(), DecisionKind::Completed, fx);
        fx.push(Effect::Completed {
            counts: self.counts.unwrap_or_default(),
        });
    }

    fn announce(&self, fx: &mut Vec<Effect>) {
        if let Some(a) = self.announcement() {
            fx.push(Effect::Announce(a));
        }
    }

    fn note(&mut self, now: u64, wave: usize, kind: DecisionKind, fx: &mut Vec<Effect>) {
        self.log(now, Some(wave), kind, fx);
    }

    fn log(&mut self, now: u64, wave: Option<usize>, kind: DecisionKind, fx: &mut Vec<Effect>) {
        let d = Decision {
            at: now,
            wave,
            kind,
        };
        self.history.push(d.clone());
        fx.push(Effect::Decision(d));
    }

    fn last_wave(&self) -> usize {
        self.waves.len().saturating_sub(1)
    }

    /// What the texts of this campaign need to know of it.
    pub fn scope(&self) -> Scope {
        Scope {
            emergency: self.emergency,
            waves: self.waves.len(),
        }
    }

    /// The groups wave `wave` raises, with their new cohorts; `None` when
    /// it admits every device (an emergency with no groups).
    fn raised(&self, wave: usize) -> Option<BTreeMap<GroupName, u16>> {
        let now = self.cohorts(wave);
        if now.is_empty() {
            return None;
        }
        let before = wave.checked_sub(1).map(|w| self.cohorts(w));
        Some(
            now.iter()
                .filter(|(g, &c)| before.and_then(|b| b.get(*g)).copied().unwrap_or(0) < c)
                .map(|(g, &c)| (g.clone(), c))
                .collect(),
        )
    }

    fn illegal(&self, input: &'static str, hint: &'static str) -> StepError {
        StepError::Illegal {
            campaign: self.id.clone(),
            input,
            phase: self.scope().phase(&self.phase),
            hint,
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod time_tests;
