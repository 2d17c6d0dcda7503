//! One shared copy of each distinct list of groups (issue 19).
//!
//! Every device's Membership is a short list of group names, and a million
//! devices hold only as many distinct lists as there are combinations of
//! groups in use, a few thousand at most in practice. The fleet (what was
//! published to each device) and the broker's grants (what each device
//! may subscribe to) each kept a `Vec<GroupName>` per device: about 150
//! bytes a device, twice. Interned, a device holds a 16-byte pointer.

use std::collections::HashSet;
use std::sync::Arc;

use schemas::GroupName;

/// A shared, immutable list of groups.
pub type GroupList = Arc<[GroupName]>;

/// Lists fewer than this are never swept.
const MIN_SWEEP: usize = 1024;

/// The distinct lists in use.
#[derive(Debug)]
pub struct GroupSets {
    lists: HashSet<GroupList>,
    /// When the set reaches this size, lists nobody holds any more are
    /// dropped (then it is twice what is left): the set stays within twice
    /// the lists in use.
    sweep_at: usize,
}

impl Default for GroupSets {
    fn default() -> Self {
        Self {
            lists: HashSet::new(),
            sweep_at: MIN_SWEEP,
        }
    }
}

impl GroupSets {
    /// The shared copy of `groups`.
    pub fn intern(&mut self, groups: &[GroupName]) -> GroupList {
        if let Some(l) = self.lists.get(groups) {
            return l.clone();
        }
        if self.lists.len() >= self.sweep_at {
            self.lists.retain(|l| Arc::strong_count(l) > 1);
            self.sweep_at = (self.lists.len() * 2).max(MIN_SWEEP);
        }
        let l: GroupList = groups.into();
        self.lists.insert(l.clone());
        l
    }

    /// How many distinct lists are kept.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(names: &[&str]) -> Vec<GroupName> {
        names.iter().map(|n| GroupName::new(*n).unwrap()).collect()
    }

    #[test]
    fn equal_lists_share_one_copy_and_unused_ones_are_swept() {
        let mut s = GroupSets::default();
        let a = s.intern(&g(&["acme", "eu"]));
        let b = s.intern(&g(&["acme", "eu"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(s.len(), 1);
        // Lists no one holds go at the next sweep; held ones stay shared.
        for i in 0..MIN_SWEEP * 3 {
            drop(s.intern(&g(&[&format!("g{i}")])));
        }
        assert!(s.len() <= MIN_SWEEP * 2, "{}", s.len());
        assert!(Arc::ptr_eq(&a, &s.intern(&g(&["acme", "eu"]))));
    }
}
