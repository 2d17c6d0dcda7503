//! The wave gate: a pure state machine over (state, input) → (state,
//! effects). No I/O, no clock: every input comes with `now` in Unix seconds,
//! and every timer is stored as an absolute Unix second, so a [`Gate`]
//! serialized to the store and read back after a restart carries on exactly.
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

use std::collections::BTreeMap;
use std::fmt;

use schemas::ids::{CampaignId, GroupName};
use serde::{Deserialize, Serialize};

use super::spec::{CampaignSpec, Gates, SpecError};

/// 100 % in basis points.
const BP: u64 = 10_000;

/// The tally of the current wave's members, by PROTOCOL.md's gating classes.
/// `members` is authoritative; `pending` (no terminal state yet) is carried
/// for reports only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WaveCounts {
    pub members: u32,
    pub success: u32,
    pub failure: u32,
    pub not_applicable: u32,
    pub pending: u32,
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

fn ratio_bp(n: u32, d: u32) -> Option<u16> {
    (d > 0).then(|| {
        let bp = (u64::from(n) * BP / u64::from(d)).min(BP);
        u16::try_from(bp).unwrap_or(u16::MAX)
    })
}

/// True when n / d ≥ bar (basis points), exactly.
fn meets(n: u32, d: u32, bar_bp: u16) -> bool {
    u64::from(n) * BP >= u64::from(bar_bp) * u64::from(d)
}

/// Where the campaign is. Every timer is an absolute Unix second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Created, nothing announced.
    Draft,
    /// Wave `wave` is announced and judged until `deadline`.
    Running {
        wave: usize,
        started_at: u64,
        deadline: u64,
    },
    /// Wave `wave` passed; the next starts at `until`.
    Soaking { wave: usize, until: u64 },
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
}

/// What a pause interrupted, with the time it had left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl PausedFrom {
    pub fn wave(&self) -> usize {
        match *self {
            PausedFrom::Running { wave, .. } | PausedFrom::Soaking { wave, .. } => wave,
        }
    }
}

/// Why the gate halted a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum HaltReason {
    /// failure / decided went above the halt bar.
    FailureRate {
        failure: u32,
        decided: u32,
        failure_bp: u16,
        halt_bp: u16,
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

impl fmt::Display for HaltReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HaltReason::FailureRate {
                failure,
                decided,
                failure_bp,
                halt_bp,
            } => write!(
                f,
                "failure rate {} ({failure} of {decided} decided) is above the halt bar {}",
                Pct(failure_bp),
                Pct(halt_bp)
            ),
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

/// Which rule passed a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
}

/// One line of the campaign's decision log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub at: u64,
    pub wave: Option<usize>,
    pub text: String,
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
}

enum Verdict {
    Pass(PassRule),
    Halt(HaltReason),
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
            | Phase::Halted { wave, .. } => Some(wave),
            Phase::Paused { from, .. } => Some(from.wave()),
            Phase::Completed { .. } => Some(self.last_wave()),
            Phase::Aborted { announced, .. } => announced,
        }
    }

    /// Completed or aborted: no input but counts changes anything any more.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Completed { .. } | Phase::Aborted { .. })
    }

    /// When the bridge should send the next [`Input::Tick`].
    pub fn next_timer(&self) -> Option<u64> {
        match self.phase {
            Phase::Running { deadline, .. } => Some(deadline),
            Phase::Soaking { until, .. } => Some(until),
            _ => None,
        }
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
            Phase::Soaking { wave, .. } => (wave, AnnounceState::Active, None),
            Phase::Paused { from, .. } => (from.wave(), AnnounceState::Paused, None),
            Phase::Halted { wave, .. } => (wave, AnnounceState::Paused, None),
            Phase::Completed { .. } => (self.last_wave(), AnnounceState::Active, None),
            Phase::Aborted {
                announced: Some(wave),
                ..
            } => (wave, AnnounceState::Aborted, None),
        };
        Some(Announcement {
            wave,
            cohorts: self.cohorts(wave).clone(),
            state,
            deadline,
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
                self.start_wave(0, now, &mut fx);
            }
            Input::Pause => {
                let from = match self.phase {
                    Phase::Running {
                        wave,
                        started_at,
                        deadline,
                    } => PausedFrom::Running {
                        wave,
                        started_at,
                        remaining: deadline.saturating_sub(now),
                    },
                    Phase::Soaking { wave, until } => PausedFrom::Soaking {
                        wave,
                        remaining: until.saturating_sub(now),
                    },
                    _ => {
                        return Err(self
                            .illegal("pause", "only a running or soaking campaign can be paused"))
                    }
                };
                self.phase = Phase::Paused { at: now, from };
                let left = match from {
                    PausedFrom::Running { remaining, .. } => {
                        format!("{remaining} s of the wave timeout left")
                    }
                    PausedFrom::Soaking { remaining, .. } => format!("{remaining} s of soak left"),
                };
                self.note(
                    now,
                    from.wave(),
                    format!(
                        "paused by the operator at {} with {left}",
                        self.label(from.wave())
                    ),
                    &mut fx,
                );
                fx.push(Effect::Paused { wave: from.wave() });
                self.announce(&mut fx);
            }
            Input::Resume => {
                let (wave, text) = match self.phase {
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
                        };
                        (
                            wave,
                            format!(
                                "resumed by the operator: {} waits until {} ({remaining} s left)",
                                self.label(wave),
                                Clock(deadline)
                            ),
                        )
                    }
                    Phase::Paused {
                        from: PausedFrom::Soaking { wave, remaining },
                        ..
                    } => {
                        let until = now.saturating_add(remaining);
                        self.phase = Phase::Soaking { wave, until };
                        (
                            wave,
                            format!(
                                "resumed by the operator: {} soaks until {} ({remaining} s left)",
                                self.label(wave),
                                Clock(until)
                            ),
                        )
                    }
                    Phase::Halted { wave, .. } => {
                        let deadline = now.saturating_add(self.gates.wave_timeout_secs);
                        self.phase = Phase::Running {
                            wave,
                            started_at: now,
                            deadline,
                        };
                        (
                            wave,
                            format!(
                                "resumed by the operator after a halt: {} re-runs its gate until {}",
                                self.label(wave),
                                Clock(deadline)
                            ),
                        )
                    }
                    _ => {
                        return Err(self
                            .illegal("resume", "only a paused or halted campaign can be resumed"))
                    }
                };
                self.note(now, wave, text, &mut fx);
                fx.push(Effect::Resumed { wave });
                self.announce(&mut fx);
            }
            Input::Abort => {
                if self.is_finished() {
                    return Err(self.illegal("abort", "it has already ended"));
                }
                let announced = self.current_wave();
                self.phase = Phase::Aborted { at: now, announced };
                let text = match announced {
                    Some(w) => format!(
                        "aborted by the operator at {}: devices not yet installing cancel",
                        self.label(w)
                    ),
                    None => "aborted by the operator before it started".to_string(),
                };
                self.log(now, announced, text, &mut fx);
                fx.push(Effect::Aborted);
                self.announce(&mut fx);
            }
            Input::SetGates(gates) => {
                if self.is_finished() {
                    return Err(self.illegal("change the gates of", "it has already ended"));
                }
                gates.validate()?;
                let text = format!(
                    "gates set by the operator: {} (were: {})",
                    GatesText(&gates),
                    GatesText(&self.gates)
                );
                self.gates = gates;
                let wave = self.current_wave();
                self.log(now, wave, text, &mut fx);
            }
            Input::Tick => {}
            Input::Counts { wave, counts } => {
                if self.current_wave() != Some(wave) {
                    return Err(StepError::StaleCounts {
                        campaign: self.id.clone(),
                        got: wave,
                        phase: self.describe(),
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
            match self.phase {
                Phase::Running { wave, deadline, .. } => {
                    let timed_out = now >= deadline;
                    if self.emergency {
                        self.settle_emergency(now, wave, timed_out, fx);
                        return;
                    }
                    match self.judge(timed_out) {
                        None => return,
                        Some(Verdict::Halt(reason)) => {
                            self.halt(now, wave, reason, fx);
                            return;
                        }
                        Some(Verdict::Pass(rule)) => self.pass(now, wave, rule, fx),
                    }
                }
                Phase::Soaking { wave, until } => {
                    if let Some(reason) = self.counts.and_then(|c| self.failure_halt(&c)) {
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
                _ => return,
            }
        }
    }

    fn settle_emergency(&mut self, now: u64, wave: usize, timed_out: bool, fx: &mut Vec<Effect>) {
        if let Some(c) = self.counts {
            if !self.failure_warned {
                if let Some(reason) = self.failure_halt(&c) {
                    self.failure_warned = true;
                    self.note(
                        now,
                        wave,
                        format!("{reason}: an emergency does not halt by itself; pause or abort it if the fix is bad"),
                        fx,
                    );
                }
            }
        }
        let all_decided = self.counts.is_some_and(|c| c.decided() >= c.applicable());
        if all_decided || timed_out {
            let c = self.counts.unwrap_or_default();
            let why = if all_decided {
                "every applicable member decided".to_string()
            } else {
                format!(
                    "timeout with {} members still pending",
                    c.applicable() - c.decided()
                )
            };
            self.note(
                now,
                wave,
                format!(
                    "emergency ended ({why}): {} success, {} failure, {} not applicable",
                    c.success, c.failure, c.not_applicable
                ),
                fx,
            );
            self.complete(now, fx);
        }
    }

    /// The verdict on the current wave, if there is one yet.
    fn judge(&self, timed_out: bool) -> Option<Verdict> {
        if let Some(c) = self.counts {
            if c.applicable() == 0 {
                return Some(Verdict::Pass(PassRule::NoApplicableMembers));
            }
            if let Some(reason) = self.failure_halt(&c) {
                return Some(Verdict::Halt(reason));
            }
            if meets(c.success, c.applicable(), self.gates.success_bar_bp) {
                return Some(Verdict::Pass(PassRule::SuccessBar));
            }
            // Every applicable member decided and the bar is not met:
            // terminal states are final, so the timeout would change nothing.
            if c.decided() >= c.applicable() {
                return Some(Verdict::Halt(self.under_bar(&c)));
            }
        }
        if !timed_out {
            return None;
        }
        let c = self.counts.unwrap_or_default();
        let terminal = c.decided();
        let g = &self.gates;
        Some(if terminal < g.min_sample {
            Verdict::Halt(HaltReason::TooFewReports {
                terminal,
                min_sample: g.min_sample,
            })
        } else if meets(c.success, terminal, g.success_bar_bp) {
            Verdict::Pass(PassRule::AtTimeout)
        } else {
            Verdict::Halt(self.under_bar(&c))
        })
    }

    fn under_bar(&self, c: &WaveCounts) -> HaltReason {
        HaltReason::UnderBar {
            success: c.success,
            terminal: c.decided(),
            success_bp: ratio_bp(c.success, c.decided()).unwrap_or(0),
            bar_bp: self.gates.success_bar_bp,
        }
    }

    /// The failure halt, once the sample allows judging it.
    fn failure_halt(&self, c: &WaveCounts) -> Option<HaltReason> {
        let decided = c.decided();
        if decided == 0 || (decided < self.gates.min_sample && decided < c.applicable()) {
            return None;
        }
        let halt_bp = self.gates.failure_halt_bp;
        (u64::from(c.failure) * BP > u64::from(halt_bp) * u64::from(decided)).then(|| {
            HaltReason::FailureRate {
                failure: c.failure,
                decided,
                failure_bp: ratio_bp(c.failure, decided).unwrap_or(0),
                halt_bp,
            }
        })
    }

    fn start_wave(&mut self, wave: usize, now: u64, fx: &mut Vec<Effect>) {
        let deadline = now.saturating_add(self.gates.wave_timeout_secs);
        self.phase = Phase::Running {
            wave,
            started_at: now,
            deadline,
        };
        self.counts = None;
        self.failure_warned = false;
        let admits = self.admits(wave);
        self.note(
            now,
            wave,
            format!(
                "{} started: {admits}; waits until {} ({} s)",
                self.label(wave),
                Clock(deadline),
                self.gates.wave_timeout_secs
            ),
            fx,
        );
        fx.push(Effect::WaveStarted { wave, deadline });
        self.announce(fx);
    }

    fn pass(&mut self, now: u64, wave: usize, rule: PassRule, fx: &mut Vec<Effect>) {
        let counts = self.counts.unwrap_or_default();
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
                Pct(self.gates.success_bar_bp),
                counts.not_applicable
            ),
            PassRule::AtTimeout => format!(
                "at the timeout {} of {} terminal reports succeeded ({} >= bar {}), {} timed out, {} not applicable",
                counts.success,
                counts.decided(),
                Pct(ratio_bp(counts.success, counts.decided()).unwrap_or(0)),
                Pct(self.gates.success_bar_bp),
                counts.applicable() - counts.decided(),
                counts.not_applicable
            ),
        };
        self.note(now, wave, format!("{} passed: {why}", self.label(wave)), fx);
        fx.push(Effect::WavePassed { wave, rule, counts });
        if wave + 1 >= self.waves.len() {
            self.complete(now, fx);
        } else if self.gates.soak_secs == 0 {
            self.start_wave(wave + 1, now, fx);
        } else {
            let until = now.saturating_add(self.gates.soak_secs);
            self.phase = Phase::Soaking { wave, until };
            self.note(
                now,
                wave,
                format!(
                    "{} soaks until {} ({} s) before wave {}",
                    self.label(wave),
                    Clock(until),
                    self.gates.soak_secs,
                    wave + 2
                ),
                fx,
            );
            fx.push(Effect::Soaking { wave, until });
        }
    }

    fn halt(&mut self, now: u64, wave: usize, reason: HaltReason, fx: &mut Vec<Effect>) {
        self.phase = Phase::Halted {
            wave,
            at: now,
            reason,
        };
        self.note(
            now,
            wave,
            format!(
                "{} halted: {reason}; announced paused, resume or abort",
                self.label(wave)
            ),
            fx,
        );
        fx.push(Effect::Halted {
            wave,
            reason,
            counts: self.counts.unwrap_or_default(),
        });
        self.announce(fx);
    }

    fn complete(&mut self, now: u64, fx: &mut Vec<Effect>) {
        self.phase = Phase::Completed { at: now };
        let text = if self.emergency {
            "campaign completed; the announcement stays active for devices that come online later"
                .to_string()
        } else {
            format!(
                "campaign completed after {}; the announcement stays active for devices that come online later",
                self.label(self.last_wave())
            )
        };
        self.note(now, self.last_wave(), text, fx);
        fx.push(Effect::Completed {
            counts: self.counts.unwrap_or_default(),
        });
    }

    fn announce(&self, fx: &mut Vec<Effect>) {
        if let Some(a) = self.announcement() {
            fx.push(Effect::Announce(a));
        }
    }

    fn note(&mut self, now: u64, wave: usize, text: String, fx: &mut Vec<Effect>) {
        self.log(now, Some(wave), text, fx);
    }

    fn log(&mut self, now: u64, wave: Option<usize>, text: String, fx: &mut Vec<Effect>) {
        let d = Decision {
            at: now,
            wave,
            text,
        };
        self.history.push(d.clone());
        fx.push(Effect::Decision(d));
    }

    fn last_wave(&self) -> usize {
        self.waves.len().saturating_sub(1)
    }

    fn label(&self, wave: usize) -> String {
        if self.emergency {
            "the emergency".to_string()
        } else {
            format!("wave {} of {}", wave + 1, self.waves.len())
        }
    }

    /// Who wave `wave` admits, for people: the groups it raises.
    fn admits(&self, wave: usize) -> String {
        let now = self.cohorts(wave);
        if now.is_empty() {
            return "every device".to_string();
        }
        let before = wave.checked_sub(1).map(|w| self.cohorts(w));
        let raised: Vec<String> = now
            .iter()
            .filter(|(g, &c)| before.and_then(|b| b.get(*g)).copied().unwrap_or(0) < c)
            .map(|(g, &c)| format!("{g} {}", Pct(c)))
            .collect();
        format!("raises {}", raised.join(", "))
    }

    fn describe(&self) -> String {
        match self.phase {
            Phase::Draft => "a draft".to_string(),
            Phase::Running { wave, .. } => format!("running {}", self.label(wave)),
            Phase::Soaking { wave, .. } => format!("soaking after {}", self.label(wave)),
            Phase::Paused { from, .. } => format!("paused at {}", self.label(from.wave())),
            Phase::Halted { wave, .. } => format!("halted at {}", self.label(wave)),
            Phase::Completed { .. } => "completed".to_string(),
            Phase::Aborted { .. } => "aborted".to_string(),
        }
    }

    fn illegal(&self, input: &'static str, hint: &'static str) -> StepError {
        StepError::Illegal {
            campaign: self.id.clone(),
            input,
            phase: self.describe(),
            hint,
        }
    }
}

/// Basis points shown as a percentage, `9500` → `95.00%`.
struct Pct(u16);

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}%", self.0 / 100, self.0 % 100)
    }
}

struct GatesText<'a>(&'a Gates);

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

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0 % 86_400;
        write!(f, "{:02}:{:02}:{:02} UTC", t / 3600, (t / 60) % 60, t % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::{Kind, WaveSpec};
    use super::*;
    use schemas::ids::ArtifactId;

    const T0: u64 = 1_000_000;

    fn g(s: &str) -> GroupName {
        GroupName::new(s).unwrap()
    }

    fn spec(gates: Gates) -> CampaignSpec {
        let wave = |c: &[(&str, u16)]| WaveSpec {
            cohorts: c.iter().map(|&(n, b)| (g(n), b)).collect(),
        };
        CampaignSpec {
            id: CampaignId::new("camp-1").unwrap(),
            kind: Kind::Firmware,
            release: vec![ArtifactId::new("fw-esp32").unwrap()],
            waves: vec![
                wave(&[("canary", 10000)]),
                wave(&[("acme", 1000)]),
                wave(&[("acme", 10000), ("globex", 10000)]),
            ],
            gates,
            emergency: false,
        }
    }

    /// Defaults: bar 95 %, halt 5 %, sample 10, timeout 600 s, no soak.
    fn started(gates: Gates) -> Gate {
        let mut gate = Gate::new(&spec(gates)).unwrap();
        gate.step(T0, Input::Start).unwrap();
        gate
    }

    fn tally(members: u32, success: u32, failure: u32, not_applicable: u32) -> WaveCounts {
        WaveCounts {
            members,
            success,
            failure,
            not_applicable,
            pending: members - success - failure - not_applicable,
        }
    }

    fn count(gate: &mut Gate, now: u64, wave: usize, c: WaveCounts) -> Vec<Effect> {
        gate.step(now, Input::Counts { wave, counts: c }).unwrap()
    }

    fn started_waves(fx: &[Effect]) -> Vec<usize> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::WaveStarted { wave, .. } => Some(*wave),
                _ => None,
            })
            .collect()
    }

    fn halt_of(fx: &[Effect]) -> Option<HaltReason> {
        fx.iter().find_map(|e| match e {
            Effect::Halted { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    fn announced(fx: &[Effect]) -> Vec<(AnnounceState, Vec<(String, u16)>)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Announce(a) => Some((
                    a.state,
                    a.cohorts.iter().map(|(g, &c)| (g.to_string(), c)).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    fn running(gate: &Gate) -> Option<usize> {
        match gate.phase() {
            Phase::Running { wave, .. } => Some(*wave),
            _ => None,
        }
    }

    #[test]
    fn start_announces_wave_one() {
        let mut gate = Gate::new(&spec(Gates::default())).unwrap();
        assert_eq!(gate.announcement(), None);
        assert_eq!(gate.next_timer(), None);
        let fx = gate.step(T0, Input::Start).unwrap();
        assert_eq!(started_waves(&fx), vec![0]);
        assert_eq!(
            announced(&fx),
            vec![(
                AnnounceState::Active,
                vec![
                    ("acme".into(), 0),
                    ("canary".into(), 10000),
                    ("globex".into(), 0)
                ]
            )]
        );
        assert_eq!(
            gate.phase(),
            &Phase::Running {
                wave: 0,
                started_at: T0,
                deadline: T0 + 600
            }
        );
        assert_eq!(gate.next_timer(), Some(T0 + 600));
        assert_eq!(gate.announcement().unwrap().deadline, Some(T0 + 600));
        assert_eq!(
            gate.history()[0].text,
            "wave 1 of 3 started: raises canary 100.00%; waits until 13:56:40 UTC (600 s)"
        );
    }

    #[test]
    fn wave_two_waits_for_wave_one_bar() {
        let mut gate = started(Gates::default());
        // 18 of 20 succeeded, 2 still pending: 90 % < 95 %.
        assert!(started_waves(&count(&mut gate, T0 + 10, 0, tally(20, 18, 0, 0))).is_empty());
        assert!(gate.step(T0 + 99, Input::Tick).unwrap().is_empty());
        assert_eq!(running(&gate), Some(0));
        let fx = count(&mut gate, T0 + 100, 0, tally(20, 19, 0, 0));
        assert!(fx.contains(&Effect::WavePassed {
            wave: 0,
            rule: PassRule::SuccessBar,
            counts: tally(20, 19, 0, 0)
        }));
        assert_eq!(started_waves(&fx), vec![1]);
        assert_eq!(
            announced(&fx),
            vec![(
                AnnounceState::Active,
                vec![
                    ("acme".into(), 1000),
                    ("canary".into(), 10000),
                    ("globex".into(), 0)
                ]
            )]
        );
        // The new wave waits for its own counts: wave 0's are gone.
        assert_eq!(gate.counts(), None);
        assert_eq!(gate.next_timer(), Some(T0 + 100 + 600));
    }

    #[test]
    fn three_waves_to_completion() {
        let mut gate = started(Gates::default());
        count(&mut gate, T0 + 1, 0, tally(5, 5, 0, 0));
        count(&mut gate, T0 + 2, 1, tally(105, 105, 0, 0));
        let fx = count(&mut gate, T0 + 3, 2, tally(2000, 1950, 10, 20));
        assert_eq!(gate.phase(), &Phase::Completed { at: T0 + 3 });
        assert!(fx.contains(&Effect::Completed {
            counts: tally(2000, 1950, 10, 20)
        }));
        assert!(
            announced(&fx).is_empty(),
            "completion keeps the announcement"
        );
        let a = gate.announcement().unwrap();
        assert_eq!(
            (a.wave, a.state, a.deadline),
            (2, AnnounceState::Active, None)
        );
        assert!(gate.is_finished());
        assert_eq!(gate.next_timer(), None);
        // Late counts of the last wave are kept for reports.
        assert!(count(&mut gate, T0 + 9, 2, tally(2000, 1960, 10, 20)).is_empty());
        assert_eq!(gate.counts(), Some(&tally(2000, 1960, 10, 20)));
    }

    #[test]
    fn failure_halt_waits_for_the_sample() {
        let mut gate = started(Gates::default());
        // 4 failures of 9 decided: a 44 % failure rate, but 9 < min_sample.
        let fx = count(&mut gate, T0 + 5, 0, tally(100, 5, 4, 0));
        assert_eq!(halt_of(&fx), None);
        assert_eq!(running(&gate), Some(0));
        // The 10th decision makes the sample.
        let fx = count(&mut gate, T0 + 6, 0, tally(100, 6, 4, 0));
        assert_eq!(
            halt_of(&fx),
            Some(HaltReason::FailureRate {
                failure: 4,
                decided: 10,
                failure_bp: 4000,
                halt_bp: 500
            })
        );
        assert_eq!(announced(&fx)[0].0, AnnounceState::Paused);
        assert!(matches!(gate.phase(), Phase::Halted { wave: 0, .. }));
        assert_eq!(gate.next_timer(), None);
        assert_eq!(
            gate.history().last().unwrap().text,
            "wave 1 of 3 halted: failure rate 40.00% (4 of 10 decided) is above the halt bar 5.00%; announced paused, resume or abort"
        );
        // A halted campaign does not move on its own.
        assert!(gate.step(T0 + 10_000, Input::Tick).unwrap().is_empty());
        assert!(count(&mut gate, T0 + 10_001, 0, tally(100, 100, 0, 0)).is_empty());
    }

    #[test]
    fn failure_rate_at_the_bar_does_not_halt() {
        let mut gate = started(Gates::default());
        // 1 of 20 = exactly 5 %: not above.
        let fx = count(&mut gate, T0 + 1, 0, tally(100, 19, 1, 0));
        assert_eq!(halt_of(&fx), None);
        let fx = count(&mut gate, T0 + 2, 0, tally(100, 19, 2, 0));
        assert!(halt_of(&fx).is_some());
    }

    #[test]
    fn small_wave_judged_once_all_decided() {
        let mut gate = started(Gates::default());
        // 3 members, under min_sample: the failure rate waits for all three.
        assert_eq!(
            halt_of(&count(&mut gate, T0 + 1, 0, tally(3, 1, 1, 0))),
            None
        );
        assert!(matches!(
            halt_of(&count(&mut gate, T0 + 2, 0, tally(3, 2, 1, 0))),
            Some(HaltReason::FailureRate { decided: 3, .. })
        ));
    }

    #[test]
    fn timeout_passes_on_enough_terminal_reports() {
        let mut gate = started(Gates::default());
        // 20 of 100 reported, all success; 80 offline.
        count(&mut gate, T0 + 5, 0, tally(100, 20, 0, 0));
        assert!(gate.step(T0 + 599, Input::Tick).unwrap().is_empty());
        let fx = gate.step(T0 + 600, Input::Tick).unwrap();
        assert!(fx.contains(&Effect::WavePassed {
            wave: 0,
            rule: PassRule::AtTimeout,
            counts: tally(100, 20, 0, 0)
        }));
        assert_eq!(started_waves(&fx), vec![1]);
    }

    #[test]
    fn timeout_halts_on_too_few_reports() {
        let mut gate = started(Gates::default());
        count(&mut gate, T0 + 5, 0, tally(100, 9, 0, 0));
        let fx = gate.step(T0 + 700, Input::Tick).unwrap();
        assert_eq!(
            halt_of(&fx),
            Some(HaltReason::TooFewReports {
                terminal: 9,
                min_sample: 10
            })
        );
        assert!(started_waves(&fx).is_empty());
    }

    #[test]
    fn timeout_without_any_counts_halts() {
        let mut gate = started(Gates::default());
        let fx = gate.step(T0 + 600, Input::Tick).unwrap();
        assert_eq!(
            halt_of(&fx),
            Some(HaltReason::TooFewReports {
                terminal: 0,
                min_sample: 10
            })
        );
    }

    #[test]
    fn timeout_halts_under_the_bar() {
        // Halt bar 10 % so that 2 failures of 20 do not halt on their own.
        let mut gate = started(Gates {
            failure_halt_bp: 1000,
            ..Gates::default()
        });
        count(&mut gate, T0 + 5, 0, tally(100, 18, 2, 0));
        assert_eq!(running(&gate), Some(0));
        let fx = gate.step(T0 + 600, Input::Tick).unwrap();
        assert_eq!(
            halt_of(&fx),
            Some(HaltReason::UnderBar {
                success: 18,
                terminal: 20,
                success_bp: 9000,
                bar_bp: 9500
            })
        );
    }

    #[test]
    fn counts_after_the_deadline_are_judged_at_once() {
        // A restarted bridge sends counts first: the timeout rule applies.
        let mut gate = started(Gates::default());
        let fx = count(&mut gate, T0 + 5000, 0, tally(100, 30, 0, 0));
        assert_eq!(started_waves(&fx), vec![1]);
    }

    #[test]
    fn not_applicable_excluded_from_both_rates() {
        // Success: 10 of 20 members, the other 10 not applicable: 100 %.
        let mut gate = started(Gates::default());
        let fx = count(&mut gate, T0 + 1, 0, tally(20, 10, 0, 10));
        assert_eq!(started_waves(&fx), vec![1]);

        // Failure: 1 of 10 decided = 10 % despite 15 not applicable.
        let mut gate = started(Gates::default());
        let fx = count(&mut gate, T0 + 1, 0, tally(30, 9, 1, 15));
        assert!(matches!(
            halt_of(&fx),
            Some(HaltReason::FailureRate {
                decided: 10,
                failure_bp: 1000,
                ..
            })
        ));

        // Sample: not applicable reports are not terminal ones.
        let mut gate = started(Gates::default());
        count(&mut gate, T0 + 1, 0, tally(100, 9, 0, 50));
        let fx = gate.step(T0 + 600, Input::Tick).unwrap();
        assert!(matches!(
            halt_of(&fx),
            Some(HaltReason::TooFewReports { terminal: 9, .. })
        ));
    }

    #[test]
    fn wave_without_applicable_members_passes_at_once() {
        let mut gate = started(Gates::default());
        let fx = count(&mut gate, T0 + 1, 0, tally(0, 0, 0, 0));
        assert!(fx.contains(&Effect::WavePassed {
            wave: 0,
            rule: PassRule::NoApplicableMembers,
            counts: tally(0, 0, 0, 0)
        }));
        let fx = count(&mut gate, T0 + 2, 1, tally(7, 0, 0, 7));
        assert_eq!(started_waves(&fx), vec![2]);
    }

    #[test]
    fn pause_keeps_the_remaining_timeout() {
        let mut gate = started(Gates::default());
        count(&mut gate, T0 + 1, 0, tally(100, 20, 0, 0));
        let fx = gate.step(T0 + 100, Input::Pause).unwrap();
        assert!(fx.contains(&Effect::Paused { wave: 0 }));
        assert_eq!(announced(&fx)[0].0, AnnounceState::Paused);
        assert_eq!(
            gate.phase(),
            &Phase::Paused {
                at: T0 + 100,
                from: PausedFrom::Running {
                    wave: 0,
                    started_at: T0,
                    remaining: 500
                }
            }
        );
        assert_eq!(gate.next_timer(), None);
        // Long past the old deadline: nothing happens while paused, and
        // counts are stored, not judged.
        assert!(gate.step(T0 + 5000, Input::Tick).unwrap().is_empty());
        assert!(count(&mut gate, T0 + 5001, 0, tally(100, 25, 0, 0)).is_empty());
        let fx = gate.step(T0 + 10_000, Input::Resume).unwrap();
        assert!(fx.contains(&Effect::Resumed { wave: 0 }));
        assert_eq!(announced(&fx)[0].0, AnnounceState::Active);
        assert_eq!(gate.next_timer(), Some(T0 + 10_500));
        assert!(gate.step(T0 + 10_499, Input::Tick).unwrap().is_empty());
        let fx = gate.step(T0 + 10_500, Input::Tick).unwrap();
        assert_eq!(
            started_waves(&fx),
            vec![1],
            "25 of 25 terminal pass at the timeout"
        );
    }

    #[test]
    fn resume_judges_counts_that_came_while_paused() {
        let mut gate = started(Gates::default());
        gate.step(T0 + 1, Input::Pause).unwrap();
        count(&mut gate, T0 + 2, 0, tally(10, 10, 0, 0));
        assert!(matches!(gate.phase(), Phase::Paused { .. }));
        let fx = gate.step(T0 + 3, Input::Resume).unwrap();
        assert_eq!(started_waves(&fx), vec![1]);
    }

    #[test]
    fn soak_delays_the_next_wave() {
        let mut gate = started(Gates {
            soak_secs: 300,
            ..Gates::default()
        });
        let fx = count(&mut gate, T0 + 50, 0, tally(10, 10, 0, 0));
        assert!(fx.contains(&Effect::Soaking {
            wave: 0,
            until: T0 + 350
        }));
        assert!(started_waves(&fx).is_empty());
        assert!(announced(&fx).is_empty(), "soaking keeps wave 1's cohorts");
        assert_eq!(gate.next_timer(), Some(T0 + 350));
        assert!(gate.step(T0 + 349, Input::Tick).unwrap().is_empty());
        let fx = gate.step(T0 + 350, Input::Tick).unwrap();
        assert_eq!(started_waves(&fx), vec![1]);
        assert_eq!(
            gate.phase(),
            &Phase::Running {
                wave: 1,
                started_at: T0 + 350,
                deadline: T0 + 950
            }
        );
    }

    #[test]
    fn soak_halts_on_late_failures() {
        let mut gate = started(Gates {
            soak_secs: 300,
            ..Gates::default()
        });
        count(&mut gate, T0 + 50, 0, tally(10, 10, 0, 0));
        // Two devices roll back after the pass.
        let fx = count(&mut gate, T0 + 100, 0, tally(10, 8, 2, 0));
        assert!(matches!(
            halt_of(&fx),
            Some(HaltReason::FailureRate { failure: 2, .. })
        ));
        assert!(matches!(gate.phase(), Phase::Halted { wave: 0, .. }));
        assert!(gate.step(T0 + 1000, Input::Tick).unwrap().is_empty());
    }

    #[test]
    fn pause_during_soak_keeps_the_remaining_soak() {
        let mut gate = started(Gates {
            soak_secs: 300,
            ..Gates::default()
        });
        count(&mut gate, T0 + 50, 0, tally(10, 10, 0, 0));
        gate.step(T0 + 150, Input::Pause).unwrap();
        assert!(gate.step(T0 + 900, Input::Tick).unwrap().is_empty());
        gate.step(T0 + 1000, Input::Resume).unwrap();
        assert_eq!(
            gate.phase(),
            &Phase::Soaking {
                wave: 0,
                until: T0 + 1200
            }
        );
        assert_eq!(
            started_waves(&gate.step(T0 + 1200, Input::Tick).unwrap()),
            vec![1]
        );
    }

    #[test]
    fn resume_after_a_timeout_halt_gets_a_fresh_timeout() {
        let mut gate = started(Gates::default());
        count(&mut gate, T0 + 5, 0, tally(100, 5, 0, 0));
        gate.step(T0 + 600, Input::Tick).unwrap();
        assert!(matches!(gate.phase(), Phase::Halted { .. }));
        let fx = gate.step(T0 + 2000, Input::Resume).unwrap();
        assert_eq!(announced(&fx)[0].0, AnnounceState::Active);
        assert_eq!(
            gate.phase(),
            &Phase::Running {
                wave: 0,
                started_at: T0 + 2000,
                deadline: T0 + 2600
            }
        );
        let fx = count(&mut gate, T0 + 2100, 0, tally(100, 12, 0, 0));
        assert!(fx.is_empty());
        let fx = gate.step(T0 + 2600, Input::Tick).unwrap();
        assert_eq!(started_waves(&fx), vec![1]);
    }

    #[test]
    fn resume_after_a_failure_halt_needs_new_gates() {
        let mut gate = started(Gates::default());
        count(&mut gate, T0 + 5, 0, tally(40, 18, 2, 0));
        assert!(matches!(gate.phase(), Phase::Halted { .. }));
        // Same counts, same bars: halts again at once.
        let fx = gate.step(T0 + 100, Input::Resume).unwrap();
        assert!(halt_of(&fx).is_some());
        assert_eq!(announced(&fx).last().unwrap().0, AnnounceState::Paused);
        // The operator accepts 10 % failures and a 90 % bar.
        let relaxed = Gates {
            success_bar_bp: 9000,
            failure_halt_bp: 1000,
            ..Gates::default()
        };
        let fx = gate.step(T0 + 200, Input::SetGates(relaxed)).unwrap();
        assert!(
            matches!(&fx[..], [Effect::Decision(d)] if d.text.starts_with("gates set by the operator: success bar 90.00%, failure halt 10.00%"))
        );
        assert!(matches!(gate.phase(), Phase::Halted { .. }));
        gate.step(T0 + 300, Input::Resume).unwrap();
        assert_eq!(running(&gate), Some(0));
        let fx = count(&mut gate, T0 + 400, 0, tally(40, 36, 4, 0));
        assert_eq!(started_waves(&fx), vec![1]);
    }

    #[test]
    fn set_gates_refuses_bad_values() {
        let mut gate = started(Gates::default());
        let before = gate.clone();
        let err = gate
            .step(
                T0,
                Input::SetGates(Gates {
                    min_sample: 0,
                    ..Gates::default()
                }),
            )
            .unwrap_err();
        assert!(matches!(err, StepError::BadGates(_)));
        assert_eq!(gate, before);
    }

    #[test]
    fn abort_from_each_phase() {
        // Running: announce aborted at the current cohorts.
        let mut gate = started(Gates::default());
        count(&mut gate, T0 + 1, 0, tally(5, 5, 0, 0));
        let fx = gate.step(T0 + 2, Input::Abort).unwrap();
        assert!(fx.contains(&Effect::Aborted));
        let a = announced(&fx);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, AnnounceState::Aborted);
        assert!(a[0].1.contains(&("acme".to_string(), 1000)));
        assert_eq!(
            gate.phase(),
            &Phase::Aborted {
                at: T0 + 2,
                announced: Some(1)
            }
        );
        assert!(gate.is_finished());
        assert!(gate.step(T0 + 3, Input::Abort).is_err());
        assert!(gate.step(T0 + 3, Input::Resume).is_err());
        assert!(gate.step(T0 + 9999, Input::Tick).unwrap().is_empty());

        // Draft: nothing was announced, nothing to withdraw.
        let mut gate = Gate::new(&spec(Gates::default())).unwrap();
        let fx = gate.step(T0, Input::Abort).unwrap();
        assert!(announced(&fx).is_empty());
        assert_eq!(gate.announcement(), None);
        assert!(gate.step(T0, Input::Start).is_err());

        // Paused and halted.
        for prep in [Input::Pause, Input::Tick] {
            let mut gate = started(Gates::default());
            let now = if prep == Input::Tick {
                T0 + 600
            } else {
                T0 + 1
            };
            gate.step(now, prep).unwrap();
            let fx = gate.step(now + 1, Input::Abort).unwrap();
            assert_eq!(announced(&fx)[0].0, AnnounceState::Aborted);
        }

        // Completed is final.
        let mut gate = started(Gates::default());
        for w in 0..3 {
            count(&mut gate, T0 + 1, w, tally(1, 1, 0, 0));
        }
        assert!(matches!(gate.phase(), Phase::Completed { .. }));
        let err = gate.step(T0 + 2, Input::Abort).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot abort campaign camp-1: it is completed; it has already ended"
        );
    }

    #[test]
    fn illegal_inputs_are_errors_and_change_nothing() {
        let draft = &Gate::new(&spec(Gates::default())).unwrap();
        let gate = &started(Gates::default());
        let paused = &mut started(Gates::default());
        paused.step(T0 + 1, Input::Pause).unwrap();
        let paused = &*paused;
        let cases: Vec<(&Gate, Input, &str)> = vec![
            (gate, Input::Start, "cannot start campaign camp-1: it is running wave 1 of 3; a campaign starts once; resume continues a paused or halted one"),
            (gate, Input::Resume, "cannot resume campaign camp-1: it is running wave 1 of 3; only a paused or halted campaign can be resumed"),
            (draft, Input::Pause, "cannot pause campaign camp-1: it is a draft; only a running or soaking campaign can be paused"),
            (draft, Input::Resume, "cannot resume campaign camp-1: it is a draft; only a paused or halted campaign can be resumed"),
            (paused, Input::Pause, "cannot pause campaign camp-1: it is paused at wave 1 of 3; only a running or soaking campaign can be paused"),
            (paused, Input::Start, "cannot start campaign camp-1: it is paused at wave 1 of 3; a campaign starts once; resume continues a paused or halted one"),
            (gate, Input::Counts { wave: 1, counts: tally(1, 1, 0, 0) }, "counts for wave 2 arrived while campaign camp-1 is running wave 1 of 3: send the tally of the current wave"),
            (draft, Input::Counts { wave: 0, counts: tally(1, 1, 0, 0) }, "counts for wave 1 arrived while campaign camp-1 is a draft: send the tally of the current wave"),
        ];
        for (before, input, want) in cases {
            let mut gate = before.clone();
            let err = gate.step(T0 + 5, input).unwrap_err();
            assert_eq!(err.to_string(), want);
            assert_eq!(&gate, before);
        }
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut gate = started(Gates::default());
        assert!(gate.step(T0 - 500, Input::Tick).unwrap().is_empty());
        gate.step(T0 + 700, Input::Pause).unwrap();
        assert!(matches!(
            gate.phase(),
            Phase::Paused {
                from: PausedFrom::Running { remaining: 0, .. },
                ..
            }
        ));
        // Resumed with no time left: judged at once (no counts: halt).
        let fx = gate.step(T0 + 800, Input::Resume).unwrap();
        assert!(halt_of(&fx).is_some());
        let mut gate = started(Gates {
            wave_timeout_secs: u64::MAX,
            ..Gates::default()
        });
        assert_eq!(gate.next_timer(), Some(u64::MAX));
        assert!(gate.step(u64::MAX - 1, Input::Tick).unwrap().is_empty());
    }

    fn emergency(groups: &[&str]) -> Gate {
        let mut s = spec(Gates::default());
        s.emergency = true;
        s.waves = if groups.is_empty() {
            vec![]
        } else {
            vec![WaveSpec {
                cohorts: groups.iter().map(|&n| (g(n), 10000)).collect(),
            }]
        };
        let mut gate = Gate::new(&s).unwrap();
        gate.step(T0, Input::Start).unwrap();
        gate
    }

    #[test]
    fn emergency_for_every_device_completes_when_all_decided() {
        let mut gate = emergency(&[]);
        assert_eq!(gate.wave_count(), 1);
        let a = gate.announcement().unwrap();
        assert!(a.cohorts.is_empty(), "every device: P/emergency");
        assert_eq!(a.state, AnnounceState::Active);
        // 30 % failures: logged once, no halt.
        let fx = count(&mut gate, T0 + 1, 0, tally(100, 7, 3, 0));
        assert_eq!(halt_of(&fx), None);
        assert!(
            matches!(&fx[..], [Effect::Decision(d)] if d.text.contains("an emergency does not halt by itself"))
        );
        assert!(count(&mut gate, T0 + 2, 0, tally(100, 8, 4, 0)).is_empty());
        let fx = count(&mut gate, T0 + 3, 0, tally(100, 80, 15, 5));
        assert!(fx.contains(&Effect::Completed {
            counts: tally(100, 80, 15, 5)
        }));
        assert!(gate.is_finished());
    }

    #[test]
    fn emergency_completes_at_the_timeout_and_can_be_paused() {
        let mut gate = emergency(&["acme", "globex"]);
        assert_eq!(
            gate.announcement()
                .unwrap()
                .cohorts
                .values()
                .collect::<Vec<_>>(),
            vec![&10000, &10000]
        );
        count(&mut gate, T0 + 1, 0, tally(100, 10, 0, 0));
        gate.step(T0 + 100, Input::Pause).unwrap();
        gate.step(T0 + 200, Input::Resume).unwrap();
        assert!(gate.step(T0 + 699, Input::Tick).unwrap().is_empty());
        let fx = gate.step(T0 + 700, Input::Tick).unwrap();
        assert!(fx.contains(&Effect::Completed {
            counts: tally(100, 10, 0, 0)
        }));
        assert!(gate
            .history()
            .iter()
            .any(|d| d.text.contains("timeout with 90 members still pending")));
    }

    /// A whole campaign as (now, input); counts that do not apply to the
    /// wave of the moment are skipped by `drive`.
    fn script() -> Vec<(u64, Input)> {
        let c = |wave, counts| Input::Counts { wave, counts };
        let relaxed = Gates {
            success_bar_bp: 9000,
            failure_halt_bp: 1000,
            soak_secs: 200,
            ..Gates::default()
        };
        vec![
            (T0, Input::Start),
            (T0 + 10, c(0, tally(10, 4, 0, 0))),
            // Passes, soaks until T0 + 220.
            (T0 + 20, c(0, tally(10, 10, 0, 0))),
            (T0 + 100, Input::Tick),
            // 70 s of soak left.
            (T0 + 150, Input::Pause),
            (T0 + 400, Input::Resume),
            (T0 + 410, Input::Tick),
            // Stale: wave 1 has not started (an error, skipped).
            (T0 + 420, c(1, tally(110, 60, 1, 3))),
            // Soak over: wave 2 of 3 until T0 + 1070.
            (T0 + 470, Input::Tick),
            (T0 + 600, c(1, tally(110, 60, 1, 3))),
            // 6 of 67 = 8.96 % > 8 %: halt.
            (T0 + 700, c(1, tally(110, 61, 6, 3))),
            (T0 + 800, Input::Tick),
            (T0 + 850, Input::SetGates(relaxed)),
            // Fresh timeout: until T0 + 1500.
            (T0 + 900, Input::Resume),
            (T0 + 1000, c(1, tally(110, 80, 6, 3))),
            (T0 + 1100, Input::Tick),
            // 80 of 86 terminal = 93 % >= 90 %: passes at the timeout.
            (T0 + 1500, Input::Tick),
            (T0 + 1600, c(1, tally(110, 85, 6, 3))),
            // Soak over: wave 3 of 3.
            (T0 + 1700, Input::Tick),
            (T0 + 1800, c(2, tally(2000, 1990, 5, 5))),
            (T0 + 1900, Input::Tick),
        ]
    }

    fn drive(gate: &mut Gate, steps: &[(u64, Input)]) -> Vec<Vec<Effect>> {
        steps
            .iter()
            .map(|(now, input)| gate.step(*now, input.clone()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn serde_round_trip_mid_campaign_resumes_exactly() {
        let gates = Gates {
            soak_secs: 200,
            failure_halt_bp: 800,
            ..Gates::default()
        };
        let steps = script();
        let mut straight = Gate::new(&spec(gates)).unwrap();
        let all = drive(&mut straight, &steps);
        assert!(matches!(straight.phase(), Phase::Completed { .. }));
        assert!(all
            .iter()
            .flatten()
            .any(|e| matches!(e, Effect::Halted { .. })));
        assert!(all
            .iter()
            .flatten()
            .any(|e| matches!(e, Effect::Soaking { .. })));

        for cut in 1..steps.len() {
            let mut gate = Gate::new(&spec(gates)).unwrap();
            drive(&mut gate, &steps[..cut]);
            // JSON, as a human may read it from the store.
            let json = serde_json::to_string(&gate).unwrap();
            let mut from_json: Gate = serde_json::from_str(&json).unwrap();
            assert_eq!(from_json, gate, "json, cut {cut}");
            // CBOR, as the bridge may store it.
            let mut bytes = Vec::new();
            ciborium::into_writer(&gate, &mut bytes).unwrap();
            let mut from_cbor: Gate = ciborium::from_reader(&bytes[..]).unwrap();
            assert_eq!(from_cbor, gate, "cbor, cut {cut}");

            let rest = drive(&mut from_json, &steps[cut..]);
            assert_eq!(rest, all[cut..], "effects after cut {cut}");
            assert_eq!(from_json, straight, "end state after cut {cut}");
            drive(&mut from_cbor, &steps[cut..]);
            assert_eq!(from_cbor, straight);
        }
    }

    #[test]
    fn phase_json_is_readable() {
        let p = Phase::Paused {
            at: 5,
            from: PausedFrom::Soaking {
                wave: 1,
                remaining: 30,
            },
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"phase":"paused","at":5,"from":{"phase":"soaking","wave":1,"remaining":30}}"#
        );
    }

    #[test]
    fn inputs_and_effects_round_trip() {
        let inputs = [
            Input::Start,
            Input::SetGates(Gates::default()),
            Input::Counts {
                wave: 2,
                counts: tally(5, 1, 1, 1),
            },
        ];
        for i in inputs {
            let json = serde_json::to_string(&i).unwrap();
            assert_eq!(serde_json::from_str::<Input>(&json).unwrap(), i, "{json}");
        }
        let mut gate = started(Gates::default());
        let mut fx = count(&mut gate, T0 + 1, 0, tally(10, 5, 5, 0));
        fx.extend(gate.step(T0 + 2, Input::Abort).unwrap());
        for e in fx {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Effect>(&json).unwrap(), e, "{json}");
        }
    }

    /// The judgement of one running wave (bar 95 %, halt 10 %, sample 10)
    /// for a tally, before and at the timeout.
    #[test]
    fn judgement_table() {
        #[derive(Debug, PartialEq)]
        enum Out {
            Wait,
            Pass(PassRule),
            Fail,
            Few,
            Under,
        }
        use Out::*;
        use PassRule::*;
        // (members, success, failure, not_applicable, before timeout, at timeout)
        let rows: &[(u32, u32, u32, u32, Out, Out)] = &[
            (
                0,
                0,
                0,
                0,
                Pass(NoApplicableMembers),
                Pass(NoApplicableMembers),
            ),
            (
                4,
                0,
                0,
                4,
                Pass(NoApplicableMembers),
                Pass(NoApplicableMembers),
            ),
            (
                100,
                0,
                0,
                100,
                Pass(NoApplicableMembers),
                Pass(NoApplicableMembers),
            ),
            (100, 0, 0, 0, Wait, Few),
            (100, 95, 0, 0, Pass(SuccessBar), Pass(SuccessBar)),
            (100, 94, 0, 0, Wait, Pass(AtTimeout)),
            (100, 94, 4, 0, Wait, Pass(AtTimeout)),
            (100, 94, 5, 0, Wait, Under),
            (100, 80, 10, 0, Fail, Fail),
            (100, 9, 0, 0, Wait, Few),
            (100, 10, 0, 0, Wait, Pass(AtTimeout)),
            (100, 5, 4, 0, Wait, Few),
            (100, 6, 4, 0, Fail, Fail),
            (100, 50, 0, 50, Pass(SuccessBar), Pass(SuccessBar)),
            (20, 19, 0, 1, Pass(SuccessBar), Pass(SuccessBar)),
            (20, 19, 1, 0, Pass(SuccessBar), Pass(SuccessBar)),
            (20, 18, 1, 0, Wait, Under),
            // Everyone applicable decided, under the bar: nothing left to
            // wait for, so no wait for the timeout either.
            (100, 47, 3, 50, Under, Under),
            (3, 3, 0, 0, Pass(SuccessBar), Pass(SuccessBar)),
            (3, 2, 0, 0, Wait, Few),
            (3, 2, 1, 0, Fail, Fail),
            (1, 0, 1, 0, Fail, Fail),
            // An inconsistent tally (more decided than members) is not a panic.
            (5, 8, 2, 0, Fail, Fail),
        ];
        for (i, &(m, s, f, na, ref before, ref at)) in rows.iter().enumerate() {
            for (now, want) in [(T0 + 1, before), (T0 + 600, at)] {
                let mut gate = started(Gates {
                    failure_halt_bp: 1000,
                    ..Gates::default()
                });
                let counts = WaveCounts {
                    members: m,
                    success: s,
                    failure: f,
                    not_applicable: na,
                    pending: m.saturating_sub(s + f + na),
                };
                let fx = count(&mut gate, now, 0, counts);
                let got = match (
                    halt_of(&fx),
                    fx.iter().find_map(|e| match e {
                        Effect::WavePassed { rule, .. } => Some(*rule),
                        _ => None,
                    }),
                ) {
                    (Some(HaltReason::FailureRate { .. }), _) => Fail,
                    (Some(HaltReason::TooFewReports { .. }), _) => Few,
                    (Some(HaltReason::UnderBar { .. }), _) => Under,
                    (None, Some(rule)) => Pass(rule),
                    (None, None) => Wait,
                };
                assert_eq!(&got, want, "row {i} at {}", now - T0);
            }
        }
    }

    #[test]
    fn rates_in_basis_points() {
        let c = tally(30, 9, 1, 15);
        assert_eq!(c.applicable(), 15);
        assert_eq!(c.success_bp(), Some(6000));
        assert_eq!(c.failure_bp(), Some(1000));
        assert_eq!(tally(0, 0, 0, 0).success_bp(), None);
        assert_eq!(tally(3, 0, 0, 0).failure_bp(), None);
        assert_eq!(Pct(9500).to_string(), "95.00%");
        assert_eq!(Pct(5).to_string(), "0.05%");
    }
}
