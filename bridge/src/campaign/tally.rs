//! The live tally of one campaign: each device's latest state in it (from
//! the stored current state, first terminal state kept), the members of
//! the current wave, and the wave's [`WaveCounts`], kept up to date
//! incrementally: a report moves one device between classes, a membership
//! change adds or removes one device. Pure: the manager feeds it.

use std::collections::{BTreeMap, HashMap, HashSet};

use schemas::msg::common::{outcome, Outcome};
use schemas::msg::{ErrorCode, StatusState};
use schemas::DeviceId;
use serde::{Deserialize, Serialize};

use super::gate::WaveCounts;

/// A device's latest state in the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub state: StatusState,
    pub error: Option<ErrorCode>,
    /// Unix seconds when the bridge stored it.
    pub at: u64,
}

impl Report {
    /// The gating class, once terminal.
    pub fn outcome(&self) -> Option<Outcome> {
        outcome(self.state, self.error)
    }

    /// Where the device counts: its gating class, and whether it is
    /// rebooting into the new image (pending, past `installing`).
    fn class(&self) -> Class {
        (self.outcome(), self.state == StatusState::Rebooting)
    }
}

/// A member's place in the counts: its outcome (`None`: pending) and
/// whether it is rebooting. A device that sent nothing is `(None, false)`.
type Class = (Option<Outcome>, bool);

/// Counts by state and error over some devices, for people and scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Breakdown {
    /// The gating classes.
    pub counts: WaveCounts,
    /// Latest state → devices; `none` for devices that sent nothing yet.
    pub by_state: BTreeMap<String, u32>,
    /// Error code → devices, over failed and rolled back ones.
    pub by_error: BTreeMap<String, u32>,
}

/// The state word of a device that sent nothing yet.
pub const NO_REPORT: &str = "none";

/// One campaign's tally.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    reports: HashMap<DeviceId, Report>,
    members: HashSet<DeviceId>,
    counts: WaveCounts,
    /// Devices in the order they reached their terminal state (a standing
    /// campaign judges the latest of them).
    decided: Vec<DeviceId>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a device's new state. The first terminal state is kept
    /// (as the status store does). Returns true when the wave's counts
    /// changed.
    pub fn report(&mut self, device: &DeviceId, new: Report) -> bool {
        let old = self.reports.get(device).copied();
        if old.and_then(|o| o.outcome()).is_some() {
            return false;
        }
        self.reports.insert(device.clone(), new);
        if new.outcome().is_some() {
            self.decided.push(device.clone());
        }
        if !self.members.contains(device) {
            return false;
        }
        let before = old.map_or((None, false), |o| o.class());
        let after = new.class();
        if before == after {
            return false;
        }
        self.shift(before, -1);
        self.shift(after, 1);
        true
    }

    /// Replaces the members (a new wave, or a fleet-wide change). Returns
    /// true when the counts changed.
    pub fn set_members(&mut self, members: HashSet<DeviceId>) -> bool {
        self.members = members;
        let before = self.counts;
        self.recount();
        before != self.counts
    }

    /// Adds or removes one device. Returns true when the counts changed.
    pub fn set_member(&mut self, device: &DeviceId, member: bool) -> bool {
        let changed = if member {
            self.members.insert(device.clone())
        } else {
            self.members.remove(device)
        };
        if !changed {
            return false;
        }
        let class = self
            .reports
            .get(device)
            .map_or((None, false), |r| r.class());
        let sign = if member { 1 } else { -1 };
        self.counts.members = add(self.counts.members, sign);
        self.shift(class, sign);
        true
    }

    /// True when `device` is a member of the current wave.
    pub fn is_member(&self, device: &DeviceId) -> bool {
        self.members.contains(device)
    }

    /// The members of the current wave.
    pub fn members(&self) -> &HashSet<DeviceId> {
        &self.members
    }

    /// The current wave's counts.
    pub fn counts(&self) -> WaveCounts {
        self.counts
    }

    /// Every device that reached a terminal state, first to latest, with
    /// that report.
    pub fn decided(&self) -> impl DoubleEndedIterator<Item = (&DeviceId, Report)> + '_ {
        self.decided
            .iter()
            .filter_map(|d| self.reports.get(d).map(|r| (d, *r)))
    }

    /// The counts a standing campaign is judged on: of the members, the
    /// latest `window` results (success or failure; not-applicable ones
    /// are left out), and every member still pending (rebooting ones among
    /// them, as the wave counts them).
    pub fn window_counts(&self, window: u32) -> WaveCounts {
        let mut c = WaveCounts::default();
        let mut taken = 0;
        for d in self.decided.iter().rev() {
            if taken >= window {
                break;
            }
            if !self.members.contains(d) {
                continue;
            }
            match self.reports.get(d).and_then(|r| r.outcome()) {
                Some(Outcome::Success) => c.success += 1,
                Some(Outcome::Failure) => c.failure += 1,
                // Not a result: it neither fills the window nor counts.
                Some(Outcome::NotApplicable) | None => continue,
            }
            taken += 1;
        }
        c.pending = self.counts.pending;
        c.rebooting = self.counts.rebooting;
        c.members = taken + c.pending;
        c
    }

    /// The devices that installed the release: reported `success`, or
    /// are past `installing` (rebooting into it). Members or not: a device
    /// that left the group still runs what it installed.
    pub fn installed(&self) -> std::collections::BTreeSet<DeviceId> {
        self.reports
            .iter()
            .filter(|(_, r)| matches!(r.state, StatusState::Success | StatusState::Rebooting))
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// A device's latest state.
    pub fn get(&self, device: &DeviceId) -> Option<Report> {
        self.reports.get(device).copied()
    }

    /// Counts by state and error over `devices`.
    pub fn breakdown<'a>(&self, devices: impl IntoIterator<Item = &'a DeviceId>) -> Breakdown {
        let mut b = Breakdown::default();
        for d in devices {
            b.counts.members += 1;
            match self.reports.get(d) {
                None => {
                    b.counts.pending += 1;
                    *b.by_state.entry(NO_REPORT.to_string()).or_default() += 1;
                }
                Some(r) => {
                    *b.by_state.entry(r.state.as_str().to_string()).or_default() += 1;
                    if let Some(e) = r.error {
                        *b.by_error.entry(e.as_str().to_string()).or_default() += 1;
                    }
                    match r.outcome() {
                        None => {
                            b.counts.pending += 1;
                            if r.state == StatusState::Rebooting {
                                b.counts.rebooting += 1;
                            }
                        }
                        Some(Outcome::Success) => b.counts.success += 1,
                        Some(Outcome::Failure) => b.counts.failure += 1,
                        Some(Outcome::NotApplicable) => b.counts.not_applicable += 1,
                    }
                }
            }
        }
        b
    }

    fn recount(&mut self) {
        let mut c = WaveCounts {
            members: u32::try_from(self.members.len()).unwrap_or(u32::MAX),
            ..WaveCounts::default()
        };
        for d in &self.members {
            let report = self.reports.get(d);
            if report.is_some_and(|r| r.class() == (None, true)) {
                c.rebooting += 1;
            }
            match report.and_then(|r| r.outcome()) {
                None => {}
                Some(Outcome::Success) => c.success += 1,
                Some(Outcome::Failure) => c.failure += 1,
                Some(Outcome::NotApplicable) => c.not_applicable += 1,
            }
        }
        c.pending = c.members - c.success - c.failure - c.not_applicable;
        self.counts = c;
    }

    /// Moves one member into (`sign` 1) or out of (`sign` -1) a class.
    fn shift(&mut self, (class, rebooting): Class, sign: i8) {
        let c = &mut self.counts;
        if rebooting {
            c.rebooting = add(c.rebooting, sign);
        }
        let slot = match class {
            None => &mut c.pending,
            Some(Outcome::Success) => &mut c.success,
            Some(Outcome::Failure) => &mut c.failure,
            Some(Outcome::NotApplicable) => &mut c.not_applicable,
        };
        *slot = add(*slot, sign);
    }
}

fn add(v: u32, sign: i8) -> u32 {
    if sign >= 0 {
        v.saturating_add(1)
    } else {
        v.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u32) -> DeviceId {
        DeviceId::new(format!("dev-{i}")).unwrap()
    }
    fn r(state: StatusState, error: Option<ErrorCode>) -> Report {
        Report {
            state,
            error,
            at: 0,
        }
    }
    fn c(members: u32, success: u32, failure: u32, na: u32) -> WaveCounts {
        WaveCounts {
            members,
            success,
            failure,
            not_applicable: na,
            pending: members - success - failure - na,
            rebooting: 0,
        }
    }

    #[test]
    fn a_window_holds_the_latest_results_of_members() {
        use StatusState::*;
        let mut t = Tally::new();
        t.set_members((0..8).map(d).collect());
        // Old successes, then failures; a not-applicable one and a
        // non-member in between take no room.
        for i in 0..4 {
            t.report(&d(i), r(Success, None));
        }
        t.report(&d(4), r(Failed, Some(ErrorCode::IncompatibleArch)));
        t.report(&d(99), r(Failed, Some(ErrorCode::InstallFailed)));
        t.report(&d(5), r(Failed, Some(ErrorCode::InstallFailed)));
        t.report(&d(6), r(Failed, Some(ErrorCode::InstallFailed)));
        let w = t.window_counts(3);
        assert_eq!((w.success, w.failure, w.pending), (1, 2, 1), "{w:?}");
        assert_eq!(w.members, 4);
        let all = t.window_counts(100);
        assert_eq!((all.success, all.failure), (4, 2));
        // A second terminal report of a device changes nothing.
        t.report(&d(6), r(Success, None));
        assert_eq!(t.window_counts(3), w);
    }

    #[test]
    fn incremental_counts_match_a_recount() {
        use StatusState::*;
        let mut t = Tally::new();
        // A report before the device is a member is remembered.
        assert!(!t.report(&d(0), r(Success, None)));
        assert!(t.set_members((0..10).map(d).collect()));
        assert_eq!(t.counts(), c(10, 1, 0, 0));
        assert!(!t.report(&d(1), r(Downloading, None)));
        assert!(t.report(&d(1), r(Failed, Some(ErrorCode::HashMismatch))));
        assert!(t.report(&d(2), r(Failed, Some(ErrorCode::IncompatibleArch))));
        assert!(t.report(&d(3), r(RolledBack, Some(ErrorCode::BootFailed))));
        assert!(t.report(&d(4), r(Cancelled, None)));
        assert_eq!(t.counts(), c(10, 1, 2, 2));
        // The first terminal state is kept.
        assert!(!t.report(&d(1), r(Success, None)));
        // A non-member's report changes nothing.
        assert!(!t.report(&d(50), r(Success, None)));
        // Members come and go.
        assert!(t.set_member(&d(50), true));
        assert_eq!(t.counts(), c(11, 2, 2, 2));
        assert!(t.set_member(&d(3), false));
        assert!(!t.set_member(&d(3), false));
        assert_eq!(t.counts(), c(10, 2, 1, 2));
        let incremental = t.counts();
        t.recount();
        assert_eq!(t.counts(), incremental);
    }

    #[test]
    fn breakdown_by_state_and_error() {
        use StatusState::*;
        let mut t = Tally::new();
        t.report(&d(1), r(Downloading, None));
        t.report(&d(2), r(Failed, Some(ErrorCode::NoSpace)));
        t.report(&d(3), r(Success, None));
        let ids: Vec<DeviceId> = (0..4).map(d).collect();
        let b = t.breakdown(&ids);
        assert_eq!(b.counts, c(4, 1, 1, 0));
        assert_eq!(b.by_state["none"], 1);
        assert_eq!(b.by_state["downloading"], 1);
        assert_eq!(b.by_error["no_space"], 1);
    }
}
