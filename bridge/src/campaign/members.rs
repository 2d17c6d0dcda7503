//! Who takes part: the devices a wave's cohorts admit, computed with the
//! same `bucket()` the devices use (PROTOCOL.md, "Which devices take
//! part"). A device in several target groups takes part when any of them
//! admits it; an emergency admits every device of its groups, or every
//! registered device when it names no group.

use std::collections::BTreeMap;

use schemas::bucket::admitted;
use schemas::{CampaignId, DeviceId, GroupName};

use crate::fleet::Fleet;
use crate::sharded::ShardedSet;

/// What decides membership: the campaign, its cohorts at one wave, and
/// whether it is an emergency.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    pub campaign: &'a CampaignId,
    pub cohorts: &'a BTreeMap<GroupName, u16>,
    pub emergency: bool,
}

impl Admission<'_> {
    /// True when this emergency reaches every registered device.
    pub fn everyone(&self) -> bool {
        self.emergency && self.cohorts.is_empty()
    }

    /// True when `device`, in `groups`, takes part.
    pub fn admits(&self, device: &DeviceId, groups: &[GroupName]) -> bool {
        if self.everyone() {
            return true;
        }
        groups.iter().any(|g| {
            self.cohorts
                .get(g)
                .is_some_and(|&c| c > 0 && admitted(self.campaign, device, c, self.emergency))
        })
    }

    /// True when the registered device `device` takes part now: its
    /// target groups looked up in the fleet's index, not every group's
    /// selector evaluated.
    pub fn admits_in(&self, fleet: &Fleet, device: &DeviceId) -> bool {
        if fleet.device(device).is_none() {
            return false;
        }
        self.everyone()
            || self.cohorts.iter().any(|(g, &c)| {
                c > 0
                    && fleet.is_in(g, device)
                    && admitted(self.campaign, device, c, self.emergency)
            })
    }

    /// Every registered device that takes part: the scan of
    /// [`super::prepared`] at once.
    pub fn members(&self, fleet: &Fleet) -> ShardedSet<DeviceId> {
        super::prepared::MembersScan::new(
            self.campaign.clone(),
            0,
            self.cohorts.clone(),
            self.emergency,
        )
        .finish(fleet)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fleet::Group;
    use crate::testutil::group as g;
    use schemas::msg::Hello;
    use schemas::{ComponentName, Epoch};

    pub(crate) fn hello(arch: &str, customer: &str) -> Hello {
        Hello {
            proto: 1,
            arch: arch.into(),
            versions: [(ComponentName::new("main").unwrap(), "1.0.0".into())].into(),
            labels: [("customer".to_string(), customer.to_string())].into(),
            boot_id: "b1".into(),
            epoch: Epoch::new("ep000001").unwrap(),
            outbox: 1,
            features: Vec::new(),
        }
    }

    /// `n` devices `dev-000..` of `customer`, half esp32 and half armv7,
    /// with a selector group named after the customer.
    pub(crate) fn fleet(customers: &[(&str, usize)]) -> Fleet {
        let mut f = Fleet::default();
        for (customer, n) in customers {
            f.put_group(
                Group::new(
                    GroupName::new(*customer).unwrap(),
                    Some(&format!("customer={customer}")),
                    None,
                    1,
                )
                .unwrap(),
            );
            for i in 0..*n {
                let arch = if i % 2 == 0 { "esp32" } else { "armv7" };
                let id = DeviceId::new(format!("{customer}-{i:03}")).unwrap();
                f.hello(&id, &hello(arch, customer), 1);
            }
        }
        f
    }

    #[test]
    fn cohorts_admit_by_bucket() {
        let f = fleet(&[("acme", 200), ("globex", 50)]);
        let c = CampaignId::new("camp-1").unwrap();
        let cohorts: BTreeMap<GroupName, u16> = [(g("acme"), 5000), (g("globex"), 0)].into();
        let a = Admission {
            campaign: &c,
            cohorts: &cohorts,
            emergency: false,
        };
        let m = a.members(&f);
        // Half of acme, roughly; none of globex.
        assert!((70..=130).contains(&m.len()), "{}", m.len());
        assert!(m.iter().all(|d| d.as_str().starts_with("acme")));
        for d in f.devices() {
            assert_eq!(a.admits_in(&f, &d.id), m.contains(&d.id), "{}", d.id);
            let want =
                d.id.as_str().starts_with("acme") && schemas::bucket::bucket(&c, &d.id) < 5000;
            assert_eq!(m.contains(&d.id), want);
        }
    }

    #[test]
    fn emergencies_take_whole_groups_or_everyone() {
        let f = fleet(&[("acme", 20), ("globex", 10)]);
        let c = CampaignId::new("fix-1").unwrap();
        let groups: BTreeMap<GroupName, u16> = [(g("globex"), 10000)].into();
        let a = Admission {
            campaign: &c,
            cohorts: &groups,
            emergency: true,
        };
        assert_eq!(a.members(&f).len(), 10);
        let none = BTreeMap::new();
        let all = Admission {
            campaign: &c,
            cohorts: &none,
            emergency: true,
        };
        assert!(all.everyone());
        assert_eq!(all.members(&f).len(), 30);
        assert!(!all.admits_in(&f, &DeviceId::new("ghost").unwrap()));
    }
}
