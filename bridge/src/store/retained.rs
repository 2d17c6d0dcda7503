//! The `retained` tree: every retained message the bridge owns (Membership,
//! StatusAcks, announcements), topic string → payload. Written before the
//! message is published and all republished at start, so a broker that
//! lost its retained messages heals. An empty payload is kept too: it
//! withdraws a retained message, and republishing it withdraws it again.

use super::StoreError;

const TREE: &str = "retained";

/// The `retained` tree.
#[derive(Clone)]
pub struct RetainedStore {
    tree: sled::Tree,
}

impl RetainedStore {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree(TREE)?,
        })
    }

    /// Records the payload retained on `topic`.
    pub fn put(&self, topic: &str, payload: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(topic, payload)?;
        Ok(())
    }

    /// The payload retained on `topic`, if the bridge ever published one.
    pub fn get(&self, topic: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(topic)?.map(|v| v.to_vec()))
    }

    /// How many topics.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when the bridge owns no retained message yet.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Every (topic, payload). A key that is not UTF-8 is skipped (it was
    /// not written by us).
    pub fn all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::with_capacity(self.tree.len());
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            if let Ok(t) = std::str::from_utf8(&k) {
                out.push((t.to_string(), v.to_vec()));
            }
        }
        Ok(out)
    }
}
