//! The fleet: who the devices are ([`DeviceRecord`]s from Hello and
//! Presence), the groups, and the membership last published to each device.
//!
//! [`Fleet`] is pure state (no I/O): the core actor feeds it events, writes
//! what it returns through the store and publishes the membership changes.
//! It also answers the queries the campaign engine needs: the devices of a
//! group, a device's arch and versions, the groups a device is in.
//!
//! - [`selector`]: the label selector language and its parser.
//! - [`groups`]: group definitions and the membership arithmetic.
//! - [`index`]: the registered devices of each group, kept incrementally.
//! - [`registry`]: the records by id, and the ids in order.
//! - [`group_sets`]: one shared copy of each distinct list of groups.
//! - [`scan`]: a group put's selector scan, run in slices by core.

pub mod group_sets;
pub mod groups;
pub mod index;
pub mod registry;
pub mod scan;
pub mod selector;

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use schemas::msg::Hello;
use schemas::{DeviceId, GroupName};

pub use group_sets::{GroupList, GroupSets};
pub use groups::{Group, GroupError, GroupRecord, GroupRule, Groups};
pub use selector::{Labels, Selector, SelectorError};

use crate::sharded::ShardedMap;
use crate::store::{DeviceRecord, StrMap};

/// How often, at most, `last_seen` alone is written to the store.
pub const LAST_SEEN_PERSIST_SECS: u64 = 60;

/// What a Hello changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HelloChange {
    /// The device was not known before.
    pub registered: bool,
    /// Its boot_id changed: it rebooted.
    pub rebooted: bool,
    /// Its labels changed: its groups may have.
    pub labels_changed: bool,
    /// Its installed versions changed.
    pub versions_changed: bool,
}

/// Registry, groups and published membership.
#[derive(Debug, Default)]
pub struct Fleet {
    devices: registry::Registry,
    groups: Groups,
    /// The membership each device was last sent (retained on its topic).
    published: ShardedMap<DeviceId, GroupList>,
    /// The distinct lists `published` holds.
    lists: GroupSets,
    /// Presence of devices that have not said Hello yet (a device sends
    /// its Presence first), taken by their Hello. Bounded.
    early_presence: HashMap<DeviceId, bool>,
    /// The registered devices of each group.
    index: index::GroupIndex,
    /// Devices whose membership a group put or delete may have changed,
    /// taken by [`Fleet::group_membership_changes`].
    pending: BTreeSet<DeviceId>,
    /// Devices sent a membership that never said Hello (listed, or once
    /// listed): a selector change may move them too.
    ghosts: BTreeSet<DeviceId>,
    /// The selector scan of a group about to be put (see [`scan`]).
    prepared: Option<scan::GroupScan>,
}

/// Most early Presences kept (only provisioned devices can send one once
/// the broker enforces PROTOCOL.md E1).
const MAX_EARLY_PRESENCE: usize = 100_000;

impl Fleet {
    /// The fleet as loaded from the store.
    pub fn new(
        devices: Vec<DeviceRecord>,
        groups: Vec<Group>,
        published: HashMap<DeviceId, Vec<GroupName>>,
    ) -> Self {
        let mut gs = Groups::new();
        for g in groups {
            gs.put(g);
        }
        let devices: registry::Registry = devices.into_iter().collect();
        let mut lists = GroupSets::default();
        let published = intern_all(&mut lists, published);
        Self {
            index: index::GroupIndex::build(&gs, &devices),
            devices,
            groups: gs,
            published,
            lists,
            early_presence: HashMap::new(),
            pending: BTreeSet::new(),
            ghosts: BTreeSet::new(),
            prepared: None,
        }
    }

    /// The same fleet, knowing what membership each device was last sent
    /// (read back from the retained tree at start).
    pub fn with_published(mut self, published: HashMap<DeviceId, Vec<GroupName>>) -> Self {
        self.ghosts = published
            .keys()
            .filter(|id| !self.devices.contains_key(id))
            .cloned()
            .collect();
        self.published = intern_all(&mut self.lists, published);
        self
    }

    /// Registers or updates a device from its Hello. Whether it is online
    /// comes from its Presence (and will), never from a Hello, which
    /// anyone who could publish it might have sent.
    pub fn hello(&mut self, id: &DeviceId, h: &Hello, now: u64) -> HelloChange {
        let versions: StrMap = h.versions.iter().collect();
        match self.devices.get_mut_seen(id) {
            None => {
                self.devices.insert(DeviceRecord {
                    id: id.clone(),
                    arch: h.arch.clone(),
                    versions,
                    labels: StrMap::from(&h.labels),
                    boot_id: h.boot_id.clone(),
                    online: self.early_presence.remove(id).unwrap_or(false),
                    first_seen: now,
                    last_seen: now,
                    last_hello: now,
                    reboots: 0,
                    features: h.features.clone(),
                });
                self.index.device(&self.groups, id, &h.labels, true);
                if let Some(s) = &mut self.prepared {
                    s.patch(id, &h.labels);
                }
                self.ghosts.remove(id);
                HelloChange {
                    registered: true,
                    labels_changed: true,
                    versions_changed: true,
                    rebooted: false,
                }
            }
            Some((d, persisted_seen)) => {
                *persisted_seen = now;
                let change = HelloChange {
                    registered: false,
                    rebooted: d.boot_id != h.boot_id,
                    labels_changed: !d.labels.same_as(&h.labels),
                    // What the device can take (E3 features) matters
                    // as much as what it runs: persisted the same way.
                    versions_changed: d.versions != versions || d.features != h.features,
                };
                if change.rebooted {
                    d.reboots += 1;
                }
                d.arch = h.arch.clone();
                if d.versions != versions {
                    d.versions = versions;
                }
                d.features = h.features.clone();
                if change.labels_changed {
                    d.labels = StrMap::from(&h.labels);
                }
                d.boot_id = h.boot_id.clone();
                d.last_seen = now;
                d.last_hello = now;
                if change.labels_changed {
                    self.index.device(&self.groups, id, &h.labels, false);
                    if let Some(s) = &mut self.prepared {
                        s.patch(id, &h.labels);
                    }
                }
                change
            }
        }
    }

    /// Applies a Presence. `None` for a device that never said Hello;
    /// otherwise whether `online` changed.
    pub fn presence(&mut self, id: &DeviceId, online: bool, now: u64) -> Option<bool> {
        let Some((d, persisted_seen)) = self.devices.get_mut_seen(id) else {
            if self.early_presence.len() < MAX_EARLY_PRESENCE
                || self.early_presence.contains_key(id)
            {
                self.early_presence.insert(id.clone(), online);
            }
            return None;
        };
        let changed = d.online != online;
        d.online = online;
        d.last_seen = d.last_seen.max(now);
        *persisted_seen = d.last_seen;
        Some(changed)
    }

    /// Notes traffic from a device. True when the record should be written
    /// (its stored `last_seen` is more than a minute old).
    pub fn seen(&mut self, id: &DeviceId, now: u64) -> bool {
        let Some((d, persisted_seen)) = self.devices.get_mut_seen(id) else {
            return false;
        };
        d.last_seen = d.last_seen.max(now);
        if now >= *persisted_seen + LAST_SEEN_PERSIST_SECS {
            *persisted_seen = now;
            true
        } else {
            false
        }
    }

    /// One device.
    pub fn device(&self, id: &DeviceId) -> Option<&DeviceRecord> {
        self.devices.get(id)
    }

    /// Every device, by id.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceRecord> {
        self.devices.values()
    }

    /// The registered devices after `after` (from the first without), by
    /// id: a page starts where the last ended, not with a scan.
    pub fn devices_after<'a>(
        &'a self,
        after: Option<&DeviceId>,
    ) -> impl Iterator<Item = &'a DeviceRecord> + 'a {
        self.devices.after(after)
    }

    /// The registered devices of a group after `after`, by id (none for an
    /// unknown group).
    pub fn devices_in_after<'a>(
        &'a self,
        group: &GroupName,
        after: Option<&'a DeviceId>,
    ) -> impl Iterator<Item = &'a DeviceRecord> + 'a {
        self.ids_in_after(group, after)
            .filter_map(|id| self.devices.get(id))
    }

    /// How many devices are registered.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when no device is registered.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// Creates or replaces a group; call [`Fleet::group_membership_changes`]
    /// next.
    pub fn put_group(&mut self, g: Group) -> Option<Group> {
        // The scan prepared for this very rule, if there is one.
        let scanned = match self.prepared.take() {
            Some(s) if s.is_for(&g) => Some(s.finish(&self.devices)),
            other => {
                self.prepared = other;
                None
            }
        };
        let moved = self.index.put_group(&g, &self.devices, scanned);
        self.pending.extend(moved);
        // Listed devices that never said Hello get their membership too.
        self.pending
            .extend(g.members().into_iter().flatten().cloned());
        let selector = g.members().is_none();
        let old = self.groups.put(g);
        if let Some(old) = &old {
            self.pending
                .extend(old.members().into_iter().flatten().cloned());
        }
        if selector || old.as_ref().is_some_and(|o| o.members().is_none()) {
            self.pend_unregistered();
        }
        old
    }

    /// A selector group changed: listed devices that never said Hello
    /// are matched with no labels (`groups_of`), so a selector such as
    /// `!line` takes them in or lets them go, and the index (registered
    /// devices only) does not see them move.
    fn pend_unregistered(&mut self) {
        let unregistered: Vec<DeviceId> = self
            .groups
            .listed_devices()
            .into_iter()
            .filter(|id| !self.devices.contains_key(id))
            .collect();
        self.pending.extend(unregistered);
        self.pending.extend(self.ghosts.iter().cloned());
    }

    /// Begins the selector scan of `g`, to be put once it is done
    /// ([`Fleet::step_prepared`]); a list needs none. Replaces a scan
    /// under way.
    pub fn prepare_group(&mut self, g: &Group) {
        self.prepared = g
            .members()
            .is_none()
            .then(|| scan::GroupScan::new(g.clone()));
    }

    /// Evaluates up to `budget` more devices of the prepared scan. True
    /// when none is left to evaluate (or there is no scan).
    pub fn step_prepared(&mut self, budget: usize) -> bool {
        match &mut self.prepared {
            Some(s) => s.step(&self.devices, budget),
            None => true,
        }
    }

    /// True while a prepared scan has devices left to evaluate.
    pub fn preparing(&self) -> bool {
        self.prepared.as_ref().is_some_and(|s| !s.is_done())
    }

    /// Deletes a group; call [`Fleet::group_membership_changes`] next.
    pub fn remove_group(&mut self, name: &GroupName) -> Option<Group> {
        let old = self.groups.remove(name)?;
        let left = self.index.remove_group(name);
        self.pending.extend(left);
        self.pending
            .extend(old.members().into_iter().flatten().cloned());
        if old.members().is_none() {
            self.pend_unregistered();
        }
        Some(old)
    }

    /// The groups a device is in now (registered or explicitly listed).
    pub fn groups_of(&self, id: &DeviceId) -> Vec<GroupName> {
        static NO_LABELS: StrMap = StrMap::new();
        let labels = self
            .devices
            .get(id)
            .map(|d| &d.labels)
            .unwrap_or(&NO_LABELS);
        self.groups.groups_of(id, labels)
    }

    /// The registered devices of a group, by id. Empty for an unknown group.
    pub fn devices_in(&self, group: &GroupName) -> Vec<&DeviceRecord> {
        let Some(ids) = self.index.members(group) else {
            return Vec::new();
        };
        ids.iter().filter_map(|id| self.devices.get(id)).collect()
    }

    /// The ids of a group's registered devices, in order, from its index
    /// (no record looked up). None for an unknown group.
    pub fn ids_in<'a>(&'a self, group: &GroupName) -> impl Iterator<Item = &'a DeviceId> + 'a {
        self.index.members(group).into_iter().flatten()
    }

    /// The ids of a group's registered devices after `after`, in order
    /// (none for an unknown group): a scan resumes where it stopped.
    pub fn ids_in_after<'a>(
        &'a self,
        group: &GroupName,
        after: Option<&'a DeviceId>,
    ) -> impl Iterator<Item = &'a DeviceId> + 'a {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.index
            .members(group)
            .into_iter()
            .flat_map(move |m| m.range::<DeviceId, _>((from, Bound::Unbounded)))
    }

    /// How many registered devices a group has (0 for an unknown group).
    pub fn count_in(&self, group: &GroupName) -> usize {
        self.index.members(group).map_or(0, |m| m.len())
    }

    /// True when the registered device is in the group.
    pub fn is_in(&self, group: &GroupName, id: &DeviceId) -> bool {
        self.index.members(group).is_some_and(|m| m.contains(id))
    }

    /// The membership last published to a device.
    pub fn published(&self, id: &DeviceId) -> Option<&[GroupName]> {
        self.published.get(id).map(|l| &l[..])
    }

    /// Recomputes membership (of one device, or of every device registered,
    /// listed or previously published) and returns the devices whose groups
    /// changed since last published, recording them as published. The
    /// caller publishes each one.
    pub fn membership_changes(
        &mut self,
        only: Option<&DeviceId>,
    ) -> Vec<(DeviceId, Vec<GroupName>)> {
        let scope: BTreeSet<DeviceId> = match only {
            Some(id) => [id.clone()].into(),
            None => self
                .devices
                .keys()
                .cloned()
                .chain(self.groups.listed_devices())
                .chain(self.published.keys().cloned())
                .collect(),
        };
        self.changes_among(scope)
    }

    /// The membership changes of the devices the group puts and deletes
    /// since the last call moved (a diff, not a scan of the registry),
    /// recorded as published, as [`Fleet::membership_changes`] does.
    ///
    /// `index::tests` checks it against a full recomputation after random
    /// changes (the listed devices that never said Hello were once missed:
    /// see [`Fleet::put_group`]).
    pub fn group_membership_changes(&mut self) -> Vec<(DeviceId, Vec<GroupName>)> {
        self.group_membership_changes_upto(usize::MAX)
    }

    /// [`Fleet::group_membership_changes`] of the first `n` devices (by id)
    /// that may have moved; the others stay for the next call. Core sends a
    /// large group put's memberships a slice at a time.
    pub fn group_membership_changes_upto(&mut self, n: usize) -> Vec<(DeviceId, Vec<GroupName>)> {
        let slice = if n >= self.pending.len() {
            std::mem::take(&mut self.pending)
        } else {
            let mut slice = BTreeSet::new();
            while slice.len() < n {
                match self.pending.pop_first() {
                    Some(id) => slice.insert(id),
                    None => break,
                };
            }
            slice
        };
        self.changes_among(slice)
    }

    /// Devices whose membership a group put or delete may have changed,
    /// not yet recomputed.
    pub fn pending_memberships(&self) -> usize {
        self.pending.len()
    }

    fn changes_among(&mut self, scope: BTreeSet<DeviceId>) -> Vec<(DeviceId, Vec<GroupName>)> {
        let mut changes = Vec::new();
        for id in scope {
            let now = self.groups_of(&id);
            let before = self.published.get(&id).map(|l| &l[..]).unwrap_or(&[]);
            if now.as_slice() != before {
                if !self.devices.contains_key(&id) {
                    self.ghosts.insert(id.clone());
                }
                let list = self.lists.intern(&now);
                self.published.insert(id.clone(), list);
                changes.push((id, now));
            }
        }
        changes
    }
}

/// `published`, each list shared.
fn intern_all(
    lists: &mut GroupSets,
    published: HashMap<DeviceId, Vec<GroupName>>,
) -> ShardedMap<DeviceId, GroupList> {
    published
        .into_iter()
        .map(|(id, groups)| (id, lists.intern(&groups)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{device as d, group as g};
    use schemas::{ComponentName, Epoch};

    fn hello(boot: &str, labels: &[(&str, &str)]) -> Hello {
        Hello {
            proto: 1,
            arch: "esp32".into(),
            versions: [(ComponentName::new("main").unwrap(), "1.0.0".into())].into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            boot_id: boot.into(),
            epoch: Epoch::new("ep000001").unwrap(),
            outbox: 1,
            features: Vec::new(),
        }
    }

    #[test]
    fn hello_registers_then_detects_reboots_and_label_changes() {
        let mut f = Fleet::default();
        let c = f.hello(&d("a"), &hello("b1", &[("customer", "acme")]), 10);
        assert!(c.registered && c.labels_changed && !c.rebooted);
        let c = f.hello(&d("a"), &hello("b1", &[("customer", "acme")]), 20);
        assert_eq!(c, HelloChange::default());
        let c = f.hello(&d("a"), &hello("b2", &[("customer", "globex")]), 30);
        assert!(c.rebooted && c.labels_changed && !c.registered);
        let r = f.device(&d("a")).unwrap();
        assert_eq!((r.reboots, r.first_seen, r.last_hello), (1, 10, 30));
    }

    #[test]
    fn online_comes_from_presence_not_from_hello() {
        let mut f = Fleet::default();
        // A Presence before the Hello is kept for it.
        assert_eq!(f.presence(&d("a"), true, 1), None);
        f.hello(&d("a"), &hello("b1", &[]), 1);
        assert!(f.device(&d("a")).unwrap().online);
        assert_eq!(f.presence(&d("a"), false, 2), Some(true));
        assert_eq!(f.presence(&d("a"), false, 3), Some(false));
        // A Hello alone does not make a device online.
        f.hello(&d("a"), &hello("b1", &[]), 4);
        assert!(!f.device(&d("a")).unwrap().online);
        f.hello(&d("b"), &hello("b1", &[]), 4);
        assert!(!f.device(&d("b")).unwrap().online);
    }

    #[test]
    fn last_seen_is_persisted_at_most_once_a_minute() {
        let mut f = Fleet::default();
        f.hello(&d("a"), &hello("b1", &[]), 100);
        assert!(!f.seen(&d("a"), 130));
        assert_eq!(f.device(&d("a")).unwrap().last_seen, 130);
        assert!(f.seen(&d("a"), 161));
        assert!(!f.seen(&d("a"), 170));
        assert!(!f.seen(&d("ghost"), 170));
    }

    /// A listed device that never said Hello has no labels: a selector
    /// such as `!line` takes it in, and the diff of a group put finds it
    /// (listed, or once sent a membership).
    #[test]
    fn a_selector_change_reaches_devices_that_never_said_hello() {
        let mut f = Fleet::default();
        f.put_group(Group::new(g("canary"), None, Some(&[d("ghost")]), 1).unwrap());
        assert_eq!(
            f.group_membership_changes(),
            vec![(d("ghost"), vec![g("canary")])]
        );
        f.put_group(Group::new(g("noline"), Some("!line"), None, 1).unwrap());
        assert_eq!(
            f.group_membership_changes(),
            vec![(d("ghost"), vec![g("canary"), g("noline")])]
        );
        f.remove_group(&g("canary"));
        assert_eq!(
            f.group_membership_changes(),
            vec![(d("ghost"), vec![g("noline")])]
        );
        f.remove_group(&g("noline"));
        assert_eq!(f.group_membership_changes(), vec![(d("ghost"), vec![])]);
        f.put_group(Group::new(g("noline"), Some("!line"), None, 2).unwrap());
        assert_eq!(
            f.group_membership_changes(),
            vec![(d("ghost"), vec![g("noline")])]
        );
        assert!(f.membership_changes(None).is_empty());
    }

    #[test]
    fn membership_is_published_only_when_it_changes() {
        let mut f = Fleet::default();
        f.hello(&d("a"), &hello("b1", &[("customer", "acme")]), 1);
        f.hello(&d("b"), &hello("b1", &[("customer", "globex")]), 1);
        // No groups: nothing to publish.
        assert!(f.membership_changes(None).is_empty());
        f.put_group(Group::new(g("acme"), Some("customer=acme"), None, 1).unwrap());
        assert_eq!(f.membership_changes(None), vec![(d("a"), vec![g("acme")])]);
        assert!(f.membership_changes(None).is_empty());
        // A listed device that never said Hello gets its membership ready.
        f.put_group(Group::new(g("canary"), None, Some(&[d("b"), d("c")]), 1).unwrap());
        assert_eq!(
            f.membership_changes(None),
            vec![(d("b"), vec![g("canary")]), (d("c"), vec![g("canary")])]
        );
        // A label change moves a device.
        f.hello(&d("b"), &hello("b1", &[("customer", "acme")]), 2);
        assert_eq!(
            f.membership_changes(Some(&d("b"))),
            vec![(d("b"), vec![g("acme"), g("canary")])]
        );
        // Deleting a group empties memberships, published once.
        f.remove_group(&g("canary"));
        let ch = f.membership_changes(None);
        assert_eq!(ch, vec![(d("b"), vec![g("acme")]), (d("c"), vec![])]);
        assert!(f.membership_changes(None).is_empty());
        assert_eq!(f.devices_in(&g("acme")).len(), 2);
        assert!(f.devices_in(&g("nope")).is_empty());
        assert_eq!(f.groups_of(&d("a")), vec![g("acme")]);
    }
}
