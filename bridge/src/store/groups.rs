//! The `groups` tree: one JSON [`GroupRecord`] per group name.

use schemas::GroupName;

use super::{corrupt, StoreError};
use crate::fleet::groups::GroupRecord;

const TREE: &str = "groups";

/// The `groups` tree.
#[derive(Clone)]
pub struct GroupStore {
    tree: sled::Tree,
}

impl GroupStore {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree(TREE)?,
        })
    }

    /// Creates or replaces a group.
    pub fn put(&self, r: &GroupRecord) -> Result<(), StoreError> {
        // Invariant: a GroupRecord holds only names, strings and numbers.
        let json = serde_json::to_vec(r).expect("a group record always serializes");
        self.tree.insert(r.name.as_str(), json)?;
        Ok(())
    }

    /// Deletes a group; true when it existed.
    pub fn delete(&self, name: &GroupName) -> Result<bool, StoreError> {
        Ok(self.tree.remove(name.as_str())?.is_some())
    }

    /// Every group.
    pub fn all(&self) -> Result<Vec<GroupRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            out.push(serde_json::from_slice(&v).map_err(|e| corrupt(TREE, &k, e))?);
        }
        Ok(out)
    }
}
