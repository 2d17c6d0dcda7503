//! A wave's members, found ahead of time in slices (issue 19). A wave
//! start at 1,000,000 devices hashes every device of its groups into its
//! cohort bucket and builds the member set: most of a second on core. So
//! core computes the set a slice at a time between its other messages
//! before it is needed: the first wave's while a `campaign start` waits
//! for it, the next wave's as soon as a wave starts (the widening takes
//! it when its gate passes). [`take_or_compute`] takes a prepared set, or
//! computes one at once when none was prepared (a restart, a resume).
//!
//! Devices whose groups change, or that register, while a set is prepared
//! (or under way) are patched in as they come (`Campaigns::devices_changed`),
//! wherever the scan's cursor stands, so the set is what a full
//! computation would find when it is taken. Pure but for the fleet it
//! reads; `tests` checks it against each device's own admission
//! ([`Admission::admits_in`]). [`Admission::members`] is this scan at once.

use std::collections::{BTreeMap, HashMap};

use schemas::bucket::{admitted, MAX_COHORT};
use schemas::{CampaignId, DeviceId, GroupName};

use super::members::Admission;
use super::record::CampaignRecord;
use crate::fleet::Fleet;
use crate::sharded::ShardedSet;

/// The members of one campaign's wave, found by a cursor.
#[derive(Debug)]
pub struct MembersScan {
    campaign: CampaignId,
    wave: usize,
    cohorts: BTreeMap<GroupName, u16>,
    emergency: bool,
    /// The cohort groups in order; `next` is the one under way.
    groups: Vec<(GroupName, u16)>,
    next: usize,
    /// The last id looked at in the group under way (or in the registry,
    /// for an emergency to every device).
    cursor: Option<DeviceId>,
    set: ShardedSet<DeviceId>,
    done: bool,
}

impl MembersScan {
    /// The scan of wave `wave`'s members with these cumulative cohorts.
    pub fn new(
        campaign: CampaignId,
        wave: usize,
        cohorts: BTreeMap<GroupName, u16>,
        emergency: bool,
    ) -> Self {
        let groups = cohorts.iter().map(|(g, c)| (g.clone(), *c)).collect();
        Self {
            campaign,
            wave,
            cohorts,
            emergency,
            groups,
            next: 0,
            cursor: None,
            set: ShardedSet::default(),
            done: false,
        }
    }

    fn admission(&self) -> Admission<'_> {
        Admission {
            campaign: &self.campaign,
            cohorts: &self.cohorts,
            emergency: self.emergency,
        }
    }

    /// Looks at up to `budget` more devices. True once every one is.
    pub fn step(&mut self, fleet: &Fleet, budget: usize) -> bool {
        if self.done {
            return true;
        }
        let mut left = budget.max(1);
        if self.admission().everyone() {
            let mut last = None;
            for d in fleet.devices_after(self.cursor.as_ref()).take(left) {
                self.set.insert(d.id.clone());
                last = Some(&d.id);
                left -= 1;
            }
            match last {
                Some(id) if left == 0 => self.cursor = Some(id.clone()),
                _ => self.done = true,
            }
            return self.done;
        }
        while self.next < self.groups.len() {
            let (group, cohort) = &self.groups[self.next];
            let cohort = *cohort;
            if cohort == 0 {
                self.next += 1;
                continue;
            }
            // A full cohort admits every device: no bucket to hash.
            let all = cohort >= MAX_COHORT;
            let mut last = None;
            let mut n = 0;
            for id in fleet.ids_in_after(group, self.cursor.as_ref()).take(left) {
                n += 1;
                if (all || admitted(&self.campaign, id, cohort, self.emergency))
                    && !self.set.contains(id)
                {
                    self.set.insert(id.clone());
                }
                last = Some(id);
            }
            if n == left {
                // The budget is spent: the next step resumes after the last.
                self.cursor = last.cloned();
                return false;
            }
            left -= n;
            self.next += 1;
            self.cursor = None;
        }
        self.done = true;
        true
    }

    /// A device's groups changed, or it registered.
    pub fn patch(&mut self, fleet: &Fleet, device: &DeviceId) {
        if self.admission().admits_in(fleet, device) {
            if !self.set.contains(device) {
                self.set.insert(device.clone());
            }
        } else {
            self.set.remove(device);
        }
    }

    /// True once every device is looked at.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The members, the scan finished first if it is not.
    pub fn finish(mut self, fleet: &Fleet) -> ShardedSet<DeviceId> {
        self.step(fleet, usize::MAX);
        self.set
    }

    fn is_for(&self, wave: usize, cohorts: &BTreeMap<GroupName, u16>, emergency: bool) -> bool {
        self.wave == wave && &self.cohorts == cohorts && self.emergency == emergency
    }
}

/// The member sets being prepared, at most one per campaign.
#[derive(Debug, Default)]
pub struct Prepared {
    scans: HashMap<CampaignId, MembersScan>,
}

impl Prepared {
    /// Prepares the members of `r`'s wave `wave` (replacing what was
    /// prepared for that campaign), unless the same is already.
    pub fn prepare(&mut self, r: &CampaignRecord, wave: usize) {
        self.prepare_wave(r.id(), wave, r.gate.cohorts(wave), r.is_emergency());
    }

    /// [`Prepared::prepare`] by its parts (a campaign not created yet).
    pub fn prepare_wave(
        &mut self,
        campaign: &CampaignId,
        wave: usize,
        cohorts: &BTreeMap<GroupName, u16>,
        emergency: bool,
    ) {
        if self
            .scans
            .get(campaign)
            .is_some_and(|s| s.is_for(wave, cohorts, emergency))
        {
            return;
        }
        self.scans.insert(
            campaign.clone(),
            MembersScan::new(campaign.clone(), wave, cohorts.clone(), emergency),
        );
    }

    /// After a step of `r`: the next wave's members are prepared while
    /// the current one runs; a finished campaign's are dropped.
    pub fn plan(&mut self, r: &CampaignRecord) {
        match r.gate.current_wave().map(|w| w + 1) {
            Some(w) if !r.gate.is_finished() && w < r.gate.wave_count() => self.prepare(r, w),
            _ => {
                self.scans.remove(r.id());
            }
        }
    }

    /// Looks at up to `budget` devices of `focus`'s scan if it is
    /// unfinished, else of the first unfinished one. True when none is
    /// left unfinished.
    pub fn step(&mut self, fleet: &Fleet, budget: usize, focus: Option<&CampaignId>) -> bool {
        let focused = focus.filter(|id| self.busy_with(id)).cloned();
        let scan = match focused {
            Some(id) => self.scans.get_mut(&id),
            None => self.scans.values_mut().find(|s| !s.is_done()),
        };
        match scan {
            None => true,
            Some(s) => {
                s.step(fleet, budget);
                !self.scans.values().any(|s| !s.is_done())
            }
        }
    }

    /// True while the members of `campaign` are being found.
    pub fn busy_with(&self, campaign: &CampaignId) -> bool {
        self.scans.get(campaign).is_some_and(|s| !s.is_done())
    }

    /// True while any scan is unfinished.
    pub fn busy(&self) -> bool {
        self.scans.values().any(|s| !s.is_done())
    }

    /// Devices whose groups changed, or that registered.
    pub fn patch(&mut self, fleet: &Fleet, devices: &[DeviceId]) {
        for s in self.scans.values_mut() {
            for d in devices {
                s.patch(fleet, d);
            }
        }
    }

    /// Drops what was prepared for a campaign.
    pub fn forget(&mut self, campaign: &CampaignId) {
        self.scans.remove(campaign);
    }
}

/// The members of `r`'s current wave: the prepared set when it is for
/// that wave (finished first if need be), or computed now.
pub fn take_or_compute(
    prepared: &mut Prepared,
    r: &CampaignRecord,
    fleet: &Fleet,
) -> ShardedSet<DeviceId> {
    let Some(wave) = r.gate.current_wave() else {
        return ShardedSet::default();
    };
    let cohorts = r.gate.cohorts(wave);
    let emergency = r.is_emergency();
    if prepared
        .scans
        .get(r.id())
        .is_some_and(|s| s.is_for(wave, cohorts, emergency))
    {
        if let Some(s) = prepared.scans.remove(r.id()) {
            return s.finish(fleet);
        }
    }
    Admission {
        campaign: r.id(),
        cohorts,
        emergency,
    }
    .members(fleet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::members::tests::{fleet, hello};
    use crate::fleet::Group;

    /// A wave's members found in slices, with devices registering and
    /// moving groups between the slices (patched as core patches them),
    /// are what `Admission::members` finds at the end.
    #[test]
    fn members_in_slices_with_changes_between_are_the_full_computation() {
        let c = CampaignId::new("camp-1").unwrap();
        for (n, cohorts, emergency) in [
            (1, vec![("acme", 3000), ("globex", 10000)], false),
            (2, vec![("acme", 0), ("all", 5000)], false),
            (3, vec![("globex", 7000), ("all", 100)], true),
            (4, vec![], true),
        ] {
            let mut f = fleet(&[("acme", 60), ("globex", 40)]);
            f.put_group(
                Group::new(GroupName::new("all").unwrap(), Some("customer"), None, 1).unwrap(),
            );
            let cohorts = crate::testutil::cohorts(&cohorts);
            let mut scan = MembersScan::new(c.clone(), 0, cohorts.clone(), emergency);
            let mut i = 0;
            while !scan.step(&f, n) {
                // A new device, and one that moves to the other customer.
                i += 1;
                let new = DeviceId::new(format!("new-{i:03}")).unwrap();
                f.hello(&new, &hello("esp32", "acme"), 2);
                let moved = DeviceId::new(format!("acme-{:03}", i % 60)).unwrap();
                f.hello(&moved, &hello("esp32", "globex"), 2);
                for d in [&new, &moved] {
                    f.membership_changes(Some(d));
                    scan.patch(&f, d);
                }
            }
            // The oracle: each device asked on its own.
            let a = Admission {
                campaign: &c,
                cohorts: &cohorts,
                emergency,
            };
            let want: ShardedSet<DeviceId> = f
                .devices()
                .filter(|d| a.admits_in(&f, &d.id))
                .map(|d| d.id.clone())
                .collect();
            assert!(i > 0, "case {n}: done in one slice");
            assert_eq!(scan.finish(&f), want, "case {n}");
        }
    }
}
