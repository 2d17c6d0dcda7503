//! The live tally of one campaign: each device's latest state in it (from
//! the stored current state, first terminal state kept), the members of
//! the current wave, and the wave's [`WaveCounts`], kept up to date
//! incrementally: a report moves one device between classes (and between
//! paths, the artifacts its reports name: the full image or a delta), a
//! membership change adds or removes one device. Pure: the manager feeds
//! it.
//!
//! # Anomalies: what the bridge never said
//!
//! A device reports `cancelled` when the campaign was announced `aborted`,
//! or with detail `superseded` when a newer install overtook it
//! (PROTOCOL.md step 4 and 5). A `cancelled` that is not `superseded`, for
//! a campaign this bridge has not aborted ([`Tally::set_aborted`], or
//! reported before the abort), answers an `aborted` announcement someone
//! else published: it is an **anomaly**. It is not believed as not
//! applicable (which would let a forged abort empty a wave and "pass"
//! it); it counts as a failure, and [`WaveCounts::anomaly`] says how many
//! of the failures are anomalies, so the failure bar halts the campaign
//! with a reason that names them.

use std::collections::{BTreeMap, HashMap};

use schemas::msg::common::{outcome, Outcome};
use schemas::msg::{ErrorCode, StatusState};
use schemas::{ArtifactId, DeviceId};
use serde::{Deserialize, Serialize};

use super::gate::WaveCounts;
use crate::sharded::{ShardedMap, ShardedSet};

/// A device's latest state in the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub state: StatusState,
    pub error: Option<ErrorCode>,
    /// Unix seconds when the bridge stored it.
    pub at: u64,
    /// Its detail was `superseded` (a `cancelled` the device decided on
    /// its own, PROTOCOL.md step 4).
    pub superseded: bool,
    /// The artifact the report names (E3: the full image or a delta).
    pub artifact: Option<ArtifactId>,
}

impl Report {
    /// A report as stored at `at`: of its detail only whether it says
    /// `superseded` matters here.
    pub fn new(
        state: StatusState,
        error: Option<ErrorCode>,
        detail: Option<&str>,
        at: u64,
    ) -> Self {
        Report {
            state,
            error,
            at,
            superseded: detail == Some(SUPERSEDED),
            artifact: None,
        }
    }

    /// The same report, naming the artifact it was about.
    pub fn with_artifact(mut self, artifact: Option<ArtifactId>) -> Self {
        self.artifact = artifact;
        self
    }

    /// The gating class PROTOCOL.md gives the report, once terminal
    /// (before the bridge's own judgement of anomalies: [`Tally::outcome`]).
    pub fn outcome(&self) -> Option<Outcome> {
        outcome(self.state, self.error)
    }
}

/// The detail of a `cancelled` a device decided on its own.
pub const SUPERSEDED: &str = "superseded";

/// A member's place in the counts: its outcome (`None`: pending), whether
/// it is rebooting, whether it is an anomaly (then its outcome is a
/// failure). A device that sent nothing is `(None, false, false)`.
type Class = (Option<Outcome>, bool, bool);

const NO_CLASS: Class = (None, false, false);

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

/// Anomalies counted since they were last flagged: how many, and the
/// first few devices (the manager flags them once per tick).
#[derive(Debug, Clone, Default)]
pub struct Anomalies {
    count: u32,
    devices: Vec<DeviceId>,
}

impl Anomalies {
    /// Devices named in one flag.
    pub const NAMED: usize = 5;

    /// One more anomaly, of `device`.
    pub fn note(&mut self, device: &DeviceId) {
        self.count = self.count.saturating_add(1);
        if self.devices.len() < Self::NAMED {
            self.devices.push(device.clone());
        }
    }

    /// What was noted since the last call (`None`: nothing), emptied.
    pub fn take(&mut self) -> Option<(u32, Vec<DeviceId>)> {
        (self.count > 0).then(|| {
            let devices = std::mem::take(&mut self.devices);
            (std::mem::take(&mut self.count), devices)
        })
    }
}

/// The state word of a device that sent nothing yet.
pub const NO_REPORT: &str = "none";

/// One campaign's tally.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    reports: ShardedMap<DeviceId, Report>,
    members: ShardedSet<DeviceId>,
    counts: WaveCounts,
    /// Members by the artifact their latest report names.
    paths: HashMap<ArtifactId, u32>,
    /// Devices in the order they reached their terminal state (a standing
    /// campaign judges the latest of them).
    decided: Vec<DeviceId>,
    /// Unix second the bridge aborted the campaign: `cancelled` reports
    /// stored from then on are what it asked for.
    aborted_at: Option<u64>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// The campaign was aborted by the bridge at `at` (Unix seconds): a
    /// `cancelled` stored from then on is the answer to it. Set it before
    /// the reports when rebuilding a tally.
    pub fn set_aborted(&mut self, at: u64) {
        if self.aborted_at.is_none() {
            self.aborted_at = Some(at);
            self.recount();
        }
    }

    /// True when `r` is an anomaly: `cancelled`, not `superseded`, stored
    /// before any abort of the bridge's (see the module doc).
    pub fn is_anomaly(&self, r: &Report) -> bool {
        r.state == StatusState::Cancelled
            && !r.superseded
            && self.aborted_at.is_none_or(|t| r.at < t)
    }

    /// The gating class the bridge counts `r` in: PROTOCOL.md's, but an
    /// anomaly is a failure.
    pub fn outcome(&self, r: &Report) -> Option<Outcome> {
        if self.is_anomaly(r) {
            Some(Outcome::Failure)
        } else {
            r.outcome()
        }
    }

    /// Where the device counts (see [`Class`]).
    fn class(&self, r: &Report) -> Class {
        (
            self.outcome(r),
            r.state == StatusState::Rebooting,
            self.is_anomaly(r),
        )
    }

    /// Records a device's new state. The first terminal state is kept
    /// (as the status store does). Returns true when the wave's counts
    /// changed.
    pub fn report(&mut self, device: &DeviceId, new: Report) -> bool {
        let after = self.class(&new);
        let decided = new.outcome().is_some();
        let old = match self.reports.get_mut(device) {
            Some(o) if o.outcome().is_some() => return false,
            Some(o) => Some(std::mem::replace(o, new)),
            None => {
                self.reports.insert(device.clone(), new);
                None
            }
        };
        if decided {
            self.decided.push(device.clone());
        }
        if !self.members.contains(device) {
            return false;
        }
        let old_path = old.as_ref().and_then(|o| o.artifact.clone());
        let new_path = self.reports.get(device).and_then(|r| r.artifact.clone());
        if old_path != new_path {
            self.shift_path(old_path.as_ref(), -1);
            self.shift_path(new_path.as_ref(), 1);
        }
        let before = old.as_ref().map_or(NO_CLASS, |o| self.class(o));
        if before == after {
            return false;
        }
        self.shift(before, -1);
        self.shift(after, 1);
        true
    }

    /// Replaces the members (a new wave, or a fleet-wide change). Returns
    /// true when the counts changed.
    pub fn set_members(&mut self, members: ShardedSet<DeviceId>) -> bool {
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
        let report = self.reports.get(device);
        let class = report.map_or(NO_CLASS, |r| self.class(r));
        let path = report.and_then(|r| r.artifact.clone());
        let sign = if member { 1 } else { -1 };
        self.counts.members = add(self.counts.members, sign);
        self.shift(class, sign);
        self.shift_path(path.as_ref(), sign);
        true
    }

    /// True when `device` is a member of the current wave.
    pub fn is_member(&self, device: &DeviceId) -> bool {
        self.members.contains(device)
    }

    /// The members of the current wave.
    pub fn members(&self) -> &ShardedSet<DeviceId> {
        &self.members
    }

    /// The current wave's counts.
    pub fn counts(&self) -> WaveCounts {
        self.counts
    }

    /// The current wave's members whose latest report names `artifact`.
    pub fn took(&self, artifact: &ArtifactId) -> u32 {
        self.paths.get(artifact).copied().unwrap_or(0)
    }

    /// Every device that reached a terminal state, first to latest, with
    /// that report.
    pub fn decided(&self) -> impl DoubleEndedIterator<Item = (&DeviceId, &Report)> + '_ {
        self.decided
            .iter()
            .filter_map(|d| self.reports.get(d).map(|r| (d, r)))
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
            let Some(r) = self.reports.get(d) else {
                continue;
            };
            if self.is_anomaly(r) {
                c.anomaly += 1;
            }
            match self.outcome(r) {
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
    pub fn get(&self, device: &DeviceId) -> Option<&Report> {
        self.reports.get(device)
    }

    /// [`Tally::breakdown`] of every member, from the smaller side: a
    /// wave widened to 1,000,000 devices has a few thousand reports, and
    /// the members without one are counted, not visited (issue 19).
    pub fn members_breakdown(&self) -> Breakdown {
        if self.reports.len() >= self.members.len() {
            return self.breakdown(self.members.iter());
        }
        let reported = self.reports.keys().filter(|d| self.members.contains(*d));
        let mut b = self.breakdown(reported);
        let silent = u32::try_from(self.members.len()).unwrap_or(u32::MAX) - b.counts.members;
        if silent > 0 {
            b.counts.members += silent;
            b.counts.pending += silent;
            *b.by_state.entry(NO_REPORT.to_string()).or_default() += silent;
        }
        b
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
                    if self.is_anomaly(r) {
                        b.counts.anomaly += 1;
                    }
                    match self.outcome(r) {
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
        let mut paths: HashMap<ArtifactId, u32> = HashMap::new();
        // The members that reported, from the smaller side: a wave widened
        // to 1,000,000 devices has a few thousand reports (issue 19).
        let reported: Box<dyn Iterator<Item = &Report>> = if self.reports.len() < self.members.len()
        {
            Box::new(
                self.reports
                    .iter()
                    .filter(|(d, _)| self.members.contains(*d))
                    .map(|(_, r)| r),
            )
        } else {
            Box::new(self.members.iter().filter_map(|d| self.reports.get(d)))
        };
        for report in reported {
            if let Some(a) = &report.artifact {
                *paths.entry(a.clone()).or_default() += 1;
            }
            let (outcome, rebooting, anomaly) = self.class(report);
            if rebooting {
                c.rebooting += 1;
            }
            if anomaly {
                c.anomaly += 1;
            }
            match outcome {
                None => {}
                Some(Outcome::Success) => c.success += 1,
                Some(Outcome::Failure) => c.failure += 1,
                Some(Outcome::NotApplicable) => c.not_applicable += 1,
            }
        }
        c.pending = c.members - c.success - c.failure - c.not_applicable;
        self.counts = c;
        self.paths = paths;
    }

    /// Moves one member onto (`sign` 1) or off (`sign` -1) a path.
    fn shift_path(&mut self, artifact: Option<&ArtifactId>, sign: i8) {
        let Some(a) = artifact else { return };
        let n = self.paths.entry(a.clone()).or_default();
        *n = add(*n, sign);
        if *n == 0 {
            self.paths.remove(a);
        }
    }

    /// Moves one member into (`sign` 1) or out of (`sign` -1) a class.
    fn shift(&mut self, (class, rebooting, anomaly): Class, sign: i8) {
        let c = &mut self.counts;
        if rebooting {
            c.rebooting = add(c.rebooting, sign);
        }
        if anomaly {
            c.anomaly = add(c.anomaly, sign);
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
        Report::new(state, error, None, 0)
    }
    fn c(members: u32, success: u32, failure: u32, na: u32) -> WaveCounts {
        WaveCounts {
            members,
            success,
            failure,
            not_applicable: na,
            pending: members - success - failure - na,
            ..WaveCounts::default()
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
        assert!(t.report(&d(4), Report::new(Cancelled, None, Some(SUPERSEDED), 0)));
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
        // Counted from the reports' side (fewer than members) or from the
        // members' (fewer than reports): the same.
        assert_eq!(t.members_breakdown(), t.breakdown(t.members()));
        assert_eq!(t.members_breakdown().counts, incremental);
        for i in 100..140 {
            t.report(&d(i), r(Success, None));
        }
        t.set_members((95..105).map(d).collect());
        assert!(t.reports.len() > t.members.len());
        assert_eq!(t.members_breakdown(), t.breakdown(t.members()));
        t.recount();
        assert_eq!(t.members_breakdown().counts, t.counts());
    }

    #[test]
    fn a_cancel_the_bridge_never_asked_for_is_an_anomaly_and_a_failure() {
        use StatusState::*;
        let cancelled = |at| Report::new(Cancelled, None, None, at);
        let mut t = Tally::new();
        t.set_members((0..6).map(d).collect());
        t.report(&d(0), r(Success, None));
        // No abort: a plain cancel is an anomaly, counted as a failure.
        assert!(t.report(&d(1), cancelled(100)));
        assert_eq!(t.counts().anomaly, 1);
        assert_eq!((t.counts().failure, t.counts().not_applicable), (1, 0));
        // Superseded: the device's own decision, not applicable.
        assert!(t.report(&d(2), Report::new(Cancelled, None, Some(SUPERSEDED), 100)));
        assert_eq!(
            t.counts(),
            WaveCounts {
                anomaly: 1,
                ..c(6, 1, 1, 1)
            }
        );
        // Another detail is no excuse.
        t.report(&d(3), Report::new(Cancelled, None, Some("aborted"), 150));
        assert_eq!(t.counts().anomaly, 2);
        // The window and the breakdown agree.
        assert_eq!(t.window_counts(10).anomaly, 2);
        assert_eq!(t.window_counts(10).failure, 2);
        let ids: Vec<DeviceId> = (0..6).map(d).collect();
        assert_eq!(t.breakdown(&ids).counts, t.counts());
        // The bridge aborts at 200: cancels from then on are its answer;
        // the ones before stay anomalies.
        t.set_aborted(200);
        t.report(&d(4), cancelled(200));
        assert_eq!(
            t.counts(),
            WaveCounts {
                anomaly: 2,
                ..c(6, 1, 2, 2)
            }
        );
        let incremental = t.counts();
        t.recount();
        assert_eq!(t.counts(), incremental);
        // Rebuilt after a restart with the abort set first: the same.
        let mut again = Tally::new();
        again.set_aborted(200);
        again.set_members((0..6).map(d).collect());
        for (dev, rep) in t.decided() {
            again.report(dev, rep.clone());
        }
        assert_eq!(again.counts(), incremental);
    }

    #[test]
    fn members_count_on_the_path_their_latest_report_names() {
        use StatusState::*;
        let a = |s: &str| ArtifactId::new(s).unwrap();
        let on = |state, artifact: &str| Report {
            artifact: Some(a(artifact)),
            ..r(state, None)
        };
        let (full, delta) = (a("fw-1.2.0"), a("fw-1.2.0-from-1.0.0"));
        let mut t = Tally::new();
        // Remembered before the device is a member, counted once it is.
        t.report(&d(0), on(Success, "fw-1.2.0"));
        t.set_members((0..6).map(d).collect());
        assert_eq!((t.took(&full), t.took(&delta)), (1, 0));
        // A report moves a device from one path to another, and a report
        // naming no artifact takes it off its path.
        t.report(&d(1), on(Downloading, "fw-1.2.0-from-1.0.0"));
        t.report(&d(2), on(Downloading, "fw-1.2.0-from-1.0.0"));
        assert_eq!(t.took(&delta), 2);
        t.report(&d(2), on(Downloading, "fw-1.2.0"));
        t.report(&d(1), on(Success, "fw-1.2.0-from-1.0.0"));
        t.report(&d(3), on(Downloading, "fw-1.2.0"));
        t.report(&d(3), r(Failed, Some(ErrorCode::NoSpace)));
        assert_eq!((t.took(&full), t.took(&delta)), (2, 1));
        // A terminal report stays: later ones move nothing.
        t.report(&d(1), on(Downloading, "fw-1.2.0"));
        assert_eq!(t.took(&delta), 1);
        // Non-members do not count; members leaving take their path along.
        t.report(&d(40), on(Success, "fw-1.2.0"));
        assert!(t.set_member(&d(2), false));
        assert_eq!((t.took(&full), t.took(&delta)), (1, 1));
        assert!(t.set_member(&d(40), true));
        assert_eq!(t.took(&full), 2);
        let incremental = t.paths.clone();
        t.recount();
        assert_eq!(t.paths, incremental);
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
