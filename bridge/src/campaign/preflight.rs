//! Pre-flight, computed at create: how many devices the campaign targets
//! (those its final cohorts admit), by arch, and how many have an arch the
//! release does not cover. Those devices will report `failed` /
//! `incompatible_arch`, which gating counts apart from failures
//! (PROTOCOL.md, "What the bridge promises").

use std::collections::BTreeMap;

use schemas::bucket::{admitted, MAX_COHORT};
use schemas::msg::manifest::ANY_ARCH;
use schemas::{DeviceId, GroupName};
use serde::{Deserialize, Serialize};

use super::members::Admission;
use super::plan::DeltaPlan;
use crate::fleet::Fleet;
use crate::sharded::ShardedSet;
use crate::store::DeviceRecord;

/// One arch among the targeted devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArchLine {
    pub devices: u32,
    /// The release has a manifest for it (or one for `any`).
    pub covered: bool,
}

/// One target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupLine {
    /// Registered devices in the group now.
    pub devices: u32,
    /// Of those, the ones the final cohort admits.
    pub targeted: u32,
    /// The final cohort, in basis points.
    pub cohort: u16,
}

/// The pre-flight report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Preflight {
    /// Registered devices the final cohorts admit.
    pub targeted: u32,
    /// Targeted devices by registered arch.
    pub by_arch: BTreeMap<String, ArchLine>,
    /// Targeted devices whose arch the release does not cover.
    pub uncovered: u32,
    /// The target groups (empty for an emergency to every device).
    pub groups: BTreeMap<GroupName, GroupLine>,
    /// The arches the release covers, in release order.
    pub release_arches: Vec<String>,
    /// Targeted devices of a covered arch provisioned trusting none of the
    /// keys that signed the release for it: they will refuse it as
    /// `unknown_key`. Devices whose trust is not known are not counted.
    #[serde(default)]
    pub unverifiable: u32,
    /// The kids (hex) that signed the release's manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release_kids: Vec<String>,
    /// E3: each delta of the release, the targeted devices that will take
    /// it and the bytes they spare (as `campaign plan` counts them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<DeltaPlan>,
}

impl Preflight {
    /// Counts the fleet as it is now. `distrusts(id, arch)` says a device
    /// is known not to trust the key that signed its arch's manifest.
    pub fn compute<'a>(
        fleet: &Fleet,
        admission: Admission<'_>,
        release_arches: impl IntoIterator<Item = &'a str>,
        distrusts: impl Fn(&DeviceId, &str) -> bool,
    ) -> Preflight {
        let mut scan = PreflightScan::new(admission, release_arches);
        scan.step(fleet, usize::MAX, &distrusts);
        scan.finish(fleet, &distrusts)
    }
}

/// The pre-flight's count, a slice at a time (issue 19): at 1,000,000
/// devices the pass over the target groups is most of a second, so core
/// runs it between its other messages while the `campaign create` waits
/// (the commands' `prepare` step). The count is of the fleet as each slice saw
/// it: a device that registers behind the cursor is not counted, which
/// an estimate made at create time can afford.
///
/// One pass over each target group's index, a device in several groups
/// counted once: `maybe` holds the devices their own group's cohort does
/// not admit, targeted if another group's does.
#[derive(Debug)]
pub struct PreflightScan {
    campaign: schemas::CampaignId,
    cohorts: BTreeMap<GroupName, u16>,
    emergency: bool,
    groups: Vec<(GroupName, u16)>,
    /// The group under way, and its line so far.
    next: usize,
    line: Option<GroupLine>,
    cursor: Option<DeviceId>,
    /// Targeted devices, with more than one group (foldhash, not SipHash:
    /// a fifth of a create's time at 1,000,000 devices was hashing ids; in
    /// shards, so that it grows a sixty-fourth at a time).
    members: ShardedSet<DeviceId>,
    maybe: Vec<(usize, DeviceId)>,
    /// Dedup by the published memberships (decided at the first step).
    by_published: Option<bool>,
    p: Preflight,
    done: bool,
}

impl PreflightScan {
    /// The count of `admission`'s final cohorts against a release for
    /// `release_arches`, not begun.
    pub fn new<'a>(
        admission: Admission<'_>,
        release_arches: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let release_arches: Vec<String> = release_arches.into_iter().map(str::to_string).collect();
        Self {
            campaign: admission.campaign.clone(),
            cohorts: admission.cohorts.clone(),
            emergency: admission.emergency,
            groups: admission
                .cohorts
                .iter()
                .map(|(g, c)| (g.clone(), *c))
                .collect(),
            next: 0,
            line: None,
            cursor: None,
            members: ShardedSet::default(),
            maybe: Vec::new(),
            by_published: None,
            p: Preflight {
                release_arches,
                ..Preflight::default()
            },
            done: false,
        }
    }

    /// True when this counts `campaign` with these final cohorts.
    pub fn is_for(
        &self,
        campaign: &schemas::CampaignId,
        cohorts: &BTreeMap<GroupName, u16>,
        emergency: bool,
        release_arches: &[&str],
    ) -> bool {
        &self.campaign == campaign
            && &self.cohorts == cohorts
            && self.emergency == emergency
            && self
                .p
                .release_arches
                .iter()
                .map(String::as_str)
                .eq(release_arches.iter().copied())
    }

    /// True once every target device is counted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn count(p: &mut Preflight, d: &DeviceRecord, distrusts: &dyn Fn(&DeviceId, &str) -> bool) {
        let line = match p.by_arch.get_mut(&d.arch) {
            Some(l) => l,
            None => {
                let covered = p
                    .release_arches
                    .iter()
                    .any(|a| a == ANY_ARCH || a == &d.arch);
                p.by_arch.entry(d.arch.clone()).or_insert(ArchLine {
                    devices: 0,
                    covered,
                })
            }
        };
        line.devices += 1;
        p.targeted += 1;
        if !line.covered {
            p.uncovered += 1;
        } else if distrusts(&d.id, &d.arch) {
            p.unverifiable += 1;
        }
    }

    /// Counts up to `budget` more devices. True once every one is.
    pub fn step(
        &mut self,
        fleet: &Fleet,
        budget: usize,
        distrusts: &dyn Fn(&DeviceId, &str) -> bool,
    ) -> bool {
        if self.done {
            return true;
        }
        let mut left = budget.max(1);
        let everyone = self.emergency && self.cohorts.is_empty();
        if everyone {
            let mut last = None;
            let mut n = 0;
            for d in fleet.devices_after(self.cursor.as_ref()).take(left) {
                Self::count(&mut self.p, d, distrusts);
                last = Some(&d.id);
                n += 1;
            }
            match last {
                Some(id) if n == left => self.cursor = Some(id.clone()),
                _ => self.done = true,
            }
            return self.done;
        }
        // With one group, a device its cohort does not admit is not targeted.
        let several = self.groups.len() > 1;
        // A device in several groups, counted once: by the groups it was
        // last sent, when every membership is sent (no set of a million
        // ids to build: it was half a create's time); else by a set.
        let published = *self
            .by_published
            .get_or_insert_with(|| several && fleet.pending_memberships() == 0);
        let (cohorts, campaign, emergency) = (&self.cohorts, &self.campaign, self.emergency);
        let admits_in = |g: &GroupName, id: &DeviceId| {
            cohorts.get(g).is_some_and(|&c| {
                c > 0 && (c >= MAX_COHORT || admitted(campaign, id, c, emergency))
            })
        };
        while self.next < self.groups.len() {
            let (group, cohort) = self.groups[self.next].clone();
            let all = cohort >= MAX_COHORT;
            let mut line = self.line.take().unwrap_or(GroupLine {
                devices: 0,
                targeted: 0,
                cohort,
            });
            let mut last = None;
            let mut n = 0;
            for d in fleet
                .devices_in_after(&group, self.cursor.as_ref())
                .take(left)
            {
                n += 1;
                last = Some(&d.id);
                line.devices += 1;
                let admits =
                    cohort > 0 && (all || admitted(&self.campaign, &d.id, cohort, self.emergency));
                let sent = || fleet.published(&d.id).unwrap_or(&[]);
                if !admits {
                    if !published {
                        self.maybe.push((self.next, d.id.clone()));
                    } else if sent().iter().any(|g| g != &group && admits_in(g, &d.id)) {
                        line.targeted += 1;
                    }
                    continue;
                }
                line.targeted += 1;
                let first = !several
                    || if published {
                        !sent().iter().any(|g| g < &group && admits_in(g, &d.id))
                    } else {
                        self.members.insert(d.id.clone())
                    };
                if first {
                    Self::count(&mut self.p, d, distrusts);
                }
            }
            if n == left {
                // The budget is spent: the next step resumes after the last.
                self.cursor = last.cloned();
                self.line = Some(line);
                return false;
            }
            left -= n;
            self.p.groups.insert(group, line);
            self.next += 1;
            self.cursor = None;
        }
        self.done = true;
        true
    }

    /// The report, the count finished first if it is not.
    pub fn finish(
        mut self,
        fleet: &Fleet,
        distrusts: &dyn Fn(&DeviceId, &str) -> bool,
    ) -> Preflight {
        self.step(fleet, usize::MAX, distrusts);
        for (group, id) in &self.maybe {
            if self.members.contains(id) {
                if let Some(line) = self.p.groups.get_mut(&self.groups[*group].0) {
                    line.targeted += 1;
                }
            }
        }
        self.p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::members::tests::fleet;
    use schemas::CampaignId;

    #[test]
    fn counts_uncovered_arches() {
        let f = fleet(&[("acme", 10), ("globex", 4)]);
        let c = CampaignId::new("camp-1").unwrap();
        let cohorts: BTreeMap<GroupName, u16> = [
            (GroupName::new("acme").unwrap(), 10000),
            (GroupName::new("globex").unwrap(), 10000),
        ]
        .into();
        let a = Admission {
            campaign: &c,
            cohorts: &cohorts,
            emergency: false,
        };
        let p = Preflight::compute(&f, a, ["esp32"], |_, _| false);
        assert_eq!(p.targeted, 14);
        assert_eq!(p.uncovered, 7);
        assert_eq!(
            p.by_arch["armv7"],
            ArchLine {
                devices: 7,
                covered: false
            }
        );
        assert!(p.by_arch["esp32"].covered);
        assert_eq!(p.groups[&GroupName::new("globex").unwrap()].targeted, 4);
        // `any` covers every arch.
        let p = Preflight::compute(&f, a, ["esp32", "any"], |_, _| false);
        assert_eq!(p.uncovered, 0);
        assert_eq!(p.unverifiable, 0);
        // Devices known not to trust the signing key, of covered arches only.
        let p = Preflight::compute(&f, a, ["esp32"], |id, _| id.as_str().ends_with('1'));
        let ending_in_1 = f
            .devices()
            .filter(|d| d.arch == "esp32" && d.id.as_str().ends_with('1'))
            .count();
        assert_eq!(p.unverifiable as usize, ending_in_1);
        // Overlapping groups, partial cohorts: the counts of the members
        // `Admission::members` finds.
        let mut f = fleet(&[("acme", 120), ("globex", 40)]);
        f.put_group(
            crate::fleet::Group::new(GroupName::new("all").unwrap(), Some("customer"), None, 1)
                .unwrap(),
        );
        for cohorts in [
            vec![("acme", 3000), ("all", 5000), ("globex", 0)],
            vec![("acme", 0), ("all", 2000)],
            vec![("globex", 7000)],
        ] {
            let cohorts = crate::testutil::cohorts(&cohorts);
            let a = Admission {
                campaign: &c,
                cohorts: &cohorts,
                emergency: false,
            };
            let members = a.members(&f);
            let p = Preflight::compute(&f, a, ["esp32"], |_, _| false);
            assert_eq!(p.targeted as usize, members.len());
            let esp = members
                .iter()
                .filter(|id| f.device(id).unwrap().arch == "esp32")
                .count();
            assert_eq!(p.by_arch["esp32"].devices as usize, esp);
            for (g, line) in &p.groups {
                let want = f
                    .devices_in(g)
                    .iter()
                    .filter(|d| members.contains(&d.id))
                    .count();
                assert_eq!(
                    (line.targeted as usize, line.devices as usize),
                    (want, f.count_in(g)),
                    "{g}"
                );
            }
        }
        // JSON for the CLI.
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["by_arch"]["armv7"]["devices"], 7);
    }

    /// Counted in slices of any size, the pre-flight is the one counted
    /// at once.
    #[test]
    fn a_count_in_slices_is_the_count_at_once() {
        let build = || {
            let mut f = fleet(&[("acme", 50), ("globex", 30)]);
            f.put_group(
                crate::fleet::Group::new(GroupName::new("all").unwrap(), Some("customer"), None, 1)
                    .unwrap(),
            );
            f
        };
        // `f` has memberships still to send (deduplicated by a set),
        // `sent` none (deduplicated by the memberships sent).
        let f = build();
        let mut sent = build();
        sent.membership_changes(None);
        sent.group_membership_changes();
        assert!(f.pending_memberships() > 0);
        assert_eq!(sent.pending_memberships(), 0);
        let c = CampaignId::new("camp-1").unwrap();
        for (cohorts, emergency) in [
            (vec![("acme", 3000), ("all", 5000), ("globex", 0)], false),
            (vec![("globex", 10000)], false),
            (vec![], true),
        ] {
            let cohorts = crate::testutil::cohorts(&cohorts);
            let a = Admission {
                campaign: &c,
                cohorts: &cohorts,
                emergency,
            };
            let distrusts = |id: &DeviceId, _: &str| id.as_str().ends_with('3');
            let whole = Preflight::compute(&f, a, ["esp32"], distrusts);
            // Deduplicated by the memberships sent: the same.
            assert_eq!(Preflight::compute(&sent, a, ["esp32"], distrusts), whole);
            if !emergency || !cohorts.is_empty() {
                let members = a.members(&f);
                assert_eq!(whole.targeted as usize, members.len());
            }
            for budget in [1, 2, 7, 1000] {
                let mut scan = PreflightScan::new(a, ["esp32"]);
                let mut slices = 1;
                while !scan.step(&f, budget, &distrusts) {
                    slices += 1;
                }
                assert!(budget >= 80 || slices > 1);
                assert_eq!(scan.finish(&f, &distrusts), whole, "budget {budget}");
            }
        }
    }
}
