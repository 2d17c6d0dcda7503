//! The registered devices of each group, kept up to date as devices
//! register or change labels and as groups are put or deleted (issue 19):
//! a group's devices are a lookup, not a scan of the registry, and a group
//! put re-evaluates its one selector once per device instead of every
//! group's for every device.
//!
//! Pure and owned by [`super::Fleet`], which calls it on every change;
//! `tests` checks it against the full scan after random changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use schemas::{DeviceId, GroupName};

use super::groups::{Group, GroupRule, Groups};
use super::registry::Registry;

/// Registered members per group.
#[derive(Debug, Default)]
pub struct GroupIndex {
    members: HashMap<GroupName, BTreeSet<DeviceId>>,
}

impl GroupIndex {
    /// The index of `groups` over `devices` (at load).
    pub fn build(groups: &Groups, devices: &Registry) -> Self {
        let mut ix = Self::default();
        for g in groups.iter() {
            ix.members.insert(g.name.clone(), scan(g, devices));
        }
        ix
    }

    /// The registered devices of a group (`None` for an unknown group).
    pub fn members(&self, group: &GroupName) -> Option<&BTreeSet<DeviceId>> {
        self.members.get(group)
    }

    /// A registered device is new (`fresh`: in no group yet, so nothing
    /// to take it out of) or its labels changed: re-evaluated in every
    /// group.
    pub fn device(
        &mut self,
        groups: &Groups,
        id: &DeviceId,
        labels: &BTreeMap<String, String>,
        fresh: bool,
    ) {
        for g in groups.iter() {
            let inside = g.contains(id, labels);
            if fresh && !inside {
                // A registration's cost: no lookup in each group it is not in.
                continue;
            }
            // No group name cloned per device and group (a Hello's cost).
            let set = match self.members.get_mut(&g.name) {
                Some(set) => set,
                None if !inside => continue,
                None => self.members.entry(g.name.clone()).or_default(),
            };
            if inside {
                if !set.contains(id) {
                    set.insert(id.clone());
                }
            } else {
                set.remove(id);
            }
        }
    }

    /// A group was put (new or replacing one): its members recomputed, or
    /// `scanned` (its selector's members, found in slices beforehand:
    /// [`super::scan`]). Returns the registered devices that joined or
    /// left it.
    pub fn put_group(
        &mut self,
        g: &Group,
        devices: &Registry,
        scanned: Option<BTreeSet<DeviceId>>,
    ) -> BTreeSet<DeviceId> {
        let now = scanned.unwrap_or_else(|| scan(g, devices));
        let before = self.members.insert(g.name.clone(), now).unwrap_or_default();
        let now = &self.members[&g.name];
        before.symmetric_difference(now).cloned().collect()
    }

    /// A group was deleted. Returns its registered devices (they left it).
    pub fn remove_group(&mut self, name: &GroupName) -> BTreeSet<DeviceId> {
        self.members.remove(name).unwrap_or_default()
    }
}

/// The registered devices of one group, by its rule: a list is looked up,
/// a selector evaluated once per device.
fn scan(g: &Group, devices: &Registry) -> BTreeSet<DeviceId> {
    match &g.rule {
        GroupRule::Members(m) => m
            .iter()
            .filter(|id| devices.contains_key(id))
            .cloned()
            .collect(),
        GroupRule::Selector(s) => devices
            .values()
            .filter(|d| s.matches(&d.labels))
            .map(|d| d.id.clone())
            .collect(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::Fleet;
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use schemas::msg::Hello;
    use schemas::{ComponentName, Epoch};

    const SELECTORS: [&str; 6] = [
        "customer=acme",
        "customer in (acme,globex), line",
        "!line",
        "line notin (1)",
        "customer!=globex",
        "line=2,customer=initech",
    ];

    pub(in crate::fleet) fn hello(labels: BTreeMap<String, String>) -> Hello {
        Hello {
            proto: 1,
            arch: "esp32".into(),
            versions: [(ComponentName::new("main").unwrap(), "1.0.0".into())].into(),
            labels,
            boot_id: "b1".into(),
            epoch: Epoch::new("ep000001").unwrap(),
            outbox: 1,
            features: Vec::new(),
        }
    }

    pub(in crate::fleet) fn random_labels(rng: &mut StdRng) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        if rng.gen_bool(0.8) {
            let c = ["acme", "globex", "initech"][rng.gen_range(0..3)];
            l.insert("customer".to_string(), c.to_string());
        }
        if rng.gen_bool(0.6) {
            l.insert("line".to_string(), rng.gen_range(1..4).to_string());
        }
        l
    }

    fn id(i: usize) -> DeviceId {
        DeviceId::new(format!("dev-{i:03}")).unwrap()
    }

    fn random_group(rng: &mut StdRng, name: &GroupName) -> Group {
        if rng.gen_bool(0.7) {
            let s = SELECTORS[rng.gen_range(0..SELECTORS.len())];
            Group::new(name.clone(), Some(s), None, 1).unwrap()
        } else {
            let listed: Vec<DeviceId> = (0..rng.gen_range(0..8))
                .map(|_| id(rng.gen_range(0..60)))
                .collect();
            Group::new(name.clone(), None, Some(&listed), 1).unwrap()
        }
    }

    /// After every random change the index holds what the full scan finds,
    /// and the memberships the incremental diff published leave nothing
    /// for a full recomputation to publish.
    #[test]
    fn the_index_and_the_diff_agree_with_the_full_scan() {
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut f = Fleet::default();
            let names: Vec<GroupName> = (0..5)
                .map(|i| GroupName::new(format!("g{i}")).unwrap())
                .collect();
            for step in 0..300 {
                let op = rng.gen_range(0..10);
                match op {
                    0..=5 => {
                        let d = id(rng.gen_range(0..60));
                        let change = f.hello(&d, &hello(random_labels(&mut rng)), step);
                        if change.labels_changed {
                            f.membership_changes(Some(&d));
                        }
                    }
                    6..=7 => {
                        let name = &names[rng.gen_range(0..names.len())];
                        f.put_group(random_group(&mut rng, name));
                        f.group_membership_changes();
                    }
                    _ => {
                        let name = &names[rng.gen_range(0..names.len())];
                        f.remove_group(name);
                        f.group_membership_changes();
                    }
                }
                for name in &names {
                    let want: Vec<DeviceId> = match f.groups().get(name) {
                        None => Vec::new(),
                        Some(g) => f
                            .devices()
                            .filter(|d| g.contains(&d.id, &d.labels))
                            .map(|d| d.id.clone())
                            .collect(),
                    };
                    let got: Vec<DeviceId> = f
                        .devices_in(name)
                        .into_iter()
                        .map(|d| d.id.clone())
                        .collect();
                    assert_eq!(got, want, "seed {seed} step {step} group {name}");
                }
                let missed = f.membership_changes(None);
                assert!(
                    missed.is_empty(),
                    "seed {seed} step {step}: the diff missed {missed:?}"
                );
            }
        }
    }
}
