//! The verdict on a wave: pure arithmetic over its counts and the gates,
//! exact in integers (no rounding at the bar). [`judge`] is everything
//! the gate decides from counts; the rest of the gate is phases and
//! timers. The failure halt is judged on a confidence bound (bound.rs).

use super::super::spec::Gates;
use super::bound;
use super::{HaltReason, PassRule, WaveCounts};

/// 100 % in basis points.
pub(crate) const BP: u64 = 10_000;

/// What the counts say about the running wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass(PassRule),
    Halt(HaltReason),
}

/// n / d in basis points; `None` when d is 0.
pub fn ratio_bp(n: u32, d: u32) -> Option<u16> {
    (d > 0).then(|| {
        let bp = (u64::from(n) * BP / u64::from(d)).min(BP);
        u16::try_from(bp).unwrap_or(u16::MAX)
    })
}

/// True when n / d ≥ bar (basis points), exactly.
pub fn meets(n: u32, d: u32, bar_bp: u16) -> bool {
    u64::from(n) * BP >= u64::from(bar_bp) * u64::from(d)
}

/// The verdict on the running wave, if there is one yet: `counts` is its
/// latest tally (`None` before any), `timed_out` whether its deadline
/// passed.
pub fn judge(counts: Option<WaveCounts>, gates: &Gates, timed_out: bool) -> Option<Verdict> {
    if let Some(c) = counts {
        if c.applicable() == 0 {
            return Some(Verdict::Pass(PassRule::NoApplicableMembers));
        }
        if let Some(reason) = failure_halt(&c, gates) {
            return Some(Verdict::Halt(reason));
        }
        if meets(c.success, c.applicable(), gates.success_bar_bp) {
            return Some(Verdict::Pass(PassRule::SuccessBar));
        }
        // Every applicable member decided and the bar is not met:
        // terminal states are final, so the timeout would change nothing.
        if c.decided() >= c.applicable() {
            return Some(Verdict::Halt(under_bar(&c, gates)));
        }
    }
    if !timed_out {
        return None;
    }
    let c = counts.unwrap_or_default();
    let terminal = c.decided();
    Some(if terminal < gates.min_sample {
        Verdict::Halt(HaltReason::TooFewReports {
            terminal,
            min_sample: gates.min_sample,
        })
    } else if meets(c.success, terminal, gates.success_bar_bp) {
        Verdict::Pass(PassRule::AtTimeout)
    } else {
        Verdict::Halt(under_bar(&c, gates))
    })
}

/// The halt for a success rate under the bar.
pub fn under_bar(c: &WaveCounts, gates: &Gates) -> HaltReason {
    HaltReason::UnderBar {
        success: c.success,
        terminal: c.decided(),
        success_bp: ratio_bp(c.success, c.decided()).unwrap_or(0),
        bar_bp: gates.success_bar_bp,
    }
}

/// The failure halt, once the sample allows judging it (also while
/// soaking, and as a warning for an emergency).
pub fn failure_halt(c: &WaveCounts, gates: &Gates) -> Option<HaltReason> {
    let decided = c.decided();
    if decided == 0 || (decided < gates.min_sample && decided < c.applicable()) {
        return None;
    }
    let halt_bp = gates.failure_halt_bp;
    // Why a bound and the rebooting devices: bound.rs.
    let rebooting = c.rebooting.min(c.pending);
    let bound = bound::wilson_lower_bp(c.failure, decided.saturating_add(rebooting));
    (bound > halt_bp).then_some(HaltReason::FailureRate {
        failure: c.failure,
        decided,
        failure_bp: ratio_bp(c.failure, decided).unwrap_or(0),
        halt_bp,
        rebooting,
        bound_bp: Some(bound),
        anomaly: c.anomaly,
    })
}
