//! A selector group's members, found in slices (issue 19): a group put
//! evaluates its selector once per registered device, which at 1,000,000
//! devices is most of a second. Core runs the scan a slice at a time
//! between its other messages (the core actor), then the put itself
//! takes the finished set instead of scanning again.
//!
//! Devices that register or change labels while the scan is under way
//! are patched into the set as they come (`Fleet::hello`), wherever the
//! cursor stands: a device the scan has passed is corrected by the patch,
//! and one it has not reached yet is evaluated again with the same
//! labels. So the finished set is the full scan of the fleet as it is
//! when the put runs. Pure; `tests` checks it against the full scan.

use std::collections::BTreeSet;

use schemas::DeviceId;

use super::groups::Group;
use super::registry::Registry;
use super::selector::Labels;

/// The scan of one group's selector over the registry, by id.
#[derive(Debug)]
pub struct GroupScan {
    group: Group,
    /// The last id evaluated; `None` before the first.
    cursor: Option<DeviceId>,
    set: BTreeSet<DeviceId>,
    done: bool,
}

impl GroupScan {
    /// A scan of `group`'s rule, not begun.
    pub fn new(group: Group) -> Self {
        Self {
            group,
            cursor: None,
            set: BTreeSet::new(),
            done: false,
        }
    }

    /// Evaluates up to `budget` more devices. True once every device is.
    pub fn step(&mut self, devices: &Registry, budget: usize) -> bool {
        if self.done {
            return true;
        }
        let budget = budget.max(1);
        let mut n = 0;
        let mut last = None;
        for d in devices.after(self.cursor.as_ref()) {
            if n == budget {
                break;
            }
            n += 1;
            if self.group.contains(&d.id, &d.labels) {
                self.set.insert(d.id.clone());
            }
            last = Some(&d.id);
        }
        match last {
            Some(id) if n == budget => self.cursor = Some(id.clone()),
            _ => self.done = true,
        }
        self.done
    }

    /// A registered device's labels are now `labels` (it registered, or
    /// they changed).
    pub fn patch(&mut self, id: &DeviceId, labels: &(impl Labels + ?Sized)) {
        if self.group.contains(id, labels) {
            if !self.set.contains(id) {
                self.set.insert(id.clone());
            }
        } else {
            self.set.remove(id);
        }
    }

    /// True when this scans the rule `g` has (same name, same rule).
    pub fn is_for(&self, g: &Group) -> bool {
        self.group.name == g.name && self.group.rule == g.rule
    }

    /// True once every device is evaluated.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The members, the scan finished first if it is not.
    pub fn finish(mut self, devices: &Registry) -> BTreeSet<DeviceId> {
        self.step(devices, usize::MAX);
        self.set
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::tests::{hello as hello_with, random_labels};
    use super::super::{Fleet, Group};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use schemas::msg::Hello;
    use schemas::{DeviceId, GroupName};

    fn hello(rng: &mut StdRng) -> Hello {
        hello_with(random_labels(rng))
    }

    /// A group put prepared in slices, with devices registering and
    /// changing labels between the slices (behind and ahead of the
    /// cursor), puts the members the full scan finds at put time; and
    /// the memberships it publishes leave nothing for a full
    /// recomputation.
    #[test]
    fn a_scan_in_slices_with_changes_between_finds_what_a_full_scan_does() {
        for seed in 0..30u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut f = Fleet::default();
            let id = |i: usize| DeviceId::new(format!("d-{i:03}")).unwrap();
            for i in 0..rng.gen_range(0..80) {
                let h = hello(&mut rng);
                f.hello(&id(i * 2), &h, 1);
            }
            let name = GroupName::new("acme").unwrap();
            let g = Group::new(name.clone(), Some("customer=acme"), None, 2).unwrap();
            f.prepare_group(&g);
            let budget = rng.gen_range(1..6);
            while f.preparing() {
                f.step_prepared(budget);
                for _ in 0..rng.gen_range(0..3) {
                    let h = hello(&mut rng);
                    f.hello(&id(rng.gen_range(0..200)), &h, 3);
                }
            }
            f.put_group(g.clone());
            while f.pending_memberships() > 0 {
                f.group_membership_changes_upto(budget);
            }
            let want: Vec<DeviceId> = f
                .devices()
                .filter(|d| g.contains(&d.id, &d.labels))
                .map(|d| d.id.clone())
                .collect();
            let got: Vec<DeviceId> = f.ids_in(&name).cloned().collect();
            assert_eq!(got, want, "seed {seed}");
            assert!(f.membership_changes(None).is_empty(), "seed {seed}");
        }
    }

    /// A scan prepared for one rule is not taken by a put of another.
    #[test]
    fn a_put_of_another_rule_scans_afresh() {
        let mut f = Fleet::default();
        let mut rng = StdRng::seed_from_u64(7);
        for i in 0..20 {
            let h = hello(&mut rng);
            f.hello(&DeviceId::new(format!("d-{i}")).unwrap(), &h, 1);
        }
        let name = GroupName::new("g").unwrap();
        f.prepare_group(&Group::new(name.clone(), Some("customer=acme"), None, 1).unwrap());
        while f.preparing() {
            f.step_prepared(3);
        }
        let other = Group::new(name.clone(), Some("customer=globex"), None, 1).unwrap();
        f.put_group(other.clone());
        let want = f
            .devices()
            .filter(|d| other.contains(&d.id, &d.labels))
            .count();
        assert_eq!(f.count_in(&name), want);
        assert!(want > 0);
    }
}
