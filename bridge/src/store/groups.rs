//! The `groups` tree: one JSON [`GroupRecord`] per group name.

use schemas::{DeviceId, GroupName};
use serde::{Deserialize, Serialize};

use super::{corrupt, StoreError};

/// A group as stored (JSON in the `groups` tree) and as listed to operators;
/// `fleet::Group` is its checked, in-memory form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupRecord {
    pub name: GroupName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<DeviceId>>,
    pub updated: u64,
}

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
