//! Groups: a name plus a label selector or an explicit member list, and the
//! pure membership arithmetic (which groups a device is in).

use std::collections::{BTreeMap, BTreeSet};

use schemas::{DeviceId, GroupName};

use super::selector::{Labels, Selector, SelectorError};
pub use crate::store::GroupRecord;

/// Most explicit members in one group.
pub const MAX_MEMBERS: usize = 100_000;

/// How a group picks its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRule {
    /// Every device whose labels satisfy the selector.
    Selector(Selector),
    /// Exactly these devices.
    Members(BTreeSet<DeviceId>),
}

/// A group as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: GroupName,
    pub rule: GroupRule,
    /// Unix seconds of the last put.
    pub updated: u64,
}

/// Why a group definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("group {0}: give either a selector or a member list, not both")]
    Both(GroupName),
    #[error("group {0}: give a selector (e.g. customer=acme) or a member list")]
    Neither(GroupName),
    #[error("group {name}: {source}")]
    Selector {
        name: GroupName,
        #[source]
        source: SelectorError,
    },
    #[error("group {0}: more than {MAX_MEMBERS} members; use a label selector instead")]
    TooMany(GroupName),
}

impl Group {
    /// Builds a group from a `group put` command's fields.
    pub fn new(
        name: GroupName,
        selector: Option<&str>,
        members: Option<&[DeviceId]>,
        updated: u64,
    ) -> Result<Self, GroupError> {
        let rule = match (selector, members) {
            (Some(_), Some(_)) => return Err(GroupError::Both(name)),
            (None, None) => return Err(GroupError::Neither(name)),
            (Some(s), None) => {
                GroupRule::Selector(Selector::parse(s).map_err(|source| GroupError::Selector {
                    name: name.clone(),
                    source,
                })?)
            }
            (None, Some(m)) => {
                if m.len() > MAX_MEMBERS {
                    return Err(GroupError::TooMany(name));
                }
                GroupRule::Members(m.iter().cloned().collect())
            }
        };
        Ok(Self {
            name,
            rule,
            updated,
        })
    }

    /// True when the device (with these labels) is in the group.
    pub fn contains(&self, id: &DeviceId, labels: &(impl Labels + ?Sized)) -> bool {
        match &self.rule {
            GroupRule::Selector(s) => s.matches(labels),
            GroupRule::Members(m) => m.contains(id),
        }
    }

    /// The explicit members, if the group is a list.
    pub fn members(&self) -> Option<&BTreeSet<DeviceId>> {
        match &self.rule {
            GroupRule::Members(m) => Some(m),
            GroupRule::Selector(_) => None,
        }
    }

    /// The stored form.
    pub fn to_record(&self) -> GroupRecord {
        let (selector, members) = match &self.rule {
            GroupRule::Selector(s) => (Some(s.to_string()), None),
            GroupRule::Members(m) => (None, Some(m.iter().cloned().collect())),
        };
        GroupRecord {
            name: self.name.clone(),
            selector,
            members,
            updated: self.updated,
        }
    }

    /// Back from the stored form.
    pub fn from_record(r: GroupRecord) -> Result<Self, GroupError> {
        Self::new(
            r.name,
            r.selector.as_deref(),
            r.members.as_deref(),
            r.updated,
        )
    }
}

/// Every group, by name.
#[derive(Debug, Default, Clone)]
pub struct Groups {
    groups: BTreeMap<GroupName, Group>,
}

impl Groups {
    /// No groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates or replaces a group. Returns the one it replaced.
    pub fn put(&mut self, g: Group) -> Option<Group> {
        self.groups.insert(g.name.clone(), g)
    }

    /// Deletes a group. Returns it if it existed.
    pub fn remove(&mut self, name: &GroupName) -> Option<Group> {
        self.groups.remove(name)
    }

    /// One group.
    pub fn get(&self, name: &GroupName) -> Option<&Group> {
        self.groups.get(name)
    }

    /// Every group, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// How many groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The groups a device is in, sorted.
    pub fn groups_of(&self, id: &DeviceId, labels: &(impl Labels + ?Sized)) -> Vec<GroupName> {
        self.groups
            .values()
            .filter(|g| g.contains(id, labels))
            .map(|g| g.name.clone())
            .collect()
    }

    /// Every device named in an explicit member list.
    pub fn listed_devices(&self) -> BTreeSet<DeviceId> {
        self.groups
            .values()
            .filter_map(|g| g.members())
            .flat_map(|m| m.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{device as d, group as g, labels};

    #[test]
    fn selector_and_list_groups() {
        let mut gs = Groups::new();
        gs.put(Group::new(g("acme"), Some("customer=acme"), None, 1).unwrap());
        gs.put(Group::new(g("canary"), None, Some(&[d("dev-1"), d("dev-9")]), 1).unwrap());
        let acme = labels(&[("customer", "acme")]);
        assert_eq!(
            gs.groups_of(&d("dev-1"), &acme),
            vec![g("acme"), g("canary")]
        );
        assert_eq!(gs.groups_of(&d("dev-2"), &acme), vec![g("acme")]);
        assert!(gs.groups_of(&d("dev-2"), &labels(&[])).is_empty());
        assert_eq!(gs.listed_devices().len(), 2);
        gs.remove(&g("canary"));
        assert_eq!(gs.groups_of(&d("dev-1"), &acme), vec![g("acme")]);
    }

    #[test]
    fn a_definition_needs_exactly_one_rule() {
        assert!(matches!(
            Group::new(g("x"), None, None, 0),
            Err(GroupError::Neither(_))
        ));
        assert!(matches!(
            Group::new(g("x"), Some("a=b"), Some(&[]), 0),
            Err(GroupError::Both(_))
        ));
        let e = Group::new(g("x"), Some("a="), None, 0).unwrap_err();
        assert!(e.to_string().contains("group x: selector"), "{e}");
    }

    #[test]
    fn records_round_trip() {
        for grp in [
            Group::new(g("a"), Some("line in (3,4)"), None, 5).unwrap(),
            Group::new(g("b"), None, Some(&[d("x"), d("y")]), 6).unwrap(),
        ] {
            let json = serde_json::to_string(&grp.to_record()).unwrap();
            let back: GroupRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(Group::from_record(back).unwrap(), grp);
        }
    }
}
