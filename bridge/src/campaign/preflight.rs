//! Pre-flight, computed at create: how many devices the campaign targets
//! (those its final cohorts admit), by arch, and how many have an arch the
//! release does not cover. Those devices will report `failed` /
//! `incompatible_arch`, which gating counts apart from failures
//! (PROTOCOL.md, "What the bridge promises").

use std::collections::{BTreeMap, HashSet};

use schemas::bucket::{admitted, MAX_COHORT};
use schemas::msg::manifest::ANY_ARCH;
use schemas::{DeviceId, GroupName};
use serde::{Deserialize, Serialize};

use super::members::Admission;
use super::plan::DeltaPlan;
use crate::fleet::Fleet;
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
        let release_arches: Vec<String> = release_arches.into_iter().map(str::to_string).collect();
        let any = release_arches.iter().any(|a| a == ANY_ARCH);
        let covers = |arch: &str| any || release_arches.iter().any(|a| a == arch);
        let mut p = Preflight {
            release_arches: release_arches.clone(),
            ..Preflight::default()
        };
        // One pass over each target group's index (issue 19: no set of
        // every member cloned, no second lookup per device); a device in
        // several groups counted once. `maybe`: devices their own group's
        // cohort does not admit, targeted if another group's does.
        // Sized once: growing it was a seventh of a create's samples.
        // foldhash, not SipHash: a fifth of a create's time at 1,000,000
        // devices was hashing ids (`perf`, issue 19).
        let mut members: HashSet<&DeviceId, foldhash::fast::RandomState> =
            HashSet::with_capacity_and_hasher(
                if admission.cohorts.len() > 1 {
                    admission.cohorts.keys().map(|g| fleet.count_in(g)).sum()
                } else {
                    0
                },
                Default::default(),
            );
        let mut maybe: Vec<(&GroupName, &DeviceId)> = Vec::new();
        let count = |p: &mut Preflight, d: &DeviceRecord| {
            let line = match p.by_arch.get_mut(&d.arch) {
                Some(l) => l,
                None => p.by_arch.entry(d.arch.clone()).or_insert(ArchLine {
                    devices: 0,
                    covered: covers(&d.arch),
                }),
            };
            line.devices += 1;
            p.targeted += 1;
            if !line.covered {
                p.uncovered += 1;
            } else if distrusts(&d.id, &d.arch) {
                p.unverifiable += 1;
            }
        };
        if admission.everyone() {
            for d in fleet.devices() {
                count(&mut p, d);
            }
            return p;
        }
        // With one group, a device its cohort does not admit is not targeted.
        let several = admission.cohorts.len() > 1;
        for (group, &cohort) in admission.cohorts {
            let all = cohort >= MAX_COHORT;
            let mut line = GroupLine {
                devices: 0,
                targeted: 0,
                cohort,
            };
            for d in fleet.devices_in_after(group, None) {
                line.devices += 1;
                let admits = cohort > 0
                    && (all || admitted(admission.campaign, &d.id, cohort, admission.emergency));
                if !admits {
                    maybe.push((group, &d.id));
                    continue;
                }
                line.targeted += 1;
                if !several || members.insert(&d.id) {
                    count(&mut p, d);
                }
            }
            p.groups.insert(group.clone(), line);
        }
        for (group, id) in maybe {
            if members.contains(id) {
                if let Some(line) = p.groups.get_mut(group) {
                    line.targeted += 1;
                }
            }
        }
        p
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
            let cohorts: BTreeMap<GroupName, u16> = cohorts
                .into_iter()
                .map(|(g, c)| (GroupName::new(g).unwrap(), c))
                .collect();
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
}
